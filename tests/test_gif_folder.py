"""GIF folder (video-diffusion-pytorch's format): clips of real GIF files written with Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sg2video.data.clips import collate_clips
from sg2video.data.gif_folder import GifFolderDataset
from sg2video.errors import ConfigError
from sg2video.video_io import write_gif


def gray_frames(count: int, width: int, height: int, first: int = 0) -> np.ndarray:
    """Frame k is solid gray 20 + 10 * (first + k): a GIF keeps these exactly (few colours)."""
    values = 20 + 10 * (first + np.arange(count))
    return np.broadcast_to(values[:, None, None, None], (count, height, width, 3)).astype(np.uint8).copy()


@pytest.fixture()
def gif_root(tmp_path) -> Path:
    write_gif(tmp_path / "a.gif", gray_frames(10, 40, 30))  # landscape, 10 frames -> clips at 0 and 4
    write_gif(tmp_path / "b.gif", gray_frames(5, 30, 40, first=10))  # portrait, 5 frames -> clip at 0
    write_gif(tmp_path / "c.gif", gray_frames(3, 32, 32))  # 3 frames: too short for 4
    (tmp_path / "sub").mkdir()
    write_gif(tmp_path / "sub" / "d.gif", gray_frames(8, 32, 32))  # found recursively: clips at 0 and 4
    (tmp_path / "broken.gif").write_bytes(b"GIF89a this is not a gif")
    (tmp_path / "notes.txt").write_text("not a gif")
    return tmp_path


def test_clips_frames_and_contract(gif_root):
    ds = GifFolderDataset(gif_root, "train", frames=4, size=16, resize="pad")
    assert [(p.name, s) for p, s in ds.clips] == [("a.gif", 0), ("a.gif", 4), ("b.gif", 0), ("d.gif", 0), ("d.gif", 4)]
    assert [p.name for p in ds.too_short] == ["c.gif"] and [p.name for p in ds.unreadable] == ["broken.gif"]
    for index, first_value in [(0, 20), (1, 60), (2, 120), (4, 60)]:
        item = ds[index]
        assert item["video"].shape == (4, 3, 16, 16) and item["video"].dtype == torch.uint8
        centre = item["video"][:, :, 8, 8].float().mean(1)  # the frame's gray value, in frame order
        assert torch.allclose(centre, torch.tensor([first_value + 10.0 * t for t in range(4)]), atol=1)
        assert [g.objs.tolist() for g in item["graphs"]] == [[0]] * 4
        assert all(g.num_triples == 0 and g.boxes.tolist() == [[0, 0, 1, 1]] for g in item["graphs"])
    # padding: portrait b.gif (30 x 40 -> 12 x 16) gets black columns left and right
    b = ds[2]["video"][0]
    assert b[:, :, :2].max() == 0 and b[:, 8, 2:14].min() >= 119
    batch = collate_clips([ds[0], ds[2]])
    assert batch.video.shape == (2, 3, 4, 16, 16) and batch.graphs.num_graphs == 8
    overlapping = GifFolderDataset(gif_root, "train", frames=4, size=16, stride=2)
    assert [s for p, s in overlapping.clips if p.name == "a.gif"] == [0, 2, 4, 6]


def test_unreadable_at_load_is_skipped_and_splits(gif_root, tmp_path_factory):
    ds = GifFolderDataset(gif_root, "train", frames=4, size=16)
    (gif_root / "b.gif").write_bytes(b"GIF89a")  # truncated after listing
    assert ds[2]["source"]["file"] == "sub/d.gif" and ds.skipped == 1
    root = tmp_path_factory.mktemp("split_gifs")
    for split, n in (("train", 8), ("val", 4)):
        (root / split).mkdir()
        write_gif(root / split / f"{split}.gif", gray_frames(n, 16, 16))
    assert len(GifFolderDataset(root, "train", frames=4, size=16)) == 2
    assert [p.name for p, _ in GifFolderDataset(root, "val", frames=4, size=16).clips] == ["val.gif"]
    with pytest.raises(ConfigError, match="does not exist"):
        GifFolderDataset(root / "missing", "train")

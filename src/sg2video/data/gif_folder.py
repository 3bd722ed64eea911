"""A folder of .gif files (video-diffusion-pytorch's training format): clips without scene graphs.

Files: every `*.gif` under `root/<split>/` when that folder exists, else under `root` (searched
recursively, sorted by path; the format has no splits, so then every split reads the same files).
Clips: windows of `frames` consecutive GIF frames every `stride` frames (default `frames`: windows do
not overlap); a GIF shorter than `frames` gives none (counted in `too_short`); a file that cannot be
opened at all is listed in `unreadable`; one that fails later is skipped and counted in `skipped`.
Frames are fitted to `size x size` by `resize` (crop | pad | stretch).

Graphs: one dummy `__image__` object per frame (box = the whole frame) and no triples, so graph code
never meets an empty graph; the vocabulary is `["__image__"]` / `["__in_image__"]`. Train these clips
unconditionally (`model.cond=none`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from sg2video.data.fit import FitGeometry, check_resize_mode
from sg2video.data.sources import IMAGE_NODE, IN_IMAGE, SkippingDataset, Unreadable, require_root
from sg2video.errors import ConfigError
from sg2video.graphs import SceneGraph, Vocab

SPLITS = ("train", "val", "test")


def gif_length(path: Path) -> int | None:
    """Number of frames, or None when the file cannot be opened as a GIF."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format != "GIF":
                return None
            return int(getattr(image, "n_frames", 1))
    except (OSError, ValueError, SyntaxError):
        return None


class GifFolderDataset(SkippingDataset):
    """Clips of `frames` GIF frames with dummy graphs (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", frames: int = 8, size: int = 64,
                 resize: str = "crop", stride: int | None = None) -> None:
        super().__init__()
        self.root = require_root(root, ".gif files")
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is not a split (accepted: {', '.join(SPLITS)})")
        stride = frames if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"data.stride={stride!r} must be an integer >= 1 (or null: data.frames)")
        self.split, self.frames, self.size, self.resize = split, int(frames), int(size), check_resize_mode(resize)
        folder = self.root / split if (self.root / split).is_dir() else self.root
        self.folder = folder
        self.vocab = Vocab([IMAGE_NODE], [IN_IMAGE])
        self.clips: list[tuple[Path, int]] = []
        self.too_short: list[Path] = []
        self.unreadable: list[Path] = []
        for path in sorted(folder.rglob("*.gif")):
            length = gif_length(path)
            if length is None:
                self.unreadable.append(path)
            elif length < self.frames:
                self.too_short.append(path)
            else:
                self.clips.extend((path, start) for start in range(0, length - self.frames + 1, stride))

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> dict:
        from sg2video.video_io import read_video

        path, start = self.clips[index]
        try:
            pixels = read_video(path, range(start, start + self.frames))
        except (OSError, ValueError, SyntaxError, IndexError) as err:
            raise Unreadable(f"{path}: {err.__class__.__name__}: {err}") from None
        geometry = FitGeometry.make(pixels.shape[2], pixels.shape[1], self.size, self.resize)
        graph = SceneGraph(torch.tensor([self.vocab.object_id(IMAGE_NODE)]), torch.zeros(0, 3, dtype=torch.long),
                           torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        return {
            "video": geometry.frames(pixels),
            "graphs": [graph] * self.frames,
            "source": {"dataset": "gif_folder", "split": self.split, "file": str(path.relative_to(self.root)),
                       "frames": list(range(start, start + self.frames))},
        }

"""Video files: mp4 through PyAV and decord, gif with exact colours, npy, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence

from sg2video.data.shapes import PALETTE, ShapesDataset
from sg2video.video_io import read_video, write_atomic, write_gif, write_mp4, write_npy


def _blocks(num_frames: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Frames of four flat quadrants whose palette colours rotate each frame; and the colours (T, 4, 3)."""
    half = size // 2
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    colours = np.zeros((num_frames, 4, 3), dtype=np.int64)
    for t in range(num_frames):
        for q, (y, x) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
            colour = PALETTE[(t + 2 * q) % len(PALETTE)]
            frames[t, y : y + half, x : x + half] = colour
            colours[t, q] = colour
    return frames, colours


def _quadrant_means(frames: np.ndarray) -> np.ndarray:
    """Mean colour of each quadrant's inner half (away from edges blurred by chroma subsampling): (T, 4, 3)."""
    size = frames.shape[1]
    half, quarter = size // 2, size // 8
    means = []
    for y, x in [(0, 0), (0, half), (half, 0), (half, half)]:
        inner = frames[:, y + quarter : y + half - quarter, x + quarter : x + half - quarter]
        means.append(inner.reshape(len(frames), -1, 3).mean(axis=1))
    return np.stack(means, axis=1)


def _moving_shapes_clip() -> np.ndarray:
    """A shapes clip (T, H, W, 3) whose consecutive frames all differ."""
    dataset = ShapesDataset("val", length=50, size=32, frames=8)
    for index in range(50):
        frames = dataset[index]["video"].permute(0, 2, 3, 1).numpy()
        if all((frames[t] != frames[t - 1]).any() for t in range(1, len(frames))):
            return frames
    raise AssertionError("no moving clip among 50")


def test_mp4_round_trip_through_decord(tmp_path):
    frames, colours = _blocks(6)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=8)
    assert path == tmp_path / "v.mp4" and path.stat().st_size > 0
    back = read_video(path)
    assert back.shape == (6, 64, 64, 3) and back.dtype == np.uint8
    # lossy h264 / yuv420p: flat blocks come back within a few levels per channel
    err = np.abs(_quadrant_means(back) - colours)
    assert err.max() < 10, err.max()
    # a block really changes colour from frame to frame (not one frame repeated)
    assert np.abs(_quadrant_means(back)[1] - _quadrant_means(back)[0]).max() > 100
    some = read_video(path, indices=[5, 0, 3])
    assert some.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(some, back[[5, 0, 3]])


def test_mp4_pads_odd_sizes_and_upscales(tmp_path):
    frames = np.zeros((3, 33, 31, 3), dtype=np.uint8)
    frames[:, :, :16] = (255, 0, 0)
    frames[:, :, 16:] = (0, 0, 255)
    back = read_video(write_mp4(tmp_path / "odd.mp4", frames))
    assert back.shape == (3, 34, 32, 3)  # one row and one column of padding
    assert np.abs(back[:, 8:24, 2:12].astype(int) - (255, 0, 0)).max() < 20
    assert np.abs(back[:, 8:24, 20:].astype(int) - (0, 0, 255)).max() < 20  # incl. the padded column
    assert np.abs(back[:, 33, 20:28].astype(int) - (0, 0, 255)).max() < 20  # the padded row
    big = read_video(write_mp4(tmp_path / "big.mp4", frames[:, :32, :30], scale=2))
    assert big.shape == (3, 64, 60, 3)
    assert np.abs(big[:, 10:50, 4:26].astype(int) - (255, 0, 0)).max() < 20


@pytest.mark.parametrize("width", [16, 48])
def test_mp4_of_widths_decord_misreads_still_comes_back(tmp_path, width):
    frames, colours = _blocks(3, size=width)
    back = read_video(write_mp4(tmp_path / "narrow.mp4", frames))
    assert back.shape == frames.shape
    assert np.abs(_quadrant_means(back) - colours).max() < 12
    np.testing.assert_array_equal(read_video(tmp_path / "narrow.mp4", [2, 0]), back[[2, 0]])


def test_gif_keeps_every_frame_and_exact_palette_colours(tmp_path):
    frames = _moving_shapes_clip()
    path = write_gif(tmp_path / "clip.gif", frames, fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == len(frames)
        assert gif.info["loop"] == 0  # loops forever
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert durations == [250] * len(frames)
    back = read_video(path)
    np.testing.assert_array_equal(back, frames)  # lossless: every pixel has its exact RGB
    colours = {tuple(c) for c in back.reshape(-1, 3).tolist()}
    allowed = {tuple(c) for c in PALETTE.tolist()} | {(0, 0, 0)}
    assert colours <= allowed and len(colours) >= 3


def test_gif_upscales_with_nearest_neighbour(tmp_path):
    frames = _moving_shapes_clip()[:3]
    back = read_video(write_gif(tmp_path / "big.gif", frames, scale=3))
    assert back.shape == (3, 96, 96, 3)
    for dy in range(3):
        for dx in range(3):
            np.testing.assert_array_equal(back[:, dy::3, dx::3], frames)


def test_gif_merges_identical_frames_but_keeps_the_playing_time(tmp_path):
    frames, _ = _blocks(2, size=16)
    clip = frames[[0, 0, 0, 1]]
    path = write_gif(tmp_path / "still.gif", clip, fps=4)
    with Image.open(path) as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert durations == [750, 250]  # 4 frames at 4 fps = 1 s
    np.testing.assert_array_equal(read_video(path), frames)


def test_gif_of_many_colours_uses_a_palette_fitted_to_the_clip(tmp_path):
    # flat palette blocks plus noise (what a half-trained model draws): far more than 256 colours
    frames, colours = _blocks(4, size=32)
    noise = np.random.default_rng(0).integers(-6, 7, frames.shape)
    noisy = np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)
    assert len(np.unique(noisy.reshape(-1, 3), axis=0)) > 256
    back = read_video(write_gif(tmp_path / "many.gif", noisy))
    assert back.shape == noisy.shape
    # every pixel stays within the noise of its block's colour (Pillow's default fixed web palette with
    # dithering is off by up to ~50 per pixel here)
    assert np.abs(back.astype(int) - frames).max() <= 8
    assert np.abs(back.astype(int) - noisy).mean() < 3
    assert np.abs(_quadrant_means(back) - colours).max() < 6


def test_npy_round_trip_is_exact(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    path = write_npy(tmp_path / "sub" / "f.npy", frames)
    np.testing.assert_array_equal(read_video(path), frames)
    np.testing.assert_array_equal(read_video(path, [4, 1]), frames[[4, 1]])
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.npy"]  # no temp file left


def test_write_atomic_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.npy"
    old = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    write_npy(path, old)

    def broken(tmp):
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, broken)
    np.testing.assert_array_equal(np.load(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]

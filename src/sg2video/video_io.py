"""Videos on disk: gif, mp4 and npy out, frames back in.

Frames at the edges are uint8 (T, H, W, 3) (DESIGN.md). Every writer goes through `write_atomic`: the
file is written under a temporary name beside its destination and renamed into place, so a reader
never sees half a file and an interrupted run leaves no truncated output behind.

Which format for what:
- `.npy`: the exact frames (what checkers and tests read).
- `.gif`: for looking at clips; lossless for frames of at most 256 colours (the shapes world), so every
  pixel keeps its exact RGB. Pillow merges identical consecutive frames into one longer frame, so the
  playback time is right but the frame count can be lower than T.
- `.mp4`: h264 / yuv420p for sharing; lossy (chroma is subsampled 2x2), so colours are approximate.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from sg2video.atomic import write_atomic

__all__ = ["write_atomic", "write_gif", "write_mp4", "write_npy", "read_video", "upscale"]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    assert frames.ndim == 4 and frames.shape[-1] == 3, f"frames must be (T, H, W, 3), got {frames.shape}"
    assert frames.dtype == np.uint8, f"frames must be uint8, got {frames.dtype}"
    assert frames.shape[0] >= 1, "no frames"
    return frames


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (T, H, W, 3) by an integer factor (tiny frames made viewable)."""
    assert scale >= 1, "scale must be a positive integer"
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def _to_palette_frames(frames: np.ndarray):
    """PIL "P" images sharing one palette. Exact when the clip has at most 256 colours."""
    from PIL import Image

    T, H, W, _ = frames.shape
    colours, index = np.unique(frames.reshape(-1, 3), axis=0, return_inverse=True)
    if len(colours) <= 256:
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: len(colours)] = colours
        index = index.reshape(T, H, W).astype(np.uint8)
        images = []
        for t in range(T):
            image = Image.fromarray(index[t])  # "L"; putpalette makes it "P"
            image.putpalette(palette.reshape(-1).tolist())
            images.append(image)
        return images
    # many colours (generated videos): one adaptive palette for the whole clip, no dithering
    montage = Image.fromarray(frames.reshape(T * H, W, 3))
    shared = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    return [Image.fromarray(f).quantize(palette=shared, dither=Image.Dither.NONE) for f in frames]


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 4, scale: int = 1) -> Path:
    """Looping GIF of uint8 (T, H, W, 3) frames, `scale`x nearest-neighbour upscaled.

    GIF stores frame durations in 1/100 s, so `fps` is rounded to that; see the module docstring for
    colours and merged identical frames.
    """
    frames = upscale(_check_frames(frames), scale)
    images = _to_palette_frames(frames)
    duration_ms = 10 * max(1, round(100 / fps))

    def write(tmp: Path) -> None:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration_ms,
            loop=0,  # forever
            optimize=False,
        )

    return write_atomic(path, write)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8, scale: int = 1, crf: int = 18) -> Path:
    """h264 / yuv420p MP4 of uint8 (T, H, W, 3) frames (PyAV), `scale`x nearest-neighbour upscaled.

    yuv420p needs even sides: an odd height or width is padded by one row or column repeating the last
    one (bottom / right), so pixels keep their place and a reader gets at most one extra row and column.
    """
    import av

    frames = upscale(_check_frames(frames), scale)
    T, H, W, _ = frames.shape
    pad_h, pad_w = H % 2, W % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            stream.thread_count = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():  # flush
                container.mux(packet)

    return write_atomic(path, write)


def write_npy(path: str | Path, frames: np.ndarray) -> Path:
    """The exact uint8 (T, H, W, 3) frames as a .npy file."""
    frames = _check_frames(frames)
    return write_atomic(path, lambda tmp: np.save(tmp, frames, allow_pickle=False))


def read_video(path: str | Path, indices: Sequence[int] | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) frames of a video file (all, or those at `indices`).

    `.npy` files are read with NumPy, `.gif` with Pillow (decord cannot measure a GIF's length), and
    anything else (mp4, avi, webm, ...) with decord, or PyAV where decord fails (below).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".gif"):
        frames = np.load(path, allow_pickle=False) if suffix == ".npy" else _read_gif(path)
        return frames if indices is None else frames[np.asarray(list(indices), dtype=np.int64)]
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        batch = reader.get_batch(list(range(len(reader)) if indices is None else indices)).asnumpy()
    except decord.DECORDError:
        # decord 0.6 mis-sizes RGB frames of some narrow widths (8, 12, 16, 24, 48, 72 px seen;
        # dmlc/decord#336): decode those with PyAV instead
        frames = _read_pyav(path)
        return frames if indices is None else frames[np.asarray(list(indices), dtype=np.int64)]
    return np.ascontiguousarray(batch, dtype=np.uint8)


def _read_pyav(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _read_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])


def as_thwc_uint8(frames) -> np.ndarray:
    """A clip as uint8 (T, H, W, 3) numpy: accepts numpy or torch, (T, H, W, 3) or (T, 3, H, W).

    Anything else is a ValueError naming the dtype or shape it got.
    """
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got dtype {frames.dtype}")
    if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[3]):
        raise ValueError(f"frames must be (T, H, W, 3) or (T, 3, H, W), got shape {tuple(frames.shape)}")
    return frames if frames.shape[3] == 3 else frames.transpose(0, 2, 3, 1)

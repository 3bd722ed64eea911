"""What the on-disk datasets share: root checks, skipping unreadable media, and image clips.

`SkippingDataset` is the base of every dataset that reads files: `load(i)` builds item `i` and raises
`Unreadable` when its media cannot be decoded; `__getitem__` then counts the clip in `skipped` and
serves the next readable clip instead, so one corrupt file never stops a run. With DataLoader workers
each worker keeps its own count.
"""
from __future__ import annotations

import abc

from pathlib import Path

import numpy as np
import torch

from sg2video.data.fit import FitGeometry
from sg2video.errors import ConfigError, UserError
from sg2video.graphs import SceneGraph

IMAGE_NODE = "__image__"
IN_IMAGE = "__in_image__"


class Unreadable(Exception):
    """A clip's media could not be read or decoded."""


def require_root(root: str | Path | None, holds: str) -> Path:
    """`root` as a Path, or a ConfigError saying what it should hold."""
    if root in (None, "", "???"):
        raise ConfigError(f"data.root is not set (set data.root to the directory holding {holds})")
    if not Path(str(root)).is_dir():
        raise ConfigError(f"data.root={root} does not exist (set data.root to the directory holding {holds})")
    return Path(str(root))


def default_cache_dir(root: Path, cache_dir: str | Path | None) -> Path:
    """Where prepared indices live: `cache_dir` when set, else ROOT/sg2video_index."""
    return Path(str(cache_dir)) if cache_dir not in (None, "") else root / "sg2video_index"


def read_image(path: Path) -> np.ndarray:
    """uint8 (1, H, W, 3) RGB, or Unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))[None]
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for missing/corrupt files
        raise Unreadable(f"{path}: {err.__class__.__name__}: {err}") from None


class SkippingDataset(torch.utils.data.Dataset, abc.ABC):
    """Base: `__getitem__(i)` returns `load(i)`, or the next readable clip after counting `i` skipped."""

    def __init__(self) -> None:
        self.skipped_clips: set[int] = set()

    @property
    def skipped(self) -> int:
        """How many clips were skipped because their media was unreadable (in this process)."""
        return len(self.skipped_clips)

    @abc.abstractmethod
    def load(self, index: int) -> dict:
        """Item `index` (the clips.py contract); raise `Unreadable` when its media cannot be decoded."""

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """Items `indices` (what the DataLoader and the stages call for a batch)."""
        return [self[i] for i in indices]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"clip {index} out of range ({n} clips)")
        for step in range(n):
            current = (index + step) % n
            if current in self.skipped_clips:
                continue
            try:
                return self.load(current)
            except Unreadable:
                self.skipped_clips.add(current)
        raise UserError(f"{type(self).__name__}: none of its {n} clips could be read (all media unreadable)")


def image_clip(
    image: np.ndarray,
    objs: np.ndarray,
    boxes: np.ndarray,
    triples: np.ndarray,
    size: int,
    resize: str,
    frames: int,
    image_node: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, list[SceneGraph]]:
    """One image as a still clip of `frames` frames, with its graph fitted to the output frame.

    `image` uint8 (1, H, W, 3); `objs` (O,) class ids; `boxes` (O, 4) normalised to the image;
    `triples` (R, 3) over `objs`. Objects whose box vanishes in the crop are dropped with their
    triples. `image_node=(object id, predicate id)` adds sg2im's `__image__` node (box = the whole
    frame) and a `__in_image__` triple from every object to it.
    """
    geometry = FitGeometry.make(image.shape[2], image.shape[1], size, resize)
    video = geometry.frames(image)
    fitted, kept = geometry.boxes(boxes)
    new_index = np.cumsum(kept) - 1  # old object position -> position among the kept ones
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    triples = triples[kept[triples[:, 0]] & kept[triples[:, 2]]]
    triples[:, 0], triples[:, 2] = new_index[triples[:, 0]], new_index[triples[:, 2]]
    objs, fitted = np.asarray(objs, dtype=np.int64)[kept], fitted[kept]
    if image_node is not None:
        node = len(objs)
        obj_id, pred_id = image_node
        inside = np.stack([np.arange(node), np.full(node, pred_id), np.full(node, node)], axis=1)
        triples = np.concatenate([triples, inside]).astype(np.int64)
        objs = np.append(objs, obj_id)
        fitted = np.concatenate([fitted, np.array([[0, 0, 1, 1]], dtype=np.float32)])
    graph = SceneGraph(torch.from_numpy(objs), torch.from_numpy(triples), torch.from_numpy(fitted))
    return video.expand(frames, -1, -1, -1).contiguous(), [graph] * frames

"""The `shapes` world (shared/specs/shapes_world.md, contract v1): coloured shapes moving on black.

A clip is a pure function of `(seed, split, index)`: its parameters come from a NumPy generator seeded
with `[seed, split_id, index]`, so clips are reproducible on every machine and splits never overlap.
Trajectories are drawn per clip (sequential rejection sampling keeps objects apart), and pixels are
rasterised for a whole batch of clips at once with broadcasting.

`holdout="compositional"` (the config's default, `data.holdout`) keeps a fixed set of triples and class pairs out
of every train clip and builds half of val/test around them (sg2video.data.shapes_holdout); `holdout="none"`
(this class's default) is contract v1 exactly, the same bytes as before the split existed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sg2video.data.shapes_holdout import HOLDOUT_MODES, Holdout, unseen_kind
from sg2video.graphs import GraphKey, SceneGraph, Vocab

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (255, 0, 0)),
    ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("yellow", (255, 255, 0)),
    ("magenta", (255, 0, 255)),
    ("cyan", (0, 255, 255)),
    ("white", (255, 255, 255)),
    ("orange", (255, 128, 0)),
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PREDICATES: tuple[str, ...] = ("left of", "right of", "above", "below")
LEFT_OF, RIGHT_OF, ABOVE, BELOW = range(4)
PALETTE = np.array([rgb for _, rgb in COLOURS], dtype=np.uint8)  # (8, 3)
SPLITS = {"train": 0, "val": 1, "test": 2}
MAX_OBJECTS = len(COLOURS)
_BLOCK = 8  # candidate trajectories drawn at once
_MAX_BLOCKS = 64  # blocks before the whole clip is re-drawn


def shapes_vocab() -> Vocab:
    """The 24 classes "<colour> <shape>" (colour-major) and the 4 predicates."""
    objects = [f"{colour} {shape}" for colour, _ in COLOURS for shape in SHAPES]
    return Vocab(objects=objects, predicates=list(PREDICATES))


def class_id(colour: int, shape: int) -> int:
    return colour * len(SHAPES) + shape


def object_radius(size: int) -> int:
    return int(round(0.1 * size))


def relation(dx: np.ndarray | int, dy: np.ndarray | int) -> np.ndarray:
    """Predicate id of `(i, p, j)` from `dx = cx_j - cx_i`, `dy = cy_j - cy_i` (spec's rule)."""
    dx, dy = np.asarray(dx), np.asarray(dy)
    horizontal = np.where(dx > 0, LEFT_OF, RIGHT_OF)
    vertical = np.where(dy > 0, ABOVE, BELOW)
    return np.where(np.abs(dx) >= np.abs(dy), horizontal, vertical)


def template_masks(cx: np.ndarray, cy: np.ndarray, radius: int, size: int) -> np.ndarray:
    """Masks of the three shape templates centred at integer `(cx, cy)`.

    `cx`, `cy`: integer arrays of any shape `A`. Returns bool (3, *A, size, size): circle, square,
    triangle, with pixel `[..., y, x]`.
    """
    grid = np.arange(size, dtype=np.int32)
    dx = grid - cx[..., None, None].astype(np.int32)  # (*A, 1, S): varies along x
    dy = grid[:, None] - cy[..., None, None].astype(np.int32)  # (*A, S, 1): varies along y
    dx = np.broadcast_to(dx, (*cx.shape, 1, size))
    dy = np.broadcast_to(dy, (*cy.shape, size, 1))
    circle = dx * dx + dy * dy <= radius * radius
    square = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    # apex up: rows cy-r..cy+r, half-width (y - (cy - r)) / 2 + 0.5; compare doubled to stay in ints
    rows = (dy >= -radius) & (dy <= radius)
    triangle = rows & (2 * np.abs(dx) <= dy + radius + 1)
    return np.stack(np.broadcast_arrays(circle, square, triangle))


@dataclass
class ClipParams:
    """What a clip is made of: `colours`, `shapes` (K,), rounded centres `(K, T, 2)` as (x, y)."""

    colours: np.ndarray
    shapes: np.ndarray
    centres: np.ndarray


class ShapesWorld:
    """Renders clips of the shapes world; see the module docstring and the spec."""

    def __init__(
        self,
        size: int = 64,
        frames: int = 8,
        min_objects: int = 2,
        max_objects: int = 4,
        seed: int = 0,
        holdout: str = "none",
    ) -> None:
        assert size >= 8 and frames >= 1, "size >= 8 and frames >= 1"
        assert 1 <= min_objects <= max_objects <= MAX_OBJECTS, "1 <= min_objects <= max_objects <= 8"
        if holdout not in HOLDOUT_MODES:
            raise ValueError(f"holdout must be one of {list(HOLDOUT_MODES)}, got {holdout!r}")
        self.size = size
        self.frames = frames
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.seed = seed
        self.radius = object_radius(size)
        self.vmax = 0.04 * size
        self.lo, self.hi = float(self.radius), float(size - 1 - self.radius)
        self.min_gap = 2 * self.radius + 2
        self._time = np.arange(frames, dtype=np.float64)[:, None]  # (T, 1)
        self.vocab = shapes_vocab()
        self.holdout = Holdout.from_vocab(self.vocab) if holdout == "compositional" else None

    # -- parameters -------------------------------------------------------------------------

    def _trajectories(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Rounded centres (count, T, 2) of candidate objects: uniform start and velocity, bounce."""
        u = rng.random((count, 1, 4))  # start x, y in [lo, hi); velocity x, y in [-vmax, vmax)
        span = self.hi - self.lo
        start = self.lo + span * u[..., :2]
        velocity = self.vmax * (2.0 * u[..., 2:] - 1.0)
        # reflecting at both walls is a triangle wave of period 2 * span
        phase = np.mod(start - self.lo + velocity * self._time, 2 * span)
        pos = self.lo + np.where(phase <= span, phase, 2 * span - phase)
        return np.floor(pos + 0.5).astype(np.int32)

    def params(self, split: str, index: int) -> ClipParams:
        """K, then the classes, then trajectories until one set fits (see `place` and the holdout).

        K, colours and shapes are drawn once: only trajectories are re-drawn, since re-drawing K with
        them would make crowded clips rarer than the spec's uniform K (e.g. K=6 of 2..6 at S=32: 13%).
        With a holdout, classes are re-drawn only while they hold a held-out pair (a clip's K stays), and
        trajectories while a frame holds a held-out triple, so the classes of a held-out triple still meet.
        """
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        num = int(rng.integers(self.min_objects, self.max_objects + 1))
        kind = unseen_kind(split, index) if self.holdout is not None and self.max_objects >= 2 else None
        if kind is None:
            colours, shapes = self._classes(rng, num)
            classes = class_id(colours, shapes)
            guard = self.holdout is not None and self.holdout.may_hold_triple(classes)
            accept = self._no_held_out_triple if guard else None
        else:
            colours, shapes, accept = self._unseen_classes(rng, max(num, 2), kind)
            classes = class_id(colours, shapes)
        while True:
            centres = self.place(rng, len(colours))
            if centres is not None and (accept is None or accept(classes, centres)):
                return ClipParams(colours.astype(np.int64), shapes.astype(np.int64), centres)

    def _classes(self, rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct colours, independent shapes (v1's draw); again while they hold a held-out pair."""
        while True:
            colours = rng.permutation(len(COLOURS))[:num]
            shapes = rng.integers(0, len(SHAPES), size=num)
            if self.holdout is None or not self.holdout.has_pair(class_id(colours, shapes)):
                return colours, shapes

    def _unseen_classes(self, rng: np.random.Generator, num: int, kind: str):
        """Classes around one held-out item drawn from the clip's stream: a triple's subject and object (and
        the test that the triple holds in frame 0) or a pair's two classes, at random places in the clip's
        object order, the other objects drawn as usual (distinct colours)."""
        table = self.holdout.triple_ids if kind == "triple" else self.holdout.pair_ids
        row = table[int(rng.integers(len(table)))]
        forced = row[[0, 2]] if kind == "triple" else row
        others = rng.permutation(len(COLOURS))
        others = others[~np.isin(others, forced // len(SHAPES))][: num - 2]
        order = rng.permutation(num)
        colours = np.concatenate([forced // len(SHAPES), others])[order]
        shapes = np.concatenate([forced % len(SHAPES), rng.integers(0, len(SHAPES), size=num - 2)])[order]
        if kind != "triple":
            return colours, shapes, None
        a, b = int(np.flatnonzero(order == 0)[0]), int(np.flatnonzero(order == 1)[0])

        def holds_in_first_frame(_classes: np.ndarray, centres: np.ndarray) -> bool:
            return int(relation(*(centres[b, 0] - centres[a, 0]))) == int(row[1])

        return colours, shapes, holds_in_first_frame

    def _no_held_out_triple(self, classes: np.ndarray, centres: np.ndarray) -> bool:
        ii, jj = np.triu_indices(len(classes), k=1)
        d = centres[jj] - centres[ii]  # (pairs, T, 2)
        return not self.holdout.has_triple(classes, ii, relation(d[..., 0], d[..., 1]), jj)

    def place(self, rng: np.random.Generator, num: int) -> np.ndarray | None:
        """Rounded centres (num, T, 2) placed one object at a time: candidates come in blocks, the first that
        touches no placed object is kept; None when `_MAX_BLOCKS` blocks did not place them all."""
        centres = np.zeros((num, self.frames, 2), dtype=np.int32)
        centres[0] = self._trajectories(rng, 1)[0]
        placed = 1
        for _block in range(_MAX_BLOCKS):
            if placed == num:
                break
            candidates = self._trajectories(rng, _BLOCK)  # (B, T, 2)
            for candidate in candidates:
                gaps = np.abs(centres[:placed] - candidate).max(axis=2)  # (placed, T) Chebyshev
                if gaps.min() >= self.min_gap:
                    centres[placed] = candidate
                    placed += 1
                    if placed == num:
                        break
        return centres if placed == num else None

    def graph_key(self, p: ClipParams) -> tuple[GraphKey, ...]:
        """`sg2video.graphs.clip_key` of the clip's per-frame graphs, from its parameters alone (no pixels,
        no tensors): what the eval stage looks eval graphs up in tens of thousands of train clips with."""
        classes = class_id(p.colours, p.shapes).tolist()
        ii, jj = np.triu_indices(len(classes), k=1)
        d = p.centres[jj] - p.centres[ii]
        preds = relation(d[..., 0], d[..., 1]).T.tolist()  # (T, pairs)
        objs = tuple(sorted(classes))
        subjects, objects = [classes[i] for i in ii], [classes[j] for j in jj]
        return tuple((objs, tuple(sorted(zip(subjects, frame, objects)))) for frame in preds)

    # -- pixels and graphs ------------------------------------------------------------------

    def render(self, params: list[ClipParams]) -> np.ndarray:
        """uint8 (N, T, S, S, 3) frames for N clips, all rasterised together.

        Each object-frame stamps its shape's pixel offsets (precomputed once); objects never overlap
        and stay inside the frame, so a single scatter paints every clip of the batch.
        """
        n, T, S = len(params), self.frames, self.size
        frames = np.zeros((n, T, S, S, 3), dtype=np.uint8)
        counts = np.array([len(p.colours) for p in params])
        clip_of_obj = np.repeat(np.arange(n), counts)  # (M,) one row per object
        centres = np.concatenate([p.centres for p in params])  # (M, T, 2)
        shapes = np.concatenate([p.shapes for p in params])  # (M,)
        colours = PALETTE[np.concatenate([p.colours for p in params])]  # (M, 3)
        offsets, valid = self._stamps()  # (3, P, 2), (3, P)
        obj_off, obj_valid = offsets[shapes], valid[shapes]  # (M, P, 2), (M, P)
        m, t, k = np.nonzero(np.broadcast_to(obj_valid[:, None, :], (len(shapes), T, obj_valid.shape[1])))
        xs = centres[m, t, 0] + obj_off[m, k, 0]
        ys = centres[m, t, 1] + obj_off[m, k, 1]
        frames[clip_of_obj[m], t, ys, xs] = colours[m]
        return frames

    def _stamps(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel offsets (dx, dy) of each shape template, padded to one length: (3, P, 2) and (3, P)."""
        if not hasattr(self, "_stamp_cache"):
            r = self.radius
            side = 2 * r + 1
            masks = template_masks(np.array([r]), np.array([r]), r, side)[:, 0]  # (3, side, side)
            length = int(masks.reshape(3, -1).sum(1).max())
            offsets = np.zeros((3, length, 2), dtype=np.int32)
            valid = np.zeros((3, length), dtype=bool)
            for shape, mask in enumerate(masks):
                ys, xs = np.nonzero(mask)
                offsets[shape, : len(xs)] = np.stack([xs - r, ys - r], axis=1)
                valid[shape, : len(xs)] = True
            self._stamp_cache = (offsets, valid)
        return self._stamp_cache

    def graphs(self, p: ClipParams) -> list[SceneGraph]:
        """Per-frame graphs: every pair i < j once per frame, boxes normalised to [0, 1]."""
        num = len(p.colours)
        objs = torch.as_tensor(class_id(p.colours, p.shapes), dtype=torch.long)
        ii, jj = np.triu_indices(num, k=1)
        d = p.centres[jj] - p.centres[ii]  # (pairs, T, 2)
        preds = relation(d[..., 0], d[..., 1])  # (pairs, T)
        r, S = self.radius, self.size
        lo = (p.centres - r) / S
        hi = (p.centres + r + 1) / S
        boxes = np.concatenate([lo, hi], axis=-1).astype(np.float32)  # (K, T, 4) x0 y0 x1 y1
        # one tensor per quantity for the whole clip; each frame's graph holds views into it
        triples = torch.from_numpy(np.stack(np.broadcast_arrays(ii[:, None], preds, jj[:, None]), axis=-1).astype(np.int64))
        triples = triples.transpose(0, 1)  # (T, pairs, 3)
        boxes_t = torch.from_numpy(boxes.transpose(1, 0, 2).copy())  # (T, K, 4)
        return [SceneGraph(objs, triples[t], boxes_t[t]) for t in range(self.frames)]

    def clips(self, split: str, indices: list[int]) -> list[dict]:
        """Dataset items for `indices` (see sg2video.data.clips for the item contract)."""
        params = [self.params(split, int(i)) for i in indices]
        frames = self.render(params)
        items = []
        for i, p, clip in zip(indices, params, frames):
            items.append(
                {
                    "video": torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2))),
                    "graphs": self.graphs(p),
                    "source": {"dataset": "shapes", "split": split, "index": int(i), "seed": self.seed},
                }
            )
        return items


class ShapesDataset(torch.utils.data.Dataset):
    """Clips `(T, 3, H, W)` uint8 of the shapes world with their per-frame graphs.

    `__getitems__` renders a whole batch at once (the DataLoader uses it when it exists).
    """

    def __init__(self, split: str = "train", length: int = 100_000, **world_kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self.split = split
        self.length = length
        self.world = ShapesWorld(**world_kwargs)
        self.vocab = self.world.vocab

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.world.clips(self.split, [index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return self.world.clips(self.split, list(indices))

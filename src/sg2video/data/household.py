"""The `household` world (docs/household_world.md): a person among Action Genome's things, with depth, attention
and contact, so that a box does not decide the relation.

A clip is a pure function of `(seed, split, index)`: its episode (sg2video.data.household_scene and
household_activities) is drawn from a NumPy generator seeded with `[seed, split_id, index]`, and an episode whose
clip window breaks a rule of the world (things overlapping each other or the head, the hand on a thing it does not
hold, a thing or the body more than half hidden, anything leaving the frame) is drawn again from the same
generator. Graphs are computed from each frame's placements with the relation rules
(sg2video.data.household_sprites), and the pixels of a whole batch of clips are painted at once, one draw slot
(back to front) at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sg2video.data.household_activities import play
from sg2video.data.household_scene import Rejected
from sg2video.data.household_sprites import (BODY_I, FACE_I, HAIR_I, HAND_I, HEAD_TOP_UNITS, OBJECT_CLASSES,
                                             OBJECT_COLOUR0, PALETTE, Placed, PersonPlacement, household_vocab,
                                             orient_index, overlap, overlap_mask, person_box, relations, sprites,
                                             unit)
from sg2video.errors import ConfigError
from sg2video.graphs import SceneGraph

SPLITS = {"train": 0, "val": 1, "test": 2}
SIZES = (16, 32, 64, 128)  # 16 is painted at 32 and subsampled (for smoke runs; the checker needs 32 or more)
MAX_OBJECTS = 4  # graph nodes, the person included
MIN_VISIBLE = 0.5  # share of a thing's template, and of the body's, that must show


@dataclass
class ClipParams:
    """What a clip is made of. `classes` (K,): index into OBJECT_CLASSES; `person` (T, 6) int: torso column, facing,
    pose, hand x, hand y, held object (-1: none); `objects` (K, T, 4) int: top-left x, y, depth (-1 behind the
    person's plane, +1 in front of it) and orientation (+1 front to the right, -1 to the left)."""

    classes: np.ndarray
    person: np.ndarray
    objects: np.ndarray
    activity: str


def _shown(placed: Placed, in_front: list[Placed]) -> int:
    """Pixels of `placed`'s template that none of the templates `in_front` covers."""
    hidden = np.zeros(placed.mask.shape, dtype=bool)
    for occluder in in_front:
        shared, x0, y0 = overlap_mask(placed, occluder)
        top, left = y0 - placed.y0, x0 - placed.x0
        hidden[top: top + shared.shape[0], left: left + shared.shape[1]] |= shared
    return int((placed.mask & ~hidden).sum())


class HouseholdWorld:
    """Renders clips of the household world; see the module docstring and the spec."""

    def __init__(self, size: int = 64, frames: int = 8, min_objects: int = 2, max_objects: int = 4,
                 seed: int = 0) -> None:
        if size not in SIZES:
            raise ConfigError(f"data.size={size} is not a household frame size "
                              f"(accepted: {', '.join(map(str, SIZES))})")
        if not 2 <= min_objects <= max_objects <= MAX_OBJECTS:
            raise ConfigError(f"data.min_objects={min_objects} and data.max_objects={max_objects} must satisfy 2 <= "
                              f"min_objects <= max_objects <= {MAX_OBJECTS} (objects in a graph, the person included)")
        assert frames >= 1
        self.size, self.frames, self.seed = size, frames, seed
        self.min_objects, self.max_objects = min_objects, max_objects
        self.render_size = max(size, 32)
        self.u = unit(self.render_size)
        self.head_y = HEAD_TOP_UNITS * self.u
        self.vocab = household_vocab()

    # -- parameters -------------------------------------------------------------------------

    def params(self, split: str, index: int) -> ClipParams:
        """Draw episodes until one lays out and its window of `frames` keeps the world's rules."""
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        # things besides the person: n with probability proportional to 1 / n (most Action Genome frames hold one or
        # two); drawn once, so the share of crowded clips does not depend on how often they are drawn again
        counts = np.arange(self.min_objects - 1, self.max_objects)
        num = int(rng.choice(counts, p=(1.0 / counts) / (1.0 / counts).sum()))
        while True:
            try:
                episode, activity = play(rng, self.u, num)
            except Rejected:
                continue
            rows = episode.frames + [episode.frames[-1]] * max(0, self.frames - len(episode.frames))
            start = int(rng.integers(0, len(rows) - self.frames + 1))
            rows = rows[start:start + self.frames]
            params = ClipParams(
                classes=np.array(episode.classes, dtype=np.int64),
                person=np.array([r[0] for r in rows], dtype=np.int64),
                objects=np.array([r[1:] for r in rows], dtype=np.int64).transpose(2, 0, 1),
                activity=activity,
            )
            if all(self._frame_ok(params, t) for t in range(self.frames)):
                return params

    def placements(self, p: ClipParams, t: int) -> tuple[PersonPlacement, list[Placed]]:
        """Frame t's person and things as placed templates."""
        kit = sprites(self.u)
        px, facing, pose, hx, hy, _ = (int(v) for v in p.person[t])
        person = PersonPlacement(px, self.head_y, facing, pose, Placed(kit.hand, hx, hy), self.u)
        things = [Placed(kit.objects[c][orient_index(o)], int(x), int(y))
                  for c, (x, y, _, o) in zip(p.classes, p.objects[:, t])]
        return person, things

    def _frame_ok(self, p: ClipParams, t: int) -> bool:
        """The world's rules for one frame (docs/household_world.md, "What a frame never shows")."""
        person, things = self.placements(p, t)
        head, body, hand, held = person.head, person.body, person.hand, int(p.person[t, 5])
        side = self.render_size
        if any(q.x0 < 0 or q.y0 < 0 or q.x1 >= side or q.y1 >= side for q in (head, body, hand, *things)):
            return False
        if overlap(hand, head):
            return False
        for k, thing in enumerate(things):
            if overlap(thing, head) or (k != held and overlap(hand, thing)):
                return False
            if any(overlap(thing, other) for other in things[k + 1:]):
                return False
            in_front = [hand] + ([head, body] if p.objects[k, t, 2] < 0 else [])
            if _shown(thing, in_front) < MIN_VISIBLE * thing.area:
                return False
        front = [thing for k, thing in enumerate(things) if p.objects[k, t, 2] > 0]
        return _shown(body, [hand, *front]) >= MIN_VISIBLE * body.area


    # -- graphs -----------------------------------------------------------------------------

    def graphs(self, p: ClipParams) -> list[SceneGraph]:
        """Per-frame graphs: node 0 the person, then the things; every relation the rules find, person first;
        boxes normalised to [0, 1] (the person's: head, body and hand)."""
        objs = torch.as_tensor([0, *(1 + p.classes)], dtype=torch.long)
        pred_id = {name: i for i, name in enumerate(self.vocab.predicates)}
        side = float(self.render_size)
        graphs = []
        for t in range(self.frames):
            person, things = self.placements(p, t)
            triples = [(0, pred_id[name], k + 1) for k, thing in enumerate(things)
                       for name in relations(person, thing, bool(p.objects[k, t, 2] > 0))]
            boxes = [person_box(person)] + [(q.x0, q.y0, q.x1, q.y1) for q in things]
            boxes_t = torch.tensor([[x0 / side, y0 / side, (x1 + 1) / side, (y1 + 1) / side]
                                    for x0, y0, x1, y1 in boxes], dtype=torch.float32)
            graphs.append(SceneGraph(objs, torch.tensor(triples, dtype=torch.long).reshape(-1, 3), boxes_t))
        return graphs

    # -- pixels -----------------------------------------------------------------------------

    def _stamps(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel offsets (dx, dy) of every template, padded to one length: (V, P, 2) and valid (V, P). Templates:
        0 half head, 1-3 bodies (pose), 4 hand, 5 + 2k + orient_index: object class k."""
        if not hasattr(self, "_stamp_cache"):
            kit = sprites(self.u)
            masks = [kit.head_half, *kit.bodies, kit.hand, *(m for pair in kit.objects for m in pair)]
            length = max(int(m.sum()) for m in masks)
            offsets = np.zeros((len(masks), length, 2), dtype=np.int64)
            valid = np.zeros((len(masks), length), dtype=bool)
            for v, mask in enumerate(masks):
                ys, xs = np.nonzero(mask)
                offsets[v, : len(xs)] = np.stack([xs, ys], axis=1)
                valid[v, : len(xs)] = True
            self._stamp_cache = (offsets, valid)
        return self._stamp_cache

    def _slots(self, params: list[ClipParams]) -> list[tuple[np.ndarray, ...]]:
        """Draw slots back to front, each (template, x, y, colour, drawn) over (N, T): things behind the person,
        hair, face, body, things in front, the hand (on top of everything)."""
        n, T, u = len(params), self.frames, self.u
        person = np.stack([p.person for p in params])  # (N, T, 6)
        px, facing, pose, hx, hy = (person[..., i] for i in range(5))
        head_y = np.full((n, T), self.head_y)
        every = np.ones((n, T), dtype=bool)
        half = 2 * u
        hair_x, face_x = np.where(facing > 0, px, px + half), np.where(facing > 0, px + half, px)
        body_x = np.where(pose == 2, px - 3 * u, px)  # SIT_LEFT's thighs reach left of the torso
        kmax = max(len(p.classes) for p in params)
        things = np.zeros((n, kmax, T, 5), dtype=np.int64)  # template, x, y, colour, depth (0: no thing)
        for i, p in enumerate(params):
            k = len(p.classes)
            things[i, :k, :, 0] = 5 + 2 * p.classes[:, None] + (p.objects[..., 3] < 0)
            things[i, :k, :, 1:3] = p.objects[..., :2]
            things[i, :k, :, 3] = (OBJECT_COLOUR0 + p.classes)[:, None]
            things[i, :k, :, 4] = p.objects[..., 2]
        behind = [tuple(things[:, k, :, j] for j in range(4)) + (things[:, k, :, 4] < 0,) for k in range(kmax)]
        front = [tuple(things[:, k, :, j] for j in range(4)) + (things[:, k, :, 4] > 0,) for k in range(kmax)]
        person_slots = [
            (np.zeros_like(px), hair_x, head_y, np.full_like(px, HAIR_I), every),
            (np.zeros_like(px), face_x, head_y, np.full_like(px, FACE_I), every),
            (1 + pose, body_x, head_y + 4 * u, np.full_like(px, BODY_I), every),
        ]
        return [*behind, *person_slots, *front, (np.full_like(px, 4), hx, hy, np.full_like(px, HAND_I), every)]

    def render(self, params: list[ClipParams]) -> np.ndarray:
        """uint8 (N, T, S, S, 3) frames for N clips: each draw slot is one scatter over the whole batch, later
        slots painting over earlier ones (back to front)."""
        n, T, side = len(params), self.frames, self.render_size
        frames = np.zeros((n, T, side, side, 3), dtype=np.uint8)
        offsets, valid = self._stamps()
        for template, x, y, colour, drawn in self._slots(params):
            clip, t = np.nonzero(drawn)
            if not len(clip):
                continue
            v = template[clip, t]
            m, k = np.nonzero(valid[v])
            xs = x[clip, t][m] + offsets[v[m], k, 0]
            ys = y[clip, t][m] + offsets[v[m], k, 1]
            frames[clip[m], t[m], ys, xs] = PALETTE[colour[clip, t][m]]
        if self.size < side:  # 16: the 32-pixel picture, every other pixel
            frames = np.ascontiguousarray(frames[:, :, ::2, ::2])
        return frames

    def clips(self, split: str, indices: list[int]) -> list[dict]:
        """Dataset items for `indices` (see sg2video.data.clips for the item contract)."""
        params = [self.params(split, int(i)) for i in indices]
        frames = self.render(params)
        return [{"video": torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2))),
                 "graphs": self.graphs(p),
                 "source": {"dataset": "household", "split": split, "index": int(i), "seed": self.seed,
                            "activity": p.activity}}
                for i, p, clip in zip(indices, params, frames)]


class HouseholdDataset(torch.utils.data.Dataset):
    """Clips `(T, 3, H, W)` uint8 of the household world with their per-frame graphs; `__getitems__` renders a
    whole batch at once (the DataLoader uses it when it exists)."""

    def __init__(self, split: str = "train", length: int = 100_000, **world_kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self.split, self.length = split, length
        self.world = HouseholdWorld(**world_kwargs)
        self.vocab = self.world.vocab

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.world.clips(self.split, [index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return self.world.clips(self.split, list(indices))


assert len(PALETTE) == OBJECT_COLOUR0 + len(OBJECT_CLASSES)

"""The shapes world against its contract (shared/specs/shapes_world.md), rule by rule.

Expectations are re-derived here from the spec, not from the module's helpers: the palette, names and
radii are written out, the shape templates are the spec's formulas evaluated literally, and centres,
velocities, relations and boxes are recovered from the rendered pixels alone.
"""
from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from sg2video.data.clips import collate_clips
from sg2video.data.shapes import COLOURS, PALETTE, SHAPES, ShapesDataset, ShapesWorld, shapes_vocab

SPEC_COLOURS = [
    ("red", (255, 0, 0)),
    ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("yellow", (255, 255, 0)),
    ("magenta", (255, 0, 255)),
    ("cyan", (0, 255, 255)),
    ("white", (255, 255, 255)),
    ("orange", (255, 128, 0)),
]
SPEC_SHAPES = ["circle", "square", "triangle"]
SPEC_PREDICATES = ["left of", "right of", "above", "below"]
SPEC_RGB = np.array([rgb for _, rgb in SPEC_COLOURS], dtype=np.uint8)
# r = round(0.1 * S), written out; 33 is the odd size (sizes like 25 or 45 land on .5, which the spec leaves open)
SPEC_RADIUS = {32: 3, 33: 3, 64: 6, 128: 13}


# ----------------------------------------------------------------------------------------------
# Reading a clip back from its pixels


def spec_masks(shape: int, cx: np.ndarray, cy: np.ndarray, r: int, size: int) -> np.ndarray:
    """The spec's template for `shape` at integer centres `cx`, `cy` (T,): bool (T, S, S), pixel [t, y, x]."""
    y = np.arange(size)[None, :, None].astype(np.float64)
    x = np.arange(size)[None, None, :].astype(np.float64)
    cx = cx[:, None, None].astype(np.float64)
    cy = cy[:, None, None].astype(np.float64)
    if SPEC_SHAPES[shape] == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    if SPEC_SHAPES[shape] == "square":
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    return (cy - r <= y) & (y <= cy + r) & (np.abs(x - cx) <= (y - (cy - r)) / 2 + 0.5)


def decode(item: dict, size: int, frames: int) -> dict:
    """Checks one item's pixels against the spec and recovers each graph object's centre per frame.

    An object is the set of pixels with exactly its colour's RGB; its centre is the middle of that set's
    bounding box (for all three templates the box is centre +- r, so this is exact), and the set must equal
    the spec's template there. Every other pixel must be pure black. Returns colours, shapes (K,) and
    centres (K, T, 2) as (x, y).
    """
    r = SPEC_RADIUS[size]
    video = item["video"]
    assert video.dtype == torch.uint8 and tuple(video.shape) == (frames, 3, size, size)
    pixels = video.numpy().transpose(0, 2, 3, 1)  # (T, S, S, 3)
    graphs = item["graphs"]
    assert len(graphs) == frames
    objs = graphs[0].objs.numpy()
    for graph in graphs:
        assert np.array_equal(graph.objs.numpy(), objs), "same objects in every frame of a clip"
    colours, shapes = objs // 3, objs % 3  # colour-major class ids
    painted = np.zeros(pixels.shape[:3], dtype=bool)
    centres = np.zeros((len(objs), frames, 2), dtype=np.int64)
    for k, (colour, shape) in enumerate(zip(colours, shapes)):
        mask = (pixels == SPEC_RGB[colour]).all(axis=-1)  # (T, S, S)
        rows, cols = mask.any(axis=2), mask.any(axis=1)  # (T, S) each
        assert rows.any(axis=1).all(), f"object {k} ({SPEC_COLOURS[colour][0]}) missing in some frame"
        y0, y1 = rows.argmax(axis=1), size - 1 - rows[:, ::-1].argmax(axis=1)
        x0, x1 = cols.argmax(axis=1), size - 1 - cols[:, ::-1].argmax(axis=1)
        assert (y1 - y0 == 2 * r).all() and (x1 - x0 == 2 * r).all(), "object extent is 2r + 1 pixels"
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        expected = spec_masks(int(shape), cx, cy, r, size)
        assert np.array_equal(mask, expected), f"{SPEC_COLOURS[colour][0]} {SPEC_SHAPES[shape]} != spec template"
        assert not (painted & mask).any(), "objects overlap"
        painted |= mask
        centres[k, :, 0], centres[k, :, 1] = cx, cy
    assert (pixels[~painted] == 0).all(), "every pixel that is not an object's exact colour is pure black"
    return {"colours": colours, "shapes": shapes, "centres": centres}


def digest(item: dict) -> str:
    h = hashlib.sha256(item["video"].numpy().tobytes())
    for graph in item["graphs"]:
        h.update(graph.objs.numpy().tobytes())
        h.update(graph.triples.numpy().tobytes())
        h.update(graph.boxes.numpy().tobytes())
    return h.hexdigest()


_CACHE: dict = {}


def sample(size: int, frames: int, count: int, split: str = "val", **kwargs) -> tuple[list[dict], list[dict]]:
    """`count` items of a world and their decoded pixels (cached: several tests read the same clips)."""
    key = (size, frames, count, split, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        world = ShapesWorld(size=size, frames=frames, **kwargs)
        items = world.clips(split, list(range(count)))
        _CACHE[key] = items, [decode(item, size, frames) for item in items]
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# Motion: is a rounded trajectory a constant-velocity path reflected at the walls?


def feasible_motions(obs: np.ndarray, lo: float, hi: float, vmax: float, reflect: bool = True) -> np.ndarray:
    """Vertices (a, v) of the set of start `a` in [lo, hi] and velocity |v| <= vmax such that
    `round(fold(a + v t)) == obs[t]` for every t (fold: reflection into [lo, hi]; identity if not `reflect`).

    Each frame confines `a + v t` to a union of intervals, so the set is a union of convex polygons in the
    (a, v) plane whose edges lie on lines `a + v t = c` (c an interval end) or `v = +-vmax`; a non-empty one
    has a vertex where two such lines cross, so testing every crossing decides feasibility exactly.
    Returns the feasible vertices (N, 2), empty when no such motion exists.
    """
    obs = np.asarray(obs, dtype=np.float64) - lo
    span = hi - lo
    times = np.arange(len(obs), dtype=np.float64)
    line_t, line_c = [0.0, 0.0], [0.0, span]  # a = lo, a = hi
    for t, o in zip(times, obs):
        reach = vmax * t + 1.0  # a + v t lies in [-reach, span + reach]
        ends = [o - 0.5, o + 0.5]
        if reflect:  # fold(x) = o  <=>  x = +-o  (mod 2 span)
            ends += [-o - 0.5, -o + 0.5]
            shifts = 2 * span * np.arange(np.floor(-reach / (2 * span)) - 1, np.ceil((span + reach) / (2 * span)) + 2)
        else:
            shifts = np.zeros(1)
        for c in (np.array(ends)[:, None] + shifts[None, :]).ravel():
            if -reach - 1 <= c <= span + reach + 1:
                line_t.append(t)
                line_c.append(c)
    line_t, line_c = np.array(line_t), np.array(line_c)
    i, j = np.triu_indices(len(line_t), k=1)
    crossing = line_t[i] != line_t[j]
    i, j = i[crossing], j[crossing]
    v = np.concatenate([(line_c[j] - line_c[i]) / (line_t[j] - line_t[i]), np.full(len(line_t), vmax), np.full(len(line_t), -vmax)])
    a = np.concatenate([line_c[i] - v[: len(i)] * line_t[i], line_c - vmax * line_t, line_c + vmax * line_t])
    eps = 1e-7
    x = a[:, None] + v[:, None] * times[None, :]  # (candidates, T) unfolded positions
    if reflect:
        phase = np.mod(x, 2 * span)
        x = np.where(phase <= span, phase, 2 * span - phase)
    ok = (np.abs(v) <= vmax + eps) & (a >= -eps) & (a <= span + eps) & (np.abs(x - obs).max(axis=1) <= 0.5 + eps)
    return np.stack([a[ok] + lo, v[ok]], axis=1)


def spec_path(start: float, velocity: float, frames: int, lo: float, hi: float) -> np.ndarray:
    """Rounded centres of a bouncing 1-D path, simulated frame by frame (reflect whenever it leaves)."""
    pos, vel, out = start, velocity, []
    for _ in range(frames):
        out.append(int(np.floor(pos + 0.5)))
        pos += vel
        while pos < lo or pos > hi:
            pos, vel = (2 * lo - pos, -vel) if pos < lo else (2 * hi - pos, -vel)
    return np.array(out)


def test_motion_checker_accepts_bounces_and_rejects_other_paths():
    lo, hi, vmax = 6.0, 57.0, 0.04 * 64
    reflected = spec_path(10.0 + lo, -2.5, 8, lo, hi)
    assert reflected.tolist() == [16, 14, 11, 9, 6, 9, 11, 14]  # written out by hand from the spec
    assert len(feasible_motions(reflected, lo, hi, vmax)) > 0
    assert len(feasible_motions(reflected, lo, hi, vmax, reflect=False)) == 0  # needs the bounce
    clamped = np.array([16, 14, 11, 9, 6, 6, 6, 6])  # stops at the wall instead of bouncing
    assert len(feasible_motions(clamped, lo, hi, vmax)) == 0
    assert len(feasible_motions(np.array([10, 13, 16, 19, 22]), lo, hi, vmax)) == 0  # 3 px/frame > vmax
    jumped = reflected.copy()
    jumped[2] += 2
    assert len(feasible_motions(jumped, lo, hi, vmax)) == 0
    # random bouncing paths (up to two bounces in 40 frames): all accepted, velocity recovered
    rng = np.random.default_rng(0)
    for _ in range(10):
        start, velocity = rng.uniform(lo, hi), rng.uniform(-vmax, vmax)
        vertices = feasible_motions(spec_path(start, velocity, 40, lo, hi), lo, hi, vmax)
        assert len(vertices) > 0
        assert vertices[:, 1].min() - 1e-6 <= velocity <= vertices[:, 1].max() + 1e-6


# ----------------------------------------------------------------------------------------------
# Vocabulary and palette


def test_palette_names_and_ids_follow_the_spec():
    assert [name for name, _ in COLOURS] == [name for name, _ in SPEC_COLOURS]
    assert PALETTE.dtype == np.uint8 and PALETTE.tolist() == [list(rgb) for _, rgb in SPEC_COLOURS]
    assert list(SHAPES) == SPEC_SHAPES
    vocab = shapes_vocab()
    assert vocab.objects == [f"{colour} {shape}" for colour, _ in SPEC_COLOURS for shape in SPEC_SHAPES]
    assert vocab.num_objects == 24 and vocab.predicates == SPEC_PREDICATES
    assert vocab.object_id("red circle") == 0 and vocab.object_id("red square") == 1
    assert vocab.object_id("green circle") == 3 and vocab.object_id("orange triangle") == 23
    world = ShapesWorld()
    assert (world.size, world.frames, world.min_objects, world.max_objects) == (64, 8, 2, 4)
    with pytest.raises((AssertionError, ValueError)):
        ShapesWorld(max_objects=9)


# ----------------------------------------------------------------------------------------------
# Frames and pixels


@pytest.mark.parametrize("size, count", [(32, 120), (33, 60), (64, 60), (128, 12)])
def test_pixels_are_the_spec_templates_in_exact_colours(size, count):
    items, decoded = sample(size, 8, count)
    seen_shapes, seen_colours = set(), set()
    for item, clip in zip(items, decoded):
        seen_shapes.update(clip["shapes"].tolist())
        seen_colours.update(clip["colours"].tolist())
    assert seen_shapes == {0, 1, 2}
    if count >= 60:
        assert len(seen_colours) == 8
    # the world's own parameters agree with what its pixels show
    world = ShapesWorld(size=size, frames=8)
    for index in (0, count - 1):
        assert np.array_equal(world.params("val", index).centres, decoded[index]["centres"])


@pytest.mark.parametrize("frames", [1, 2, 13])
def test_any_number_of_frames_works(frames):
    items, decoded = sample(32, frames, 20)
    for item, clip in zip(items, decoded):
        k = len(clip["colours"])
        assert all(graph.num_triples == k * (k - 1) // 2 for graph in item["graphs"])
    if frames == 1:
        collated = collate_clips(items[:3])
        assert tuple(collated.video.shape) == (3, 3, 1, 32, 32) and collated.graphs.num_graphs == 3


# ----------------------------------------------------------------------------------------------
# Objects


def test_object_count_is_uniform_and_colours_distinct():
    items, decoded = sample(32, 8, 600)
    counts = np.bincount([len(clip["colours"]) for clip in decoded], minlength=9)
    assert counts[:2].sum() == 0 and counts[5:].sum() == 0 and counts[2:5].sum() == 600
    assert (np.abs(counts[2:5] - 200) <= 45).all(), counts  # uniform: 200 +- ~3.9 sd each
    for clip in decoded:
        assert len(set(clip["colours"].tolist())) == len(clip["colours"]), "colours distinct within a clip"
    # shapes are independent: a clip with more objects than shapes repeats one, and repeats happen below that
    assert any(len(set(c["shapes"].tolist())) < len(c["shapes"]) for c in decoded if len(c["shapes"]) <= 3)
    # crowded clips: K stays uniform even though their trajectories are rejected more often
    world = ShapesWorld(size=32, frames=8, min_objects=2, max_objects=6)
    crowded = np.bincount([len(world.params("train", i).colours) for i in range(400)], minlength=7)[2:]
    assert (np.abs(crowded - 80) <= 20).all(), crowded  # 80 +- 2.5 sd; re-drawing K too gave K=6 only 49


def test_crowded_clips_still_follow_every_rule():
    items, decoded = sample(32, 8, 12, split="test", min_objects=6, max_objects=6)
    for item, clip in zip(items, decoded):
        assert len(clip["colours"]) == 6
        assert_no_touching(clip["centres"], 32)
        assert_relations(item, clip["centres"])


# ----------------------------------------------------------------------------------------------
# Motion


@pytest.mark.parametrize("size, frames, count", [(32, 8, 200), (64, 24, 30)])
def test_motion_is_constant_velocity_reflected_at_the_walls(size, frames, count):
    r = SPEC_RADIUS[size]
    lo, hi, vmax = r, size - 1 - r, 0.04 * size
    _, decoded = sample(size, frames, count)
    starts, velocities, bounced, fast = [], [], 0, 0
    for clip in decoded:
        centres = clip["centres"]
        assert centres.min() >= lo and centres.max() <= hi, "centres stay in [r, S-1-r]"
        starts.append(centres[:, 0].ravel())
        for track in centres.transpose(0, 2, 1).reshape(-1, frames):  # one row per (object, axis)
            vertices = feasible_motions(track, lo, hi, vmax)
            assert len(vertices) > 0, f"not a bouncing constant-velocity path: {track.tolist()}"
            velocities.append(vertices[:, 1].mean())
            bounced += len(feasible_motions(track, lo, hi, vmax, reflect=False)) == 0
            fast += len(feasible_motions(track, lo, hi, 0.8 * vmax)) == 0
    starts, velocities = np.concatenate(starts), np.array(velocities)
    assert starts.min() <= lo + 2 and starts.max() >= hi - 2, "starts cover [r, S-1-r]"
    # the checks above are not vacuous: paths do bounce, and some need a speed above 0.8 vmax (with 8
    # rounded frames a speed is known to ~0.13 vmax only, so few paths rule out every slower one)
    assert bounced >= 0.05 * len(velocities) and fast >= 0.02 * len(velocities), (bounced, fast)
    # velocity uniform in [-vmax, vmax]: both signs, about half slower than vmax / 2, every quarter used
    assert abs(np.mean(velocities > 0) - 0.5) < 0.1
    assert abs(np.mean(np.abs(velocities) < vmax / 2) - 0.5) < 0.12
    quarters = np.histogram(velocities, bins=4, range=(-vmax, vmax))[0]
    assert (np.abs(quarters / len(velocities) - 0.25) < 0.1).all(), quarters


def assert_no_touching(centres: np.ndarray, size: int) -> None:
    gap = 2 * SPEC_RADIUS[size] + 2
    for i, j in itertools.combinations(range(len(centres)), 2):
        chebyshev = np.abs(centres[i] - centres[j]).max(axis=1)  # (T,)
        assert (chebyshev >= gap).all(), f"objects {i} and {j} touch: {chebyshev.min()} < {gap}"


@pytest.mark.parametrize("size, frames, count", [(32, 8, 200), (64, 24, 30), (128, 8, 12)])
def test_no_two_objects_touch_in_any_frame(size, frames, count):
    _, decoded = sample(size, frames, count)
    closest = min(
        np.abs(c["centres"][i] - c["centres"][j]).max(axis=1).min()
        for c in decoded
        for i, j in itertools.combinations(range(len(c["centres"])), 2)
    )
    for clip in decoded:
        assert_no_touching(clip["centres"], size)
    assert closest <= 2 * SPEC_RADIUS[size] + 4, "some objects pass close: the rule is exercised"


# ----------------------------------------------------------------------------------------------
# Relations and boxes


def spec_predicate(dx: int, dy: int) -> str:
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def assert_relations(item: dict, centres: np.ndarray) -> list[tuple[int, int]]:
    """Each frame has one triple per pair i < j with the spec's predicate; returns the (dx, dy) seen."""
    k = len(centres)
    pairs = list(itertools.combinations(range(k), 2))
    seen = []
    for t, graph in enumerate(item["graphs"]):
        triples = graph.triples.tolist()
        assert len(triples) == k * (k - 1) // 2
        assert sorted((s, o) for s, _, o in triples) == pairs, "exactly one triple per pair i < j"
        for s, p, o in triples:
            dx, dy = (centres[o, t] - centres[s, t]).tolist()
            assert SPEC_PREDICATES[p] == spec_predicate(dx, dy), (t, s, o, dx, dy, SPEC_PREDICATES[p])
            seen.append((dx, dy))
    return seen


def test_relations_follow_the_spec_rule_from_the_pixels():
    items, decoded = sample(32, 8, 200)
    seen, predicates = [], set()
    for item, clip in zip(items, decoded):
        seen += assert_relations(item, clip["centres"])
        predicates.update(p for graph in item["graphs"] for p in graph.triples[:, 1].tolist())
    assert predicates == {0, 1, 2, 3}
    assert any(abs(dx) == abs(dy) for dx, dy in seen), "diagonal ties occur (|dx| = |dy| is horizontal)"


@pytest.mark.parametrize("size, count", [(32, 120), (33, 60), (128, 12)])
def test_boxes_are_normalised_and_enclose_the_object(size, count):
    items, decoded = sample(size, 8, count)
    r = SPEC_RADIUS[size]
    for item, clip in zip(items, decoded):
        for t, graph in enumerate(item["graphs"]):
            boxes = graph.boxes.numpy().astype(np.float64)  # (K, 4) x0 y0 x1 y1
            assert boxes.shape == (len(clip["colours"]), 4)
            assert (boxes >= 0).all() and (boxes <= 1).all()
            cx, cy = clip["centres"][:, t, 0], clip["centres"][:, t, 1]
            # object pixels span [c - r, c + r] inclusive, i.e. the area [c - r, c + r + 1) in pixel units
            px = np.stack([cx - r, cy - r, cx + r + 1, cy + r + 1], axis=1)
            tol = 1e-5
            assert (boxes[:, :2] * size <= px[:, :2] + tol).all() and (boxes[:, 2:] * size >= px[:, 2:] - tol).all()
            assert np.abs(boxes * size - px).max() <= 1.0, "boxes are tight to within a pixel"


# ----------------------------------------------------------------------------------------------
# Determinism and splits

DIGEST_SCRIPT = """
import hashlib, sys
from sg2video.data.shapes import ShapesWorld
world = ShapesWorld(size=32, frames=8, seed=3)
for item in world.clips("val", [0, 7, 1999]):
    h = hashlib.sha256(item["video"].numpy().tobytes())
    for g in item["graphs"]:
        h.update(g.objs.numpy().tobytes()); h.update(g.triples.numpy().tobytes()); h.update(g.boxes.numpy().tobytes())
    print(h.hexdigest())
"""


def test_same_seed_split_index_gives_the_same_bytes_everywhere():
    first = [digest(item) for item in ShapesWorld(size=32, frames=8, seed=3).clips("val", [0, 7, 1999])]
    again = [digest(item) for item in ShapesWorld(size=32, frames=8, seed=3).clips("val", [1999, 0, 7])]
    assert again == [first[2], first[0], first[1]], "a clip does not depend on its batch or its neighbours"
    out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == first, "a fresh process renders the same bytes"
    # the bytes themselves, pinned: a change here changes the dataset (bump the contract instead)
    world = ShapesWorld(size=32, frames=8, seed=0)
    pinned = hashlib.sha256(b"".join(digest(item).encode() for item in world.clips("train", range(16)))).hexdigest()
    assert pinned == PINNED_TRAIN_0_15


PINNED_TRAIN_0_15 = "a92c932df5364f8ea8cba0dc686aab141eabe25e2ef269030af4b79c1eafecd8"


def test_different_split_index_or_seed_gives_a_different_clip():
    base = ShapesWorld(size=32, frames=8, seed=0)
    other_seed = ShapesWorld(size=32, frames=8, seed=1)
    reference = digest(base.clips("train", [5])[0])
    assert digest(base.clips("val", [5])[0]) != reference
    assert digest(base.clips("test", [5])[0]) != reference
    assert digest(base.clips("train", [6])[0]) != reference
    assert digest(other_seed.clips("train", [5])[0]) != reference


def test_splits_share_no_clips():
    world = ShapesWorld(size=32, frames=8)
    hashes = {}
    for split in ("train", "val", "test"):
        hashes[split] = {digest(item) for start in range(0, 2000, 500) for item in world.clips(split, range(start, start + 500))}
        assert len(hashes[split]) == 2000, f"{split}: repeated clips"
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"]


# ----------------------------------------------------------------------------------------------
# Dataset, batching, collation


def assert_same_item(a: dict, b: dict) -> None:
    assert torch.equal(a["video"], b["video"]) and a["source"] == b["source"]
    assert len(a["graphs"]) == len(b["graphs"])
    for ga, gb in zip(a["graphs"], b["graphs"]):
        assert torch.equal(ga.objs, gb.objs) and torch.equal(ga.triples, gb.triples) and torch.equal(ga.boxes, gb.boxes)


def test_getitems_equals_getitem():
    dataset = ShapesDataset("val", length=100, size=32, frames=6, seed=2)
    indices = [17, 0, 99, 17, 3]
    batch = dataset.__getitems__(indices)
    assert len(batch) == len(indices)
    for index, item in zip(indices, batch):
        assert_same_item(item, dataset[index])
        assert item["source"] == {"dataset": "shapes", "split": "val", "index": index, "seed": 2}


def test_collate_and_dataloader_give_model_layout():
    dataset = ShapesDataset("train", length=64, size=32, frames=5)
    items = [dataset[i] for i in range(4)]
    batch = collate_clips(items)
    assert tuple(batch.video.shape) == (4, 3, 5, 32, 32) and batch.video.dtype == torch.float32
    assert batch.video.min() == -1.0 and batch.video.max() == 1.0
    for b, item in enumerate(items):
        expected = item["video"].permute(1, 0, 2, 3).double() / 127.5 - 1.0  # (3, T, H, W)
        assert torch.allclose(batch.video[b].double(), expected, atol=1e-6)
    graphs = batch.graphs
    assert graphs.num_graphs == 4 * 5
    per_graph = [g for item in items for g in item["graphs"]]  # b-major: clip 0's frames first
    assert graphs.objects_per_graph().tolist() == [g.num_objects for g in per_graph]
    for packed, original in zip(graphs.unpack(), per_graph):
        assert torch.equal(packed.objs, original.objs) and torch.equal(packed.triples, original.triples)
        assert torch.equal(packed.boxes, original.boxes)
    # packed triples index the concatenated objects of their own graph
    starts = np.cumsum([0] + [g.num_objects for g in per_graph])
    owner = graphs.triple_to_graph.numpy()
    assert (graphs.triples[:, 0].numpy() >= starts[owner]).all() and (graphs.triples[:, 2].numpy() < starts[owner + 1]).all()
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_clips, num_workers=0)
    first = next(iter(loader))
    assert torch.equal(first.video, batch.video) and torch.equal(first.graphs.triples, graphs.triples)

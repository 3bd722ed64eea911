"""Does a video show its scene graph? The shapes-world checker (shared/specs/shapes_world.md, "Checking a video").

Detection, for every frame and every palette colour at once (numpy broadcasting, no pixel loops):
1. A pixel is background when every channel is below `BACKGROUND_LEVEL`. Otherwise it is scaled so its
   brightest channel is 255 and given the nearest palette colour, if that colour lies within
   `COLOUR_TOLERANCE` (Euclidean, RGB units). Scaling first makes a dimmed pixel (a blurred edge: colour mixed
   with black) keep its colour, so half-bright orange (128, 64, 0) stays orange rather than falling halfway to
   red. Palette colours are at least 127 apart after scaling (orange vs red / yellow), so a tolerance under
   63.5 can never name two colours: the assignment is unambiguous.
2. Pixels count with a weight, their brightest channel / 255 (1 for every rendered pixel), so the masks are
   soft: a blurred edge pixel, colour mixed with black, counts in part, and a halo of dim pixels round a
   blurred circle does not turn it into a square. A colour's centre is the (weighted) centre of mass of its
   pixels. Each shape template is placed where its own centroid lands on that centre (the triangle's
   centroid sits about r/3 below its nominal centre), rounded to whole pixels, and scored by soft IoU
   (sum of min / sum of max) with *all* of the colour's pixels in the frame, so a smear or a spray of noise
   scores low whatever the template. The best template names the shape.
3. The colour is detected when its pixel mass is at least `MIN_PIXEL_FRACTION` of the smallest template's
   area and the best IoU is at least `MIN_IOU`. An exact object scores IoU 1; one dimmed to 60% still
   passes, one at 40% does not (its colour is no longer near the palette's).

Relations use the detected object's nominal centre (centre of mass minus the detected template's centroid
offset; exact for rendered clips). A triple `(s, p, o)` holds when both colours are detected, the
displacement `o - s` has the predicate's sign on the predicate's axis, and that axis is not clearly the
minor one: `|d_axis| >= AXIS_RATIO * |d_other|`. The world's own rule puts the predicate on the major axis
(`|d_axis| >= |d_other|`); the slack admits generated objects a bit off the diagonal's right side while
still rejecting a pair whose displacement points mostly along the other axis.

Frames come as uint8 (T, H, W, 3) (or (T, 3, H, W), as dataset items hold them), numpy or torch.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from sg2video.data.shapes import COLOURS, PALETTE, PREDICATES, SHAPES, object_radius, shapes_vocab, template_masks
from sg2video.graphs import SceneGraph, Vocab
from sg2video.video_io import as_thwc_uint8

BACKGROUND_LEVEL = 60  # a pixel with every channel below this is background
COLOUR_TOLERANCE = 48.0  # max distance to a palette colour after brightness scaling (< 63.5: unambiguous)
MIN_PIXEL_FRACTION = 0.5  # of the smallest template's area
MIN_IOU = 0.5  # best template IoU for a detection; uniform noise stays under 0.05 (measured at S = 32..128)
AXIS_RATIO = 0.5  # the predicate's axis displacement must be at least this share of the other axis's

NUM_COLOURS = len(COLOURS)
# predicate name -> (axis: 0 = x, 1 = y; sign of object centre minus subject centre on that axis)
PREDICATE_RULES: dict[str, tuple[int, int]] = {
    "left of": (0, 1),
    "right of": (0, -1),
    "above": (1, 1),
    "below": (1, -1),
}
assert set(PREDICATE_RULES) == set(PREDICATES)


# ----------------------------------------------------------------------------------------------
# Detection


@dataclass
class Detections:
    """What `detect_objects` found; axes (T, C) are frame and palette colour (C = 8, order of COLOURS)."""

    detected: np.ndarray  # (T, C) bool
    centre: np.ndarray  # (T, C, 2) float (x, y): centre of mass of the colour's pixels; NaN without pixels
    position: np.ndarray  # (T, C, 2) float (x, y): nominal object centre implied by the best template
    shape: np.ndarray  # (T, C) int: best template, index into SHAPES
    score: np.ndarray  # (T, C) float: IoU of the best template with the colour's pixels (0 without pixels)
    pixels: np.ndarray  # (T, C) int: pixels assigned to the colour
    mass: np.ndarray  # (T, C) float: their summed weights (brightness / 255)
    present: np.ndarray | None = None  # (T, C) bool: enough of the colour for an object, whatever its shape


def _as_thwc(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    frames = as_thwc_uint8(frames)
    if frames.shape[1] != frames.shape[2]:
        side = f"{frames.shape[1]}x{frames.shape[2]}"
        raise ValueError(f"frames must be square (the object size comes from the side), got {side}")
    return frames


def colour_labels(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Palette index of every pixel of uint8 (T, H, W, 3) frames, -1 for background or no colour: (T, H, W);
    and each pixel's weight, its brightest channel / 255 (T, H, W) float32."""
    pixels = frames.astype(np.float32)
    peak = pixels.max(axis=-1)
    scaled = pixels * (255.0 / np.maximum(peak, 1.0))[..., None]
    palette = PALETTE.astype(np.float32)  # (C, 3)
    # squared distance to every palette colour, |a|^2 - 2 a.b + |b|^2, without a (T, H, W, C, 3) temporary
    dist2 = (scaled * scaled).sum(-1)[..., None] - 2.0 * scaled @ palette.T + (palette * palette).sum(-1)
    nearest = dist2.argmin(axis=-1)
    close = np.take_along_axis(dist2, nearest[..., None], axis=-1)[..., 0] <= COLOUR_TOLERANCE**2
    return np.where((peak >= BACKGROUND_LEVEL) & close, nearest, -1), peak / 255.0


@functools.lru_cache(maxsize=8)
def _templates(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape templates in a (2r+1)^2 window centred on the nominal centre, and each one's centroid offset.

    Returns bool (S_shapes, side, side) and float (S_shapes, 2) (x, y) offsets of the centroid from the centre.
    """
    side = 2 * radius + 1
    masks = template_masks(np.array(radius), np.array(radius), radius, side)  # (3, side, side)
    ys, xs = np.mgrid[0:side, 0:side]
    area = masks.sum(axis=(1, 2))
    offsets = np.stack([(masks * xs).sum((1, 2)) / area, (masks * ys).sum((1, 2)) / area], axis=1) - radius
    return masks, offsets


def detect_objects(frames: np.ndarray | torch.Tensor) -> Detections:
    """Find each palette colour's object in every frame (see the module docstring for the rule)."""
    frames = _as_thwc(frames)
    T, S = frames.shape[0], frames.shape[1]
    radius = object_radius(S)
    templates, offsets = _templates(radius)  # (K, w, w), (K, 2)
    areas = templates.sum(axis=(1, 2))  # (K,)

    labels, weight = colour_labels(frames)  # (T, S, S)
    # soft masks: a pixel counts for its colour with its brightness, so a blurred edge (colour mixed with
    # black) counts in part and a rendered pixel fully
    is_colour = labels[:, None] == np.arange(NUM_COLOURS)[None, :, None, None]
    masks = np.where(is_colour, weight[:, None], 0.0)  # (T, C, S, S)
    pixels = (masks > 0).sum(axis=(2, 3))  # (T, C)
    mass = masks.sum(axis=(2, 3), dtype=np.float64)  # (T, C)
    coords = np.arange(S, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = masks.sum(axis=2, dtype=np.float64) @ coords / mass  # column sums . x
        cy = masks.sum(axis=3, dtype=np.float64) @ coords / mass  # row sums . y
    centre = np.stack([cx, cy], axis=-1)  # (T, C, 2), NaN where no pixels

    # place every template with its centroid on the centre of mass: (T, C, K, 2) integer nominal centres
    nominal = np.floor(np.nan_to_num(centre)[:, :, None, :] - offsets + 0.5).astype(np.int64)
    pad = 2 * radius + 1
    nominal = np.clip(nominal, radius - pad, S - 1 - radius + pad)
    padded = np.pad(masks, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    window = np.arange(-radius, radius + 1)
    ys = (nominal[..., 1] + pad)[..., None, None] + window[:, None]  # (T, C, K, w, 1)
    xs = (nominal[..., 0] + pad)[..., None, None] + window[None, :]  # (T, C, K, 1, w)
    t_idx = np.arange(T)[:, None, None, None, None]
    c_idx = np.arange(NUM_COLOURS)[None, :, None, None, None]
    inside = padded[t_idx, c_idx, ys, xs]  # (T, C, K, w, w): the colour's pixels under each placed window
    overlap = (inside * templates).sum(axis=(3, 4), dtype=np.float64)  # (T, C, K)
    iou = overlap / (mass[..., None] + areas - overlap)  # soft IoU: sum min / sum max, weights in [0, 1]

    shape = iou.argmax(axis=-1)  # (T, C)
    score = np.take_along_axis(iou, shape[..., None], axis=-1)[..., 0]
    present = mass >= MIN_PIXEL_FRACTION * areas.min()
    detected = present & (score >= MIN_IOU)
    position = centre - offsets[shape]
    return Detections(detected, centre, position, shape, score, pixels, mass, present)


# ----------------------------------------------------------------------------------------------
# Checking a video against its graphs


def predicate_holds(predicate: str | Sequence[str], displacement: np.ndarray) -> np.ndarray:
    """Whether object-minus-subject centre displacements (..., 2) (x, y) satisfy the predicates (the rule above)."""
    names = [predicate] if isinstance(predicate, str) else list(predicate)
    unknown = [n for n in names if n not in PREDICATE_RULES]
    if unknown:
        raise ValueError(f"no compliance rule for predicate {unknown[0]!r} (known: {', '.join(PREDICATE_RULES)})")
    axis = np.array([PREDICATE_RULES[n][0] for n in names])
    sign = np.array([PREDICATE_RULES[n][1] for n in names])
    if isinstance(predicate, str):
        axis, sign = axis[0], sign[0]
    displacement = np.asarray(displacement, dtype=np.float64)
    along = np.take_along_axis(displacement, np.broadcast_to(axis, displacement.shape[:-1])[..., None], -1)[..., 0]
    across = np.take_along_axis(displacement, np.broadcast_to(1 - axis, displacement.shape[:-1])[..., None], -1)[..., 0]
    return (along * sign > 0) & (np.abs(along) >= AXIS_RATIO * np.abs(across))


def _class_tables(vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Colour and shape index of every object class of `vocab` ("<colour> <shape>"), -1 when not a shape."""
    colour_index = {name: i for i, (name, _) in enumerate(COLOURS)}
    shape_index = {name: i for i, name in enumerate(SHAPES)}
    colours = np.full(vocab.num_objects, -1, dtype=np.int64)
    shapes = np.full(vocab.num_objects, -1, dtype=np.int64)
    for i, name in enumerate(vocab.objects):
        colour, _, shape = name.rpartition(" ")
        if colour in colour_index and shape in shape_index:
            colours[i], shapes[i] = colour_index[colour], shape_index[shape]
    return colours, shapes


_DEFAULT_VOCAB = shapes_vocab()


@dataclass
class ComplianceResult:
    """Compliance of one video with its per-frame graphs. Accuracies are NaN when there is nothing to count.

    Per-frame arrays (T,) are counts, so a timeline segment's accuracy is a sum ratio (see `over_frames`).
    """

    object_accuracy: float
    relation_accuracy: float
    extra_objects: float  # mean per frame
    per_predicate: dict[str, float]
    object_correct_per_frame: np.ndarray  # (T,) int
    objects_per_frame: np.ndarray  # (T,) int
    relation_correct_per_frame: np.ndarray  # (T,) int
    relations_per_frame: np.ndarray  # (T,) int
    extra_objects_per_frame: np.ndarray  # (T,) int
    per_predicate_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (correct, total)
    detections: Detections | None = None
    # share of (frame, object) pairs whose colour is there in object quantity, whatever its shape or place: a
    # diagnostic below object accuracy (a model that has learned which colours a graph names, not yet shapes)
    colour_accuracy: float = math.nan
    # (frame, triple) pairs whose two objects are both detected, and how many of them hold: relation accuracy
    # among placed pairs, which tells "objects in the wrong places" from "objects not drawn at all"
    relations_detected: int = 0
    relations_detected_correct: int = 0

    def over_frames(self, start: int, end: int) -> dict[str, float]:
        """The three headline metrics over frames [start, end) (e.g. one timeline segment)."""
        f = slice(start, end)
        return {
            "object_accuracy": _ratio(self.object_correct_per_frame[f].sum(), self.objects_per_frame[f].sum()),
            "relation_accuracy": _ratio(self.relation_correct_per_frame[f].sum(), self.relations_per_frame[f].sum()),
            "extra_objects": float(self.extra_objects_per_frame[f].mean()) if end > start else math.nan,
        }


def _ratio(correct: float, total: float) -> float:
    return float(correct) / float(total) if total else math.nan


def check_video(
    frames: np.ndarray | torch.Tensor,
    graphs: SceneGraph | Sequence[SceneGraph],
    vocab: Vocab | None = None,
) -> ComplianceResult:
    """Score frames (T, H, W, 3) uint8 against their graphs: one SceneGraph per frame, or one for all frames.

    `vocab` names the graphs' object classes ("<colour> <shape>") and predicates; default: the shapes world's.
    """
    vocab = vocab or _DEFAULT_VOCAB
    frames = _as_thwc(frames)
    T = frames.shape[0]
    if isinstance(graphs, SceneGraph):
        graphs = [graphs] * T
    if len(graphs) != T:
        raise ValueError(f"need one graph per frame: {T} frames but {len(graphs)} graphs")
    class_colour, class_shape = _class_tables(vocab) if vocab is not _DEFAULT_VOCAB else _DEFAULT_TABLES

    # pack the frames' graphs: one row per (frame, object) and per (frame, triple)
    obj_frame = np.concatenate([np.full(g.num_objects, t) for t, g in enumerate(graphs)]).astype(np.int64)
    objs = np.concatenate([g.objs.numpy() for g in graphs]).astype(np.int64)
    tri_frame = np.concatenate([np.full(g.num_triples, t) for t, g in enumerate(graphs)]).astype(np.int64)
    triples = np.concatenate([g.triples.numpy() for g in graphs]).reshape(-1, 3).astype(np.int64)
    bad = objs[(objs < 0) | (objs >= len(class_colour))]
    if bad.size or (class_colour[objs] < 0).any():
        name = vocab.objects[int(objs[class_colour[objs] < 0][0])] if not bad.size else f"id {int(bad[0])}"
        raise ValueError(f"object class {name!r} is not a shapes-world class \"<colour> <shape>\"")
    obj_colour, obj_shape = class_colour[objs], class_shape[objs]

    det = detect_objects(frames)
    object_ok = det.detected[obj_frame, obj_colour] & (det.shape[obj_frame, obj_colour] == obj_shape)

    # triples: subject / object indices are local to each frame's graph; rebase into the packed rows
    obj_start = np.concatenate([[0], np.cumsum([g.num_objects for g in graphs])[:-1]]).astype(np.int64)
    subj_colour = obj_colour[obj_start[tri_frame] + triples[:, 0]]
    targ_colour = obj_colour[obj_start[tri_frame] + triples[:, 2]]
    pred_names = [vocab.predicates[p] for p in triples[:, 1].tolist()]
    displacement = det.position[tri_frame, targ_colour] - det.position[tri_frame, subj_colour]
    both = det.detected[tri_frame, subj_colour] & det.detected[tri_frame, targ_colour]
    relation_ok = both & predicate_holds(pred_names, np.nan_to_num(displacement)) if len(pred_names) else both

    named = np.zeros((T, NUM_COLOURS), dtype=bool)
    named[obj_frame, obj_colour] = True
    extra_per_frame = (det.detected & ~named).sum(axis=1)

    per_predicate_counts: dict[str, tuple[int, int]] = {}
    pred_array = np.array(pred_names, dtype=object)
    for name in dict.fromkeys(pred_names):
        rows = pred_array == name
        per_predicate_counts[name] = (int(relation_ok[rows].sum()), int(rows.sum()))

    return ComplianceResult(
        object_accuracy=_ratio(object_ok.sum(), len(object_ok)),
        relation_accuracy=_ratio(relation_ok.sum(), len(relation_ok)),
        extra_objects=float(extra_per_frame.mean()),
        per_predicate={name: c / n for name, (c, n) in per_predicate_counts.items()},
        object_correct_per_frame=np.bincount(obj_frame, weights=object_ok, minlength=T).astype(np.int64),
        objects_per_frame=np.bincount(obj_frame, minlength=T),
        relation_correct_per_frame=np.bincount(tri_frame, weights=relation_ok, minlength=T).astype(np.int64),
        relations_per_frame=np.bincount(tri_frame, minlength=T),
        extra_objects_per_frame=extra_per_frame,
        per_predicate_counts=per_predicate_counts,
        detections=det,
        colour_accuracy=_ratio(det.present[obj_frame, obj_colour].sum(), len(obj_frame)),
        relations_detected=int(both.sum()),
        relations_detected_correct=int(relation_ok.sum()),
    )


_DEFAULT_TABLES = _class_tables(_DEFAULT_VOCAB)


def score_videos(
    videos: Sequence[np.ndarray | torch.Tensor],
    graph_lists: Sequence[SceneGraph | Sequence[SceneGraph]],
    vocab: Vocab | None = None,
) -> dict:
    """Compliance over many videos.

    `object_accuracy`, `relation_accuracy`, `extra_objects`: means over videos (a video without triples does
    not enter the relation mean; NaN when no video has any). `per_predicate`: pooled over all (frame, triple)
    pairs of that predicate, since one video may hold only a few. `num_videos`: how many were scored.
    """
    if len(videos) != len(graph_lists):
        raise ValueError(f"need one graph list per video: {len(videos)} videos but {len(graph_lists)} graph lists")
    results = [check_video(v, g, vocab) for v, g in zip(videos, graph_lists)]

    def mean(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    pooled: dict[str, list[int]] = {}
    for result in results:
        for name, (correct, total) in result.per_predicate_counts.items():
            counts = pooled.setdefault(name, [0, 0])
            counts[0] += correct
            counts[1] += total
    return {
        "object_accuracy": mean([r.object_accuracy for r in results]),
        "relation_accuracy": mean([r.relation_accuracy for r in results]),
        "extra_objects": mean([r.extra_objects for r in results]),
        "colour_accuracy": mean([r.colour_accuracy for r in results]),
        # pooled over every (frame, triple) whose two objects were both detected
        "relation_accuracy_detected": _ratio(sum(r.relations_detected_correct for r in results),
                                             sum(r.relations_detected for r in results)),
        "per_predicate": {name: pooled[name][0] / pooled[name][1] for name in PREDICATES if name in pooled},
        "num_videos": len(results),
    }


def graph_colours(graphs: SceneGraph | Sequence[SceneGraph], vocab: Vocab | None = None) -> np.ndarray:
    """Palette index of each object of a clip's graph ("<colour> <shape>" classes; a clip's frames share them)."""
    graph = graphs if isinstance(graphs, SceneGraph) else graphs[0]
    class_colour, _ = _class_tables(vocab) if vocab is not None else _DEFAULT_TABLES
    colours = class_colour[graph.objs.numpy()]
    if (colours < 0).any():
        raise ValueError("object classes must be shapes-world classes \"<colour> <shape>\"")
    return colours


def object_moves(frames: np.ndarray | torch.Tensor, graphs: SceneGraph | Sequence[SceneGraph],
                 vocab: Vocab | None = None) -> np.ndarray:
    """How far each of the graph's objects moves from one frame to the next, in pixels (nominal centres), for
    every pair of consecutive frames where it is detected in both: flat float array."""
    det = detect_objects(frames)
    colours = graph_colours(graphs, vocab)
    both = det.detected[1:, colours] & det.detected[:-1, colours]  # (T - 1, K)
    step = np.linalg.norm(det.position[1:, colours] - det.position[:-1, colours], axis=-1)
    return step[both]


def identity_counts(frames: np.ndarray | torch.Tensor, graphs: SceneGraph | Sequence[SceneGraph],
                    vocab: Vocab | None = None) -> dict[str, int]:
    """Whether each of the graph's objects stays itself from one frame to the next, as the world keeps it: same
    colour there, same shape. Counted over consecutive frame pairs (t, t + 1) and the graph's objects:
    `pairs`: the object is there (its colour in object quantity) in at least one of the two frames;
    `popped`: there in one frame and not in the other (pops in or out); `both`: detected in both frames;
    `shape_changed`: detected in both with different shapes; `kept`: detected in both with the same shape."""
    det = detect_objects(frames)
    colours = graph_colours(graphs, vocab)
    present, detected, shape = det.present[:, colours], det.detected[:, colours], det.shape[:, colours]
    both = detected[1:] & detected[:-1]
    same = shape[1:] == shape[:-1]
    return {"pairs": int((present[1:] | present[:-1]).sum()), "popped": int((present[1:] ^ present[:-1]).sum()),
            "both": int(both.sum()), "shape_changed": int((both & ~same).sum()), "kept": int((both & same).sum())}


def identity_metrics(videos: Sequence[np.ndarray | torch.Tensor],
                     graph_lists: Sequence[SceneGraph | Sequence[SceneGraph]], vocab: Vocab | None = None) -> dict:
    """Pooled `identity_counts` over videos: `kept` (share of the pairs where an object is there in which it is
    detected in both frames with the same shape; the world's own clips: 1), `pop_rate` (share of those pairs
    where it pops in or out), `shape_change_rate` (share of the pairs detected in both where its shape changes)."""
    total = {"pairs": 0, "popped": 0, "both": 0, "shape_changed": 0, "kept": 0}
    for video, graphs in zip(videos, graph_lists):
        for name, count in identity_counts(video, graphs, vocab).items():
            total[name] += count
    return {"kept": _ratio(total["kept"], total["pairs"]), "pop_rate": _ratio(total["popped"], total["pairs"]),
            "shape_change_rate": _ratio(total["shape_changed"], total["both"]), "pairs": total["pairs"]}

"""Semantic manipulation (SGDiff's check), model-agnostic: change one part of a scene graph, generate again,
and see whether the change shows while the rest stays.

1. `manipulate_graph` changes a clip's per-frame graphs in one place, in every frame:
   - `relation`: one object pair's predicate becomes its opposite ("left of" <-> "right of", "above" <->
     "below"); every triple of that pair (either direction) flips. The pair is drawn among those whose flip
     leaves every frame's relations drawable (`relations_satisfiable`: some placement of the centres satisfies
     them all by the world's rule), since no model can show "A left of B, B left of C, C left of A"; only when
     no pair qualifies is any pair taken;
   - `object`: one object's class becomes a class whose colour no other object has (any shape), so the
     shapes-world checker can tell it apart.
   The graphs keep their rows (same objects and triples, in the same order), so outcomes before and after
   line up row by row. It returns the new graphs and a `Change`: which rows changed and which stayed.
2. `element_outcomes` says, for one video and its per-frame graphs, which (frame, triple) and (frame,
   object) rows the video satisfies: the compliance rule (sg2video.eval.compliance), per row.
3. `score_manipulation` compares outcomes of the video made from the original graphs (judged against them)
   with those of the video made from the manipulated graphs (judged against those).

Rows are packed frame-major: frame 0's triples (or objects), then frame 1's, and so on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from sg2video.data.shapes import COLOURS, SHAPES, shapes_vocab
from sg2video.eval.compliance import detect_objects, predicate_holds
from sg2video.graph_json import parse_graph
from sg2video.graphs import SceneGraph, Vocab, iter_triples_named

__all__ = [
    "OPPOSITE",
    "Selection",
    "Change",
    "Outcomes",
    "manipulate_graph",
    "element_outcomes",
    "score_manipulation",
]

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
KINDS = ("relation", "object")

_COLOUR_INDEX = {name: i for i, (name, _) in enumerate(COLOURS)}
_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


@dataclass
class Selection:
    """Some rows of a clip's per-frame graphs: bool masks over the packed (frame, triple) and (frame, object)
    rows (frame-major, see the module docstring)."""

    triples: np.ndarray  # (N_tri,) bool
    objects: np.ndarray  # (N_obj,) bool

    @property
    def count(self) -> int:
        return int(self.triples.sum() + self.objects.sum())


@dataclass
class Change:
    """What `manipulate_graph` did: `changed` rows, `unchanged` rows (what must still hold; for an object
    change, triples that involve the changed object are in neither), and a line for people."""

    kind: str
    changed: Selection
    unchanged: Selection
    description: str


@dataclass
class Outcomes:
    """Whether a video satisfies each packed row of its graphs (`element_outcomes`)."""

    triples: np.ndarray  # (N_tri,) bool
    objects: np.ndarray  # (N_obj,) bool


# ----------------------------------------------------------------------------------------------
# Changing a graph


def _frame_graphs(
    graphs: SceneGraph | Sequence[SceneGraph] | Mapping[str, Any], vocab: Vocab, num_frames: int | None
) -> list[SceneGraph]:
    if isinstance(graphs, SceneGraph):
        return [graphs]
    if isinstance(graphs, Mapping):  # graph JSON (shared/specs/graph_json.md)
        return parse_graph(graphs, vocab).frame_graphs(num_frames)
    graphs = list(graphs)
    if not graphs:
        raise ValueError("no graphs to manipulate")
    return graphs


def _colour_shape(name: str) -> tuple[int, int] | None:
    """(colour index, shape index) of a shapes-world class name "<colour> <shape>", else None."""
    colour, _, shape = name.rpartition(" ")
    if colour in _COLOUR_INDEX and shape in _SHAPE_INDEX:
        return _COLOUR_INDEX[colour], _SHAPE_INDEX[shape]
    return None


def relations_satisfiable(graph: SceneGraph, vocab: Vocab, iterations: int = 400) -> bool:
    """Whether some placement of the objects' centres satisfies every triple of `graph` by the world's rule
    (shared/specs/shapes_world.md: the predicate's sign on its axis, that axis the major one).

    Each triple is two linear constraints on the centres, `sign * d_axis >= |d_other|` and `sign * d_axis >= 1`
    (strictness; the rule is scale-free); the squared hinge of their violations is convex and reaches 0 exactly
    when they can all hold, so gradient descent from the origin decides it. Predicates without a rule: True.
    """
    from sg2video.eval.compliance import PREDICATE_RULES

    names = [vocab.predicates[p] for p in graph.triples[:, 1].tolist()]
    if not names or any(n not in PREDICATE_RULES for n in names):
        return True
    K = graph.num_objects
    rows = []  # constraint rows over the flattened centres (x0, y0, x1, y1, ...) and their lower bounds
    for (s, _, o), name in zip(graph.triples.tolist(), names):
        axis, sign = PREDICATE_RULES[name]
        along, across = np.zeros(2 * K), np.zeros(2 * K)
        along[2 * o + axis], along[2 * s + axis] = sign, -sign
        across[2 * o + 1 - axis], across[2 * s + 1 - axis] = 1.0, -1.0
        rows += [(along - across, 0.0), (along + across, 0.0), (along, 1.0)]
    A = np.array([r for r, _ in rows])
    b = np.array([v for _, v in rows])
    z = np.zeros(2 * K)
    step = 1.0 / max(1.0, float(np.linalg.norm(A, 2)) ** 2)
    for _ in range(iterations):
        gap = np.maximum(b - A @ z, 0.0)
        if gap.max() < 1e-6:
            return True
        z += step * A.T @ gap
    return bool(np.maximum(b - A @ z, 0.0).max() < 1e-3)


def _flip_relation(graphs: list[SceneGraph], vocab: Vocab, rng: np.random.Generator) -> tuple[list[SceneGraph], Change]:
    flippable = {vocab.predicate_id(name): vocab.predicate_id(other) for name, other in OPPOSITE.items()}
    flippable = {p: q for p, q in flippable.items() if p is not None and q is not None}
    pairs = sorted(
        {(min(s, o), max(s, o)) for g in graphs for s, p, o in g.triples.tolist() if p in flippable}
    )  # fmt: skip
    if not pairs:
        raise ValueError(f"no relation to flip: no triple has a predicate among {', '.join(OPPOSITE)}")
    drawable = [pair for pair in pairs if all(relations_satisfiable(g, vocab) for g in _flipped(graphs, pair, flippable))]
    choices = drawable or pairs
    pair = choices[int(rng.integers(len(choices)))]

    new_graphs, changed_rows, frames_changed = [], [], 0
    first: tuple[SceneGraph, int] | None = None  # (graph, triple) of the first change, for the description
    for graph in graphs:
        triples = graph.triples.clone()
        hit = [(min(s, o), max(s, o)) == pair and p in flippable for s, p, o in triples.tolist()]
        for k in np.flatnonzero(hit).tolist():
            triples[k, 1] = flippable[int(triples[k, 1])]
            first = first or (graph, k)
        changed_rows.extend(hit)
        frames_changed += any(hit)
        new_graphs.append(SceneGraph(graph.objs, triples, graph.boxes))
    assert first is not None
    subject, predicate, target = list(iter_triples_named(vocab, first[0]))[first[1]]
    where = f"in {frames_changed} of {len(graphs)} frames"
    description = f"relation: {subject} {predicate} {target} -> {OPPOSITE[predicate]} ({where})"
    changed = np.array(changed_rows, dtype=bool)
    num_objects = sum(g.num_objects for g in graphs)
    return new_graphs, Change(
        kind="relation",
        changed=Selection(changed, np.zeros(num_objects, dtype=bool)),
        unchanged=Selection(~changed, np.ones(num_objects, dtype=bool)),
        description=description,
    )


def _flipped(graphs: list[SceneGraph], pair: tuple[int, int], flippable: dict[int, int]) -> list[SceneGraph]:
    """The distinct frame graphs with the pair's flippable triples flipped (for the satisfiability check)."""
    out: list[SceneGraph] = []
    for graph in graphs:
        if out and graph.same_relations(out[-1]):
            continue
        triples = graph.triples.clone()
        for k, (s, p, o) in enumerate(triples.tolist()):
            if (min(s, o), max(s, o)) == pair and p in flippable:
                triples[k, 1] = flippable[p]
        out.append(SceneGraph(graph.objs, triples))
    return out


def _replace_object(
    graphs: list[SceneGraph], vocab: Vocab, rng: np.random.Generator
) -> tuple[list[SceneGraph], Change]:
    objs = graphs[0].objs
    if not all(torch.equal(g.objs, objs) for g in graphs):
        raise ValueError("an object change needs the same objects in every frame (as one clip's graphs have)")
    if len(objs) == 0:
        raise ValueError("no object to replace: the graph has no objects")
    index = int(rng.integers(len(objs)))
    names = [vocab.objects[int(i)] for i in objs]
    parsed = [_colour_shape(name) for name in names]
    if all(p is not None for p in parsed):
        # shapes world: a colour nobody in the graph has, so the checker sees the change; any shape
        used = {colour for colour, _ in parsed}
        free = [c for c in range(len(COLOURS)) if c not in used]
        candidates = [f"{COLOURS[c][0]} {shape}" for c in free for shape in SHAPES]
        candidates = [name for name in candidates if vocab.object_id(name) is not None]
    else:
        candidates = [name for name in vocab.objects if name not in names]
    if not candidates:
        raise ValueError(f"no class to put in place of {names[index]!r}: every colour / class is already in the graph")
    new_name = candidates[int(rng.integers(len(candidates)))]
    new_objs = objs.clone()
    new_objs[index] = vocab.object_id(new_name)

    new_graphs = [SceneGraph(new_objs, g.triples, g.boxes) for g in graphs]
    changed_objects = np.concatenate([np.arange(g.num_objects) == index for g in graphs])
    touches = np.concatenate([((g.triples[:, 0] == index) | (g.triples[:, 2] == index)).numpy() for g in graphs])
    return new_graphs, Change(
        kind="object",
        changed=Selection(np.zeros(len(touches), dtype=bool), changed_objects),
        unchanged=Selection(~touches, ~changed_objects),
        description=f"object {index}: {names[index]} -> {new_name}",
    )


def manipulate_graph(
    graphs: SceneGraph | Sequence[SceneGraph] | Mapping[str, Any],
    kind: str,
    rng: np.random.Generator | int | None = None,
    vocab: Vocab | None = None,
    num_frames: int | None = None,
) -> tuple[list[SceneGraph], Change]:
    """Change one relation or one object of a clip's graphs (see the module docstring).

    `graphs`: one SceneGraph, one per frame, or a graph JSON value (then `num_frames` for a static graph).
    `kind`: "relation" | "object". `rng`: a NumPy generator or seed picking what changes. `vocab`: the
    graphs' vocabulary (default: the shapes world's). Returns the per-frame manipulated graphs and the Change.
    """
    if kind not in KINDS:
        raise ValueError(f"manipulation kind must be one of {', '.join(KINDS)}, got {kind!r}")
    vocab = vocab or shapes_vocab()
    frame_graphs = _frame_graphs(graphs, vocab, num_frames)
    rng = np.random.default_rng(rng)
    if kind == "relation":
        return _flip_relation(frame_graphs, vocab, rng)
    return _replace_object(frame_graphs, vocab, rng)


# ----------------------------------------------------------------------------------------------
# Outcomes and scores


def element_outcomes(
    frames: np.ndarray | torch.Tensor,
    graphs: SceneGraph | Sequence[SceneGraph],
    vocab: Vocab | None = None,
) -> Outcomes:
    """Per-row compliance of one video (T, H, W, 3) uint8 with its graphs (one, or one per frame).

    The rule is compliance's: an object row holds when its colour is detected in that frame with its shape; a
    triple row when both colours are detected and `predicate_holds` for their displacement. Summed per frame,
    these are `check_video`'s `object_correct_per_frame` and `relation_correct_per_frame`.
    """
    vocab = vocab or shapes_vocab()
    det = detect_objects(frames)
    T = det.detected.shape[0]
    graphs = [graphs] * T if isinstance(graphs, SceneGraph) else list(graphs)
    if len(graphs) != T:
        raise ValueError(f"need one graph per frame: {T} frames but {len(graphs)} graphs")
    object_rows, triple_rows = [], []
    for t, graph in enumerate(graphs):
        parsed = [_colour_shape(vocab.objects[int(i)]) for i in graph.objs]
        if any(p is None for p in parsed):
            bad = vocab.objects[int(graph.objs[[p is None for p in parsed].index(True)])]
            raise ValueError(f"object class {bad!r} is not a shapes-world class \"<colour> <shape>\"")
        colours = np.array([c for c, _ in parsed], dtype=np.int64)
        shapes = np.array([s for _, s in parsed], dtype=np.int64)
        object_rows.append(det.detected[t, colours] & (det.shape[t, colours] == shapes))
        if graph.num_triples:
            s, p, o = graph.triples.numpy().T
            subj, targ = colours[s], colours[o]
            displacement = det.position[t, targ] - det.position[t, subj]
            both = det.detected[t, subj] & det.detected[t, targ]
            names = [vocab.predicates[int(i)] for i in p]
            triple_rows.append(both & predicate_holds(names, np.nan_to_num(displacement)))
    empty = np.zeros(0, dtype=bool)
    return Outcomes(
        triples=np.concatenate(triple_rows) if triple_rows else empty,
        objects=np.concatenate(object_rows) if object_rows else empty,
    )


def _listify(value: Any, kind: type) -> list:
    return [value] if isinstance(value, kind) else list(value)


def _rate(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def score_manipulation(
    results_before: Outcomes | Sequence[Outcomes],
    results_after: Outcomes | Sequence[Outcomes],
    changed: Selection | Sequence[Selection],
    unchanged: Selection | Sequence[Selection],
) -> dict[str, float | int]:
    """How well manipulations show, pooled over rows of one or many videos (lists line up by video).

    `results_before`: outcomes of the video made from the original graphs, against those graphs;
    `results_after`: of the video made from the manipulated graphs, against the manipulated graphs.
    Returns
    - `changed_accuracy`: share of changed rows the after-video satisfies (the change shows);
    - `changed_before_accuracy`: share of changed rows whose original version the before-video satisfied
      (the model's ability on that part before the change; a reference);
    - `unchanged_accuracy`: share of unchanged rows the after-video satisfies;
    - `unchanged_preserved`: of the unchanged rows the before-video satisfied, the share still satisfied;
    - `num_changed`, `num_unchanged`: rows counted. Rates are NaN when there is nothing to count.
    """
    before = _listify(results_before, Outcomes)
    after = _listify(results_after, Outcomes)
    changed_list = _listify(changed, Selection)
    unchanged_list = _listify(unchanged, Selection)
    if not len(before) == len(after) == len(changed_list) == len(unchanged_list):
        raise ValueError(
            f"one entry per video in each argument, got {len(before)} before, {len(after)} after, "
            f"{len(changed_list)} changed, {len(unchanged_list)} unchanged"
        )
    counts = dict(changed=0, changed_after=0, changed_before=0, unchanged=0, unchanged_after=0, held_before=0, kept=0)
    for b, a, c, u in zip(before, after, changed_list, unchanged_list):
        for part in ("triples", "objects"):
            ok_before, ok_after = getattr(b, part), getattr(a, part)
            mask_changed, mask_unchanged = getattr(c, part), getattr(u, part)
            sizes = {len(ok_before), len(ok_after), len(mask_changed), len(mask_unchanged)}
            if len(sizes) != 1:
                raise ValueError(f"{part} rows do not line up: outcomes and selections of one video differ in length")
            counts["changed"] += int(mask_changed.sum())
            counts["changed_after"] += int((ok_after & mask_changed).sum())
            counts["changed_before"] += int((ok_before & mask_changed).sum())
            counts["unchanged"] += int(mask_unchanged.sum())
            counts["unchanged_after"] += int((ok_after & mask_unchanged).sum())
            counts["held_before"] += int((ok_before & mask_unchanged).sum())
            counts["kept"] += int((ok_before & ok_after & mask_unchanged).sum())
    return {
        "changed_accuracy": _rate(counts["changed_after"], counts["changed"]),
        "changed_before_accuracy": _rate(counts["changed_before"], counts["changed"]),
        "unchanged_accuracy": _rate(counts["unchanged_after"], counts["unchanged"]),
        "unchanged_preserved": _rate(counts["kept"], counts["held_before"]),
        "num_changed": counts["changed"],
        "num_unchanged": counts["unchanged"],
    }

"""Scoring videos already written to disk against the graph file they were made from (a built-in world).

What `src/sample.py` leaves in its `out` folder (`sample_NNN.npy`, uint8 (T, H, W, 3)) is judged by the world's
exact checker (sg2video.eval.worlds; a graph naming `person` is the household world's, any other the shapes
world's) against the graph JSON, as a newcomer would judge it:
- object / relation / colour accuracy over every sample and frame; household: `family/<family>` too (pooled);
- per timeline segment (the graph's own segments): the mean over samples of each segment's relation accuracy,
  and the worst segment;
- shapes only: `teleport_rate`, the share of frame-to-frame moves of the graph's objects longer than any move in the world's
  own clips can make (`world_move_limit`) plus half a pixel for detection noise;
- `position_spread`: how far apart the same object lands in two samples (frame units, averaged over sample
  pairs, objects and frames where both detect it), and `pixel_difference` (mean absolute, of 255).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from sg2video.data.shapes import ShapesWorld, shapes_vocab
from sg2video.eval.compliance import detect_objects, graph_colours, object_moves
from sg2video.eval.worlds import WorldChecker, checker_for
from sg2video.graph_json import load_graph_json
from sg2video.graphs import SceneGraph, Vocab, relation_segments

DETECTION_SLACK_PX = 0.5


def world_move_limit(size: int) -> float:
    """The longest frame-to-frame move (pixels) an object of the shapes world can make at frame side `size`:
    per axis a velocity of at most vmax = 0.04 * size pixels, and rounding the centre to whole pixels adds
    less than one (shared/specs/shapes_world.md), so at most floor(vmax) + 1 on each axis."""
    per_axis = math.floor(ShapesWorld(size=size).vmax) + 1
    return math.sqrt(2) * per_axis


def spread_between(videos: Sequence[np.ndarray], graphs: Sequence[SceneGraph]) -> dict[str, float]:
    """How different several videos of one graph are: `position_spread` (frame units) and `pixel_difference`."""
    colours = graph_colours(graphs)
    found = [detect_objects(v) for v in videos]
    size = videos[0].shape[1]
    spreads, pixel_diffs = [], []
    for a in range(len(videos)):
        for b in range(a + 1, len(videos)):
            both = found[a].detected[:, colours] & found[b].detected[:, colours]
            gap = np.linalg.norm(found[a].position[:, colours] - found[b].position[:, colours], axis=-1)
            if both.any():
                spreads.append(float(gap[both].mean()) / size)
            pixel_diffs.append(float(np.abs(videos[a].astype(np.float32) - videos[b].astype(np.float32)).mean()))
    return {"position_spread": float(np.mean(spreads)) if spreads else math.nan,
            "pixel_difference": float(np.mean(pixel_diffs)) if pixel_diffs else math.nan}


def score_videos_against_graph(videos: Sequence[np.ndarray], graphs: Sequence[SceneGraph],
                               checker: WorldChecker | None = None) -> dict[str, float]:
    """The module docstring's figures for several videos of the same per-frame graphs (default: shapes world)."""
    checker = checker or checker_for(shapes_vocab())
    results = [checker.check_video(v, graphs) for v in videos]
    segments = relation_segments(graphs)
    per_segment = [float(np.nanmean([r.over_frames(s, e)["relation_accuracy"] for r in results]))
                   for s, e in segments]
    out = {
        "object_accuracy": float(np.mean([r.object_accuracy for r in results])),
        "relation_accuracy": float(np.nanmean([r.relation_accuracy for r in results])),
        "colour_accuracy": float(np.mean([r.colour_accuracy for r in results])),
        "segments": len(segments),
        "worst_segment_relation_accuracy": float(min(per_segment)) if per_segment else math.nan,
        "samples": len(videos),
        "frames": int(videos[0].shape[0]),
    }
    for family in checker.families:
        counts = [r.per_family_counts.get(family, (0, 0)) for r in results]
        total = sum(n for _, n in counts)
        out[f"family/{family}"] = sum(c for c, _ in counts) / total if total else math.nan
    if checker.name == "shapes":
        limit = world_move_limit(int(videos[0].shape[1]))
        moved = np.concatenate([object_moves(v, graphs) for v in videos])
        out["teleport_rate"] = float((moved > limit + DETECTION_SLACK_PX).mean()) if moved.size else math.nan
        out["move_limit_px"] = limit
        if len(videos) > 1:
            out.update(spread_between(videos, graphs))
    return out


def graph_file_vocab(graph_path: str | Path) -> Vocab:
    """The built-in world a graph file is written for: the household world's when it names `person` (Action
    Genome's graphs are person first), else the shapes world's."""
    from sg2video.data.household_sprites import PERSON, household_vocab

    try:
        objects = json.loads(Path(graph_path).read_text()).get("objects", [])
    except (OSError, ValueError, AttributeError):
        objects = []
    return household_vocab() if PERSON in objects else shapes_vocab()


def score_sample_dir(out_dir: str | Path, graph_path: str | Path, vocab: Vocab | None = None) -> dict[str, float]:
    """Score the `sample_*.npy` files `src/sample.py` wrote into `out_dir` against the graph file (`vocab`
    default: the world the file is written for, `graph_file_vocab`)."""
    vocab = vocab or graph_file_vocab(graph_path)
    paths = sorted(Path(out_dir).glob("sample_*.npy"))
    if not paths:
        raise FileNotFoundError(f"{out_dir}: no sample_*.npy files")
    videos = [np.load(p, allow_pickle=False) for p in paths]
    spec = load_graph_json(graph_path, vocab)
    return score_videos_against_graph(videos, spec.frame_graphs(videos[0].shape[0]), checker_for(vocab))

"""The eval stage on the household world: its exact checker is picked by the vocabulary (sg2video.eval.worlds),
every predicate family gets its own figure, and the controls are scored by it.

Ground-truth videos through the eval stage's own scoring function score 1.0 in every family; the same videos
scored against another clip's graphs fall; a whole smoke run on `data=household` writes per-family figures and
the relation control.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sg2video.data.household import HouseholdWorld
from sg2video.data.household_sprites import FAMILIES, household_vocab
from sg2video.data.shapes import shapes_vocab
from sg2video.eval.worlds import checker_for
from sg2video.graphs import Vocab
from sg2video.stages.eval_measures import _headline_keys, compliance_metrics, segment_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_the_vocabulary_picks_the_checker():
    assert checker_for(shapes_vocab()).name == "shapes" and checker_for(shapes_vocab()).families == ()
    household = checker_for(household_vocab())
    assert household.name == "household" and household.families == tuple(FAMILIES)
    assert checker_for(Vocab(["person", "cup"], ["holding"])) is None


@pytest.fixture(scope="module")
def household_clips():
    world = HouseholdWorld(size=32, frames=8)
    params = [world.params("test", i) for i in range(48)]
    return torch.from_numpy(world.render(params)), [world.graphs(p) for p in params]


def test_ground_truth_scores_one_in_every_family(household_clips):
    videos, graphs = household_clips
    scores = compliance_metrics(videos, graphs, checker_for(household_vocab()))
    assert scores["object_accuracy"] == 1.0 and scores["relation_accuracy"] == 1.0
    for family in FAMILIES:  # every family occurs in 48 clips of 8 frames, and every row of it holds
        assert scores[f"relation_family/{family}"] == 1.0, family
    assert set(_headline_keys(scores)) >= {f"relation_family/{f}" for f in FAMILIES}
    assert not any(k.startswith("relation_accuracy/") for k in _headline_keys(scores))
    segments = segment_metrics(videos, graphs, checker_for(household_vocab()))
    assert segments["worst_segment/relation_accuracy"] == 1.0 and segments["segments_per_video"] > 1.0


def test_other_clips_graphs_fail(household_clips):
    videos, graphs = household_clips
    shifted = graphs[1:] + graphs[:1]
    scores = compliance_metrics(videos, shifted, checker_for(household_vocab()))
    assert scores["relation_accuracy"] < 0.6 and scores["object_accuracy"] < 0.8
    assert min(scores[f"relation_family/{f}"] for f in FAMILIES) < 0.6


@pytest.mark.slow
def test_household_smoke_run_reports_every_family(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "+experiment=smoke", "data=household",
                           "data.size=32", "data.val_size=16", "data.test_size=16", f"hydra.run.dir={run_dir}",
                           "cache_dir=null"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["eval"]
    for key in ("object_accuracy", "relation_accuracy", "control_uncond/relation_accuracy",
                "control_norel/relation_accuracy", "control_norel/relation_margin", "given_boxes/relation_accuracy"):
        low = -1.0 if key.endswith("margin") else 0.0
        assert low <= metrics[key] <= 1.0, (key, metrics[key])
    families = [k for k in metrics if k.startswith("relation_family/")]
    assert families and {k.split("/")[1] for k in families} <= set(FAMILIES)
    assert "relations per family:" in done.stdout + done.stderr
    assert (run_dir / "report.html").read_text().count("relation_family/") >= len(families)


def test_sample_folders_are_scored_by_the_world_the_graph_file_names(household_clips, tmp_path):
    """What score_handwritten.py does after sample.py: .npy files scored against the graph JSON, the household
    checker chosen because the file names `person`; a clip's own graph file scores 1.0 in every family it has,
    another clip's does not."""
    import numpy as np

    from sg2video.eval.samples import graph_file_vocab, score_sample_dir
    from sg2video.graph_json import graphs_to_json, write_graph_json

    videos, graphs = household_clips
    vocab = household_vocab()
    changing = next(i for i, g in enumerate(graphs) if len({tuple(map(tuple, x.triples.tolist())) for x in g}) > 1)
    for i in range(2):
        np.save(tmp_path / f"sample_{i:03d}.npy", videos[changing].numpy())
    own, other = tmp_path / "own.json", tmp_path / "other.json"
    write_graph_json(own, graphs_to_json(vocab, [g.without_boxes() for g in graphs[changing]]))
    write_graph_json(other, graphs_to_json(vocab, [g.without_boxes() for g in graphs[changing + 1]]))
    assert graph_file_vocab(own) == vocab and graph_file_vocab(ROOT / "experiments/graphs/relation_swap.json") \
        == shapes_vocab()
    scores = score_sample_dir(tmp_path, own)
    assert scores["segments"] > 1 and scores["object_accuracy"] == 1.0 and scores["relation_accuracy"] == 1.0
    families = [k for k in scores if k.startswith("family/")]
    assert families and all(scores[k] == 1.0 or scores[k] != scores[k] for k in families)
    assert "teleport_rate" not in scores  # the shapes world's motion limit means nothing here
    assert score_sample_dir(tmp_path, other)["relation_accuracy"] < 0.9

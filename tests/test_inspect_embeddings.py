"""src/inspect_embeddings.py: maps of a trained encoder's graph and video vectors, two datasets at once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sg2video.eval.embeddings import map_graph, pair_distances, pca_2d
from sg2video.graphs import SceneGraph, Vocab
from test_pipeline import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "src" / "inspect_embeddings.py"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_encoder(tmp_path_factory) -> Path:
    """The smoke encoder trained 400 steps of 32 clips (measured: held-out retrieval top-1 0.81 / 0.94)."""
    run = tmp_path_factory.mktemp("enc") / "run"
    proc = run_cli("run.py", "+experiment=smoke", "stage=encoder", "encoder.train.max_steps=400",
                   "encoder.train.batch_size=32", "data.val_size=64", "data.test_size=64", f"hydra.run.dir={run}",
                   "cache_dir=null", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


@pytest.mark.slow
def test_a_trained_encoder_maps_matched_pairs_closer_than_random_pairs_on_two_datasets(trained_encoder, tmp_path):
    from test_datasets_e2e import visual_genome_root

    vg = [o.replace("data.", "data2.", 1) for o in visual_genome_root(tmp_path / "vg") if o.startswith("data.")]
    out = tmp_path / "maps"
    done = _run([f"ckpt={trained_encoder}", "data.val_size=64", "num=64", "+data@data2=visual_genome", *vg,
                 "splits=[val,test]", "highlight_class=red circle", f"out={out}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["figures.json", "index.html", "map_class.png", "map_dataset.png", "map_modality.png",
                     "map_split.png"]
    figures = json.loads((out / "figures.json").read_text())
    shapes = figures["data: shapes / val"]
    # measured: map distance 0.18 matched vs 0.77 random, 0.59 top-1 in a gallery of 64
    assert shapes["pairs"] == 64 and shapes["matched_map_distance"] < 0.5 * shapes["random_map_distance"]
    assert shapes["matched_cosine_distance"] < shapes["random_cosine_distance"]
    assert shapes["matched_nearer_share"] > 0.8 and shapes["g2v_top1"] > 0.3
    # Visual Genome's classes are not the shapes world's: every object is outside the encoder's vocabulary,
    # so its clips are video points only (val 1 image, test 2)
    for split in ("val", "test"):
        vg_row = figures[f"data2: visual_genome / {split}"]
        assert vg_row["pairs"] == 0 and vg_row["objects_outside_vocabulary"] == 1.0
    assert "data: shapes / val: 64 graph/video pairs" in done.stdout


def test_bad_checkpoint_and_dataset_are_one_line(tmp_path):
    done = _run(["ckpt=/no/such/run", f"out={tmp_path / 'o'}"], tmp_path)
    assert done.returncode == 2 and "ckpt='/no/such/run': no such file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_graphs_of_another_vocabulary_are_mapped_by_name():
    theirs = Vocab(objects=["cat", "red circle", "blue square"], predicates=["left of", "eats"])
    ours = Vocab(objects=["blue square", "red circle"], predicates=["left of"])
    graph = SceneGraph(torch.tensor([0, 1, 2]), torch.tensor([[1, 0, 2], [0, 1, 1], [2, 1, 1]]))
    mapped, dropped = map_graph(graph, theirs, ours)
    assert dropped == 1 and mapped.objs.tolist() == [1, 0]  # red circle, blue square in our ids
    assert mapped.triples.tolist() == [[0, 0, 1]]  # red circle left of blue square; "eats" and the cat are gone
    assert map_graph(SceneGraph(torch.tensor([0]), torch.zeros(0, 3)), theirs, ours) == (None, 1)


def test_pca_and_pair_distances():
    torch.manual_seed(0)
    points = torch.randn(50, 2) @ torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    points = torch.cat([points, torch.zeros(50, 3)], dim=1)  # all variance in the first two dims
    projected, variance = pca_2d(points)
    assert sum(variance) == pytest.approx(1.0) and variance[0] > 0.8
    g = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    same = pair_distances(g, g, g[:, :2], g[:, :2])
    assert same["matched_cosine_distance"] == pytest.approx(0.0, abs=1e-6) and same["matched_nearer_share"] == 1.0

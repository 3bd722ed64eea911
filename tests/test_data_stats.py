"""src/data_stats.py and sg2video.data.stats: graph statistics checked against counts worked out by hand, and the
command on every dataset that has graphs (shapes, and the Action Genome, Visual Genome and COCO-Stuff roots)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sg2video.data.stats import read_stats_json, split_stats, tukey_upper_fence
from sg2video.graphs import SceneGraph, Vocab

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "src" / "data_stats.py"
VOCAB = Vocab(objects=["a", "b", "c", "d", "e", "f"], predicates=["p", "q"])


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def hand_clips() -> list[list[SceneGraph]]:
    """Two clips, worked out by hand.

    Clip 1, 3 frames, one relation change (frame 2): graph G1 (frames 0-1) and G2 (frame 2).
      G1: objects a b c d e f (6), triples a-p->b, a-p->c, a-q->d, a-q->e, b-p->c (5), every box given.
          degrees a 4, b 2, c 2, d 1, e 1, f 0 (isolated).
      G2: objects a b (2), triple b-q->a (1), boxes for a only.  degrees 1, 1.
    Clip 2, one frame: G3: objects c d e (3), no triples, no boxes.  degrees 0, 0, 0.
    Pooled degrees (11 nodes): [4 2 2 1 1 0 1 1 0 0 0]: Q1 = 0, Q3 = 1.5 (numpy's linear rule), fence 3.75:
    one outlier (a, degree 4). Edges 6, mean degree 12 / 11; isolated 4; missing boxes 1 (G2's b) + 3 (G3) = 4.
    Tokens: G1 5 + 6 = 11, G2 3, G3 3: a cap of 10 truncates 1 of 3 graphs.
    """
    boxes6 = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 6)
    g1 = SceneGraph(torch.arange(6), torch.tensor([[0, 0, 1], [0, 0, 2], [0, 1, 3], [0, 1, 4], [1, 0, 2]]), boxes6)
    g2 = SceneGraph(torch.tensor([0, 1]), torch.tensor([[1, 1, 0]]), torch.tensor([[0.0, 0.0, 0.2, 0.2]] * 2),
                    box_mask=torch.tensor([True, False]))
    g3 = SceneGraph(torch.tensor([2, 3, 4]), torch.zeros(0, 3, dtype=torch.long))
    return [[g1, g1, g2], [g3]]


def test_figures_match_hand_counts():
    stats = split_stats("hand/train", hand_clips(), VOCAB, max_tokens=10)
    v = stats.values
    assert (v["clips"], v["frames"], v["graphs"], v["nodes"], v["edges"]) == (2, 4, 3, 11, 6)
    assert v["mean_degree"] == pytest.approx(12 / 11)
    assert (v["isolated_nodes"], v["missing_boxes"]) == (4, 4)
    assert v["outlier_degree_above"] == pytest.approx(3.75) and v["outlier_nodes"] == 1
    assert (v["object_classes"], v["object_classes_used"], v["predicates"], v["predicates_used"]) == (6, 6, 2, 2)
    assert v["triples_per_graph_mean"] == pytest.approx(2.0) and v["triples_per_graph_median"] == 1.0
    assert v["triples_per_graph_max"] == 5
    assert v["relation_changes_per_clip"] == pytest.approx(0.5)
    assert v["token_truncated_share"] == pytest.approx(1 / 3)
    assert stats.degrees == {0: 4, 1: 4, 2: 2, 4: 1}
    assert stats.classes["a"] == 2 and stats.classes["f"] == 1 and sum(stats.classes.values()) == 11
    assert stats.predicates == {"p": 3, "q": 3}
    assert tukey_upper_fence(torch.tensor([1, 2, 3, 4]).numpy()) == pytest.approx(3.25 + 1.5 * 1.5)


def test_cli_on_shapes_writes_every_output_and_compares_side_by_side(tmp_path):
    first = tmp_path / "shapes"
    done = _run(["data=shapes", "splits=[val,test]", "max_clips=50", "data.size=32", "data.frames=8", f"out={first}"],
                tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| figure | shapes/val | shapes/test |" in done.stdout
    names = sorted(p.name for p in first.iterdir())
    assert names == ["shapes_test_histograms.png", "shapes_val_histograms.png", "stats.csv", "stats.json", "stats.md"]
    val = read_stats_json(first)[0]
    # the shapes world's rule: every pair of objects is related once per frame, so no node is isolated and
    # a graph of k objects has k (k - 1) / 2 triples; every object has its box
    assert val.values["clips"] == 50 and val.values["frames"] == 400
    assert val.values["isolated_nodes"] == 0 and val.values["missing_boxes"] == 0
    assert val.values["object_classes"] == 24 and val.values["predicates"] == 4
    assert 1 <= val.values["triples_per_graph_max"] <= 6
    second = tmp_path / "again"
    done = _run(["data=shapes", "splits=[train]", "max_clips=20", f"out={second}", f"compare=[{first}]"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| figure | shapes/train | shapes/val | shapes/test |" in (second / "stats.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["splits=[train,dev]"], "splits"),
    (["max_clips=-1"], "max_clips=-1"),
    (["compare=[/no/such/stats]"], "compare=['/no/such/stats']: neither a stats.json"),
])
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, args, message):
    done = _run([*args, f"out={tmp_path / 'out'}"], tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["action_genome", "visual_genome", "coco_stuff"])
def test_cli_runs_on_the_real_format_test_roots(tmp_path, name):
    """The test roots of test_datasets_e2e (release formats; counts from their docstrings): every split's table,
    with the dataset's own vocabulary and boxes."""
    from test_datasets_e2e import CASES

    build, frames, (num_objects, num_predicates), val_clips, _ = CASES[name]
    overrides = [o for o in build(tmp_path / name) if o.startswith("data")]
    out = tmp_path / "stats"
    done = _run([*overrides, "splits=[train,val,test]", f"out={out}"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    train, val, test = read_stats_json(out)
    for split in (train, val, test):
        v = split.values
        assert (v["object_classes"], v["predicates"]) == (num_objects, num_predicates)
        assert v["frames"] == v["clips"] * frames and v["nodes"] >= v["graphs"] >= v["clips"] > 0
        assert v["edges"] == round(v["triples_per_graph_mean"] * v["graphs"])
        assert math.isclose(v["mean_degree"], 2 * v["edges"] / v["nodes"])
    assert val.values["clips"] == val_clips
    assert (out / f"{name}_train_histograms.png").stat().st_size > 0
    data = json.loads((out / "stats.json").read_text())
    assert [s["label"] for s in data["splits"]] == [f"{name}/{s}" for s in ("train", "val", "test")]

"""The compositional split of the shapes world (data.holdout) and the eval stage's relation control (issue 25).

The held-out set is re-derived here from its names alone (mirrors written out by hand), so the checks do not
lean on the generator's own tables. Figures asserted were measured on this code: see each test.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sg2video.data.shapes import ClipParams, ShapesWorld, shapes_vocab
from sg2video.data.shapes_holdout import HELD_OUT_PAIRS, HELD_OUT_TRIPLES, unseen_kind
from sg2video.graphs import SceneGraph, clip_key
from sg2video.eval.worlds import checker_for

VOCAB = shapes_vocab()
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def held_out_sets() -> tuple[set, set]:
    """(subject id, predicate id, object id) triples with their mirrors, and unordered class-id pairs."""
    obj, pred = VOCAB.object_id, VOCAB.predicate_id
    triples = set()
    for s, p, o in HELD_OUT_TRIPLES:
        triples |= {(obj(s), pred(p), obj(o)), (obj(o), pred(OPPOSITE[p]), obj(s))}
    return triples, {frozenset((obj(a), obj(b))) for a, b in HELD_OUT_PAIRS}


TRIPLES, PAIRS = held_out_sets()


def held_out_in(key) -> tuple[bool, bool, bool]:
    """From a clip's per-frame canonical keys: (held-out triple in any frame, in the first frame, held-out pair)."""
    classes = key[0][0]
    pair = any(frozenset((a, b)) in PAIRS for i, a in enumerate(classes) for b in classes[i + 1:])
    frames = [any(t in TRIPLES for t in triples) for _, triples in key]
    return any(frames), frames[0], pair


# -- the split -----------------------------------------------------------------------------------------


def test_the_held_out_set_is_what_its_docstring_says():
    classes = [name for triple in HELD_OUT_TRIPLES for name in (triple[0], triple[2])]
    pair_classes = [name for pair in HELD_OUT_PAIRS for name in pair]
    assert len(HELD_OUT_TRIPLES) == 8 and len(set(classes)) == 16 and len(HELD_OUT_PAIRS) == 3
    assert len(set(pair_classes)) == 6 and not set(classes) & set(pair_classes)
    assert set(VOCAB.objects) - set(classes) - set(pair_classes) == {"magenta circle", "white triangle"}
    assert sorted(p for _, p, _ in HELD_OUT_TRIPLES) == sorted(VOCAB.predicates * 2)


def test_no_held_out_combination_in_any_frame_of_5000_train_clips():
    """Measured: 0 of 5000 under compositional; v1 (holdout=none) has 65 in the first 1000 (381 of the 5000), so
    the check finds them when they are there."""
    found = {}
    for mode, clips in (("compositional", 5000), ("none", 1000)):
        world = ShapesWorld(size=16, frames=4, holdout=mode)
        found[mode] = sum(any(held_out_in(world.graph_key(world.params("train", i)))) for i in range(clips))
    assert found["compositional"] == 0
    assert 50 <= found["none"] <= 80, found


def test_train_clips_still_show_each_held_out_triples_classes_together():
    """Compositional, not a vocabulary cut: the classes of a held-out triple meet in train clips in the other
    arrangements. Measured over 4000 clips: each of the 8 class pairs meets 45-66 times."""
    world = ShapesWorld(size=16, frames=4, holdout="compositional")
    meets = {frozenset((VOCAB.object_id(s), VOCAB.object_id(o))): 0 for s, _, o in HELD_OUT_TRIPLES}
    for i in range(4000):
        classes = set(world.graph_key(world.params("train", i))[0][0])
        for pair in meets:
            meets[pair] += pair <= classes
    assert min(meets.values()) >= 30, meets


@pytest.mark.parametrize("split", ["val", "test"])
def test_val_and_test_hold_out_combinations_at_the_documented_share(split):
    """Every even index holds one (index % 4 == 0: a held-out triple in frame 0; == 2: a held-out pair), every odd
    index none: half of any even-length prefix."""
    world = ShapesWorld(size=16, frames=4, holdout="compositional")
    flags = [held_out_in(world.graph_key(world.params(split, i))) for i in range(400)]
    assert all(first for _, first, _ in flags[0::4])
    assert all(pair for _, _, pair in flags[2::4])
    assert not any(any(f) for f in flags[1::2])
    assert [unseen_kind(split, i) for i in range(4)] == ["triple", None, "pair", None]
    unseen = [world.graphs(world.params(split, i)) for i in range(4)]
    from sg2video.stages.eval_measures import holdout_metrics

    videos = torch.from_numpy(world.render([world.params(split, i) for i in range(4)]))
    out = holdout_metrics(videos, unseen, None)
    assert (out["unseen/graphs"], out["seen/graphs"]) == (2, 2)
    assert out["heldout_triples/count"] >= 1 and out["heldout_pairs/count"] >= 1


# measured with the generator before data.holdout existed (git 948ecbd): sha256 over 24 clips' pixels and graphs
V1_DIGESTS = {
    ("small", "train"): "547f066e8c876ca678487c2dcd51b568334a04c5544a6e0a2b2f534eef2476a5",
    ("small", "val"): "d7464755c63b99c9718df02bee0e860074145c6d474720b32122c46fc574dc73",
    ("small", "test"): "f37121eff669ad80a0d32141dfb645e3296ac6a73b8503b4c9db8868d8b6de56",
    ("crowded", "train"): "56774f21351ce6b203107a9833e84ddfcd1d447da3149ce0085461062dd2e4ba",
    ("crowded", "val"): "d2d174faace658e7b473e201c0af2ee0d5dafe7c5a61bf615b8658508f22ed85",
    ("crowded", "test"): "5ca832b02bdb1598c2daccf21d94ec5bd62a1ca7c0dce57055d0cba04667e720",
}
WORLDS = {"small": dict(size=16, frames=4), "crowded": dict(size=32, frames=8, min_objects=2, max_objects=6, seed=3)}


def clips_digest(world: ShapesWorld, split: str, count: int = 24) -> str:
    h = hashlib.sha256()
    for item in world.clips(split, list(range(count))):
        h.update(item["video"].numpy().tobytes())
        for g in item["graphs"]:
            h.update(g.objs.numpy().tobytes())
            h.update(g.triples.numpy().tobytes())
            h.update(g.boxes.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("world, split", list(V1_DIGESTS))
def test_holdout_none_is_contract_v1_byte_for_byte(world, split):
    from sg2video.data import build_dataset

    assert clips_digest(ShapesWorld(**WORLDS[world], holdout="none"), split) == V1_DIGESTS[world, split]
    cfg = OmegaConf.create({"name": "shapes", f"{split}_size": 24, "min_objects": 2, "max_objects": 4, "seed": 0,
                            **WORLDS[world], "holdout": "none"})
    assert clips_digest(build_dataset(cfg, split).world, split) == V1_DIGESTS[world, split]
    assert clips_digest(ShapesWorld(**WORLDS[world], holdout="compositional"), split) != V1_DIGESTS[world, split]


def test_the_split_changes_only_the_train_clips_it_must():
    """Same stream: a train clip is v1's own unless v1's held a held-out combination (then it is drawn again)."""
    v1, split = ShapesWorld(size=16, frames=4), ShapesWorld(size=16, frames=4, holdout="compositional")
    changed = 0
    for i in range(500):
        old, new = v1.params("train", i), split.params("train", i)
        same = all(np.array_equal(getattr(old, f), getattr(new, f)) for f in ("colours", "shapes", "centres"))
        assert same != any(held_out_in(v1.graph_key(old))), i
        changed += not same
    assert 20 <= changed <= 45  # measured: 31 of 500


@pytest.mark.parametrize("kwargs", [dict(size=16, frames=4, holdout="compositional"),
                                    dict(size=32, frames=3, min_objects=1, max_objects=6)])
def test_graph_key_from_parameters_is_the_rendered_graphs_clip_key(kwargs):
    world = ShapesWorld(**kwargs)
    for split in ("train", "test"):
        for i in range(200):
            params = world.params(split, i)
            assert world.graph_key(params) == clip_key(world.graphs(params))


def test_data_holdout_is_a_checked_config_key():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sg2video.cli import CONF_DIR
    from sg2video.errors import ConfigError
    from sg2video.schema import check_ranges

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        assert compose(config_name="config").data.holdout == "compositional"
        with pytest.raises(ConfigError, match="data.holdout='sideways' is not accepted"):
            check_ranges(compose(config_name="config", overrides=["data.holdout=sideways"]))


def test_data_stats_reports_the_held_out_share():
    from sg2video.data.stats import split_stats

    for mode, split, expected in (("compositional", "train", (0.0, 0.0)), ("compositional", "test", (0.5, 0.5)),
                                  ("none", "train", (0.04, 0.10))):  # v1 measured: 0.065 (13 of 200)
        world = ShapesWorld(size=16, frames=4, holdout=mode)
        clips = [world.graphs(world.params(split, i)) for i in range(200)]
        share = split_stats(f"shapes/{split}", clips, VOCAB, max_tokens=64).values["heldout_share"]
        assert expected[0] <= share <= expected[1], (mode, split, share)


def test_eval_graphs_in_training_finds_train_graphs_and_never_unseen_ones():
    from sg2video.stages.eval_measures import graphs_in_training

    data = OmegaConf.create({"name": "shapes", "size": 16, "frames": 4, "min_objects": 2, "max_objects": 4,
                             "seed": 0, "holdout": "compositional", "train_size": 100000})
    world = ShapesWorld(size=16, frames=4, holdout="compositional")
    train = [world.graphs(world.params("train", i)) for i in (3, 40)]
    unseen = [world.graphs(world.params("test", i)) for i in range(0, 16, 2)]
    assert graphs_in_training(data, train + unseen, 50) == [True, True] + [False] * 8
    assert graphs_in_training(data, train, 10) == [True, False]


# -- the relation control on hand-built videos -------------------------------------------------------------


class WorldPainter:
    """A stand-in video generator that paints the shapes world exactly: a graph with relations gets the clip the
    world drew it from (a perfect layout model), a relation-free graph the same objects at fresh non-touching
    places from the call's seed (a layout model that knows no relations)."""

    reads_boxes = True

    def __init__(self, world: ShapesWorld, params: list[ClipParams]) -> None:
        self.world = world
        self.clips = {world.graph_key(p): p for p in params}

    def generate(self, graph_lists, sampler="ddim", steps=1, guidance=1.0, seed=0, layout="sampled",
                 return_graphs=False):
        rng = np.random.default_rng(seed)
        params = [self._params(graphs, rng) for graphs in graph_lists]
        videos = torch.from_numpy(self.world.render(params))
        return (videos, [list(g) for g in graph_lists]) if return_graphs else videos

    def _params(self, graphs, rng) -> ClipParams:
        if graphs[0].num_triples:
            return self.clips[clip_key(graphs)]
        classes = graphs[0].objs.numpy()
        centres = None
        while centres is None:
            centres = self.world.place(rng, len(classes))
        return ClipParams(classes // 3, classes % 3, centres)


def painter_context(count: int = 64):
    from sg2video.stages.eval_measures import box_free
    from sg2video.stages.evaluate import EvalContext

    world = ShapesWorld(size=32, frames=4, holdout="compositional")
    params = [world.params("test", i) for i in range(count)]
    graph_lists = [world.graphs(p) for p in params]
    cfg = OmegaConf.create({"eval": {"batch_size": 16, "sampler": "ddim", "sample_steps": 1, "seed": 0,
                                     "training_clips": 0}, "data": {"name": "shapes", "holdout": "compositional"}})
    free = box_free(graph_lists)
    return EvalContext(cfg, WorldPainter(world, params), [], graph_lists, free, free, 1.0, "sampled",
                       checker_for(shapes_vocab()), Path("no-encoder"), torch.device("cpu"))


def test_relation_control_scores_right_objects_in_random_places_near_chance():
    """The world's own clips score 1.0 / 1.0; the same objects at random places keep objects 1.0 and relations
    fall to chance: measured 0.35 on these 64 clips (0.27-0.42 over 8 seeds; the issue's ~0.35)."""
    from sg2video.stages.evaluate import headline, relation_control

    ctx = painter_context()
    top = headline(ctx)
    assert top["object_accuracy"] == 1.0 and top["relation_accuracy"] == 1.0
    control = relation_control(ctx)
    assert control["control_norel/object_accuracy"] == 1.0
    assert 0.25 <= control["control_norel/relation_accuracy"] <= 0.45, control
    assert control["control_norel/relation_margin"] == pytest.approx(1.0 - control["control_norel/relation_accuracy"])


def test_seen_and_unseen_are_scored_apart():
    """Unseen clips painted exactly, seen ones at random places: the split keys tell them apart."""
    from sg2video.stages.eval_measures import holdout_metrics, relation_free

    ctx = painter_context(32)
    exact = ctx.video_gen.generate(ctx.free)
    shuffled = ctx.video_gen.generate(relation_free(ctx.free), seed=1)
    odd = torch.arange(len(exact)) % 2 == 1  # the seen (ordinary) clips
    videos = torch.where(odd[:, None, None, None, None], shuffled, exact)
    out = holdout_metrics(videos, ctx.graph_lists, None)
    assert (out["unseen/graphs"], out["seen/graphs"]) == (16, 16)
    assert out["unseen/relation_accuracy"] == 1.0 and out["heldout_triples/relation_accuracy"] == 1.0
    assert out["seen/object_accuracy"] == 1.0 and out["seen/relation_accuracy"] < 0.6


# -- where the control is shown ----------------------------------------------------------------------------

CONTROLLED = {"object_accuracy": 0.99, "relation_accuracy": 0.97, "control_uncond/object_accuracy": 0.04,
              "control_uncond/relation_accuracy": 0.003, "control_norel/object_accuracy": 0.98,
              "control_norel/relation_accuracy": 0.36, "control_norel/relation_margin": 0.61,
              "unseen/object_accuracy": 0.95, "unseen/relation_accuracy": 0.9, "seen/object_accuracy": 1.0,
              "seen/relation_accuracy": 1.0, "heldout_triples/relation_accuracy": 0.75}


def test_run_report_puts_the_model_beside_both_controls(tmp_path):
    from sg2video.eval.report import write_report

    page = write_report(tmp_path, "run", {}, {"eval": CONTROLLED}, loss_curves={}).read_text()
    table = page[page.index('<table id="controls">'):]
    table = table[: table.index("</table>")]
    assert "<td>held-out graphs without boxes (the model)</td><td>0.990</td><td>0.970</td><td>0.610</td>" in table
    for label, objects, relations in (("graphs with an unseen combination", "0.950", "0.900"),
                                      ("held-out triples alone", "n/a", "0.750"),
                                      ("relation control: same objects, relations removed before the layout",
                                       "0.980", "0.360"),
                                      ("unconditional control: condition dropped", "0.040", "0.003")):
        assert f"<td>{label}</td><td>{objects}</td><td>{relations}</td>" in table, label
    assert '<table id="controls">' not in write_report(tmp_path, "run", {}, {"eval": {"object_accuracy": 1.0}},
                                                       loss_curves={}).read_text()


def test_sweep_tables_show_the_relation_control_and_how_far_above_it(tmp_path):
    from test_experiments import fake_job

    from sg2video.sweeps import summarize
    from sg2video.sweeps.tables import markdown

    fake_job(tmp_path, 0, "concat", 0, {"eval": CONTROLLED})
    fake_job(tmp_path, 1, "concat", 1, {"eval": {**CONTROLLED, "control_norel/relation_margin": 0.41}})
    md = markdown(summarize(tmp_path))
    header = next(line for line in md.splitlines() if line.startswith("| arm |")).split(" | ")
    row = next(line for line in md.splitlines() if line.startswith("| all runs |")).split(" | ")
    cells = dict(zip(header, row))
    assert cells["relation-control relation acc"] == "0.360 ± 0.000 (n=2)"
    assert cells["relation acc above the relation control"] == "0.510 ± 0.141 (n=2)"
    assert cells["uncond relation acc"] == "0.003 ± 0.000 (n=2)" and cells["unseen relation acc"].startswith("0.900")
    assert "Relation control: the same model and objects" in md and "Unseen / seen:" in md

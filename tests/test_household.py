"""The household world (docs/household_world.md) and its checker (sg2video.eval.household_checker).

Ground truth must score 1.0 / 1.0 for every predicate; a render changed in one respect (a thing moved away, the
depth order swapped, the hand taken off the thing, the head turned) must fail the relation that changed, and
match the world's graph of the changed scene. Expectations come from the spec: Action Genome's names, the palette,
graph statistics near Action Genome's.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sg2video.data import build_dataset
from sg2video.data.household import HouseholdDataset, HouseholdWorld
from sg2video.data.household_sprites import FAMILIES, OBJECT_CLASSES, PALETTE, PREDICATES, household_vocab
from sg2video.data.stats import split_stats
from sg2video.eval.household_checker import check_video, score_videos
from sg2video.graphs import SceneGraph

ROOT = Path(__file__).resolve().parents[1]
# Action Genome's class and relationship files, in the pickles' spellings (shared/specs/action_genome_format.md)
AG_OBJECTS = ("person bag bed blanket book box broom chair closet/cabinet clothes cup/glass/bottle dish door doorknob "
              "doorway floor food groceries laptop light medicine mirror paper/notebook phone/camera picture pillow "
              "refrigerator sandwich shelf shoe sofa/couch table television towel vacuum window").split()
AG_PREDICATES = ("looking_at not_looking_at unsure above beneath in_front_of behind on_the_side_of in carrying "
                 "covered_by drinking_from eating have_it_on_the_back holding leaning_on lying_on not_contacting "
                 "other_relationship sitting_on standing_on touching twisting wearing wiping writing_on").split()


def _scenes(size: int, count: int, frames: int = 8, split: str = "val"):
    world = HouseholdWorld(size=size, frames=frames)
    params = [world.params(split, i) for i in range(count)]
    return world, params, world.render(params), [world.graphs(p) for p in params]


@pytest.fixture(scope="module")
def scenes32():
    return _scenes(32, 160)


def test_vocabulary_is_action_genomes():
    vocab = household_vocab()
    assert vocab.objects[0] == "person" and set(vocab.objects) <= set(AG_OBJECTS)
    assert {"cup/glass/bottle", "book", "laptop", "chair", "table"} <= set(vocab.objects)
    assert 6 <= len(OBJECT_CLASSES) <= 10
    assert set(vocab.predicates) <= set(AG_PREDICATES)
    assert set(PREDICATES) == {p for names in FAMILIES.values() for p in names}
    # the person's four colours and one per class, all far apart (the checker's tolerance is under half the gap)
    rgb = PALETTE.astype(float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(rgb), 1)]
    assert len(np.unique(PALETTE, axis=0)) == len(PALETTE) and gaps.min() >= 118


@pytest.mark.parametrize("size, count", [(32, 160), (64, 60)])
def test_ground_truth_scores_one_for_every_predicate(size, count, scenes32):
    world, params, frames, graphs = scenes32 if size == 32 else _scenes(size, count)
    scores = score_videos(list(frames), graphs)
    assert scores["object_accuracy"] == 1.0 and scores["relation_accuracy"] == 1.0
    assert scores["extra_objects"] == 0.0 and scores["num_videos"] == count
    assert set(scores["per_predicate"]) == set(PREDICATES), "every predicate occurs"
    assert set(scores["per_predicate"].values()) == {1.0} and scores["per_family"] == {f: 1.0 for f in FAMILIES}
    # every pixel is black or exactly a palette colour; the person is node 0 of every graph, with a relation to
    # every thing in every frame (each thing has exactly one spatial relation)
    flat = frames.reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(flat, axis=0)}
    assert colours <= {(0, 0, 0)} | {tuple(c) for c in PALETTE.tolist()}
    spatial = [world.vocab.predicate_id(p) for p in FAMILIES["spatial"] + FAMILIES["depth"]]
    for clip in graphs:
        for graph in clip:
            assert graph.objs[0] == 0 and (graph.triples[:, 0] == 0).all()
            counts = np.bincount(graph.triples[np.isin(graph.triples[:, 1], spatial), 2], minlength=graph.num_objects)
            assert (counts[1:] == 1).all()


def test_noise_blank_frames_and_other_clips_graphs_fail(scenes32):
    """Pixels decide: noise and black frames hold nothing; a clip checked against another clip's graphs fails most
    of its relations."""
    _, params, frames, graphs = scenes32
    rng = np.random.default_rng(0)
    for video in (rng.integers(0, 256, frames[0].shape, dtype=np.uint8), np.zeros_like(frames[0])):
        result = check_video(video, graphs[0])
        assert result.object_accuracy == 0.0 and result.relation_accuracy == 0.0
    shuffled = score_videos(list(frames[:40]), graphs[1:41])
    assert shuffled["relation_accuracy"] < 0.3 and all(v < 0.5 for v in shuffled["per_family"].values())


def test_activities_change_the_graph_within_a_clip(scenes32):
    world, params, _, graphs = scenes32
    assert {p.activity for p in params} == {"pick_up", "put_down", "sit_down", "stand_up", "look_around", "touch"}
    changes = [sum(not torch.equal(a.triples, b.triples) for a, b in zip(clip, clip[1:])) for clip in graphs]
    assert np.mean(changes) > 1.0  # 8-frame clips: holding begins, looking_at moves, sitting_on begins ...
    # a held thing moves with the hand: its offset from the hand stays fixed while it is held (and the person does
    # not turn round, which mirrors it)
    holding = world.vocab.predicate_id("holding")
    moved = 0
    for p, clip in zip(params, graphs):
        for t in range(1, len(clip)):
            k = int(p.person[t, 5])
            if k >= 0 and p.person[t - 1, 5] == k and p.person[t - 1, 1] == p.person[t, 1]:
                offset = p.objects[k, t, :2] - p.person[t, 3:5]
                assert (offset == p.objects[k, t - 1, :2] - p.person[t - 1, 3:5]).all()
                assert [0, holding, k + 1] in clip[t].triples.tolist()
                moved += int((p.person[t, 3:5] != p.person[t - 1, 3:5]).any())
    assert moved > 10


# ----------------------------------------------------------------------------------------------
# Perturbed renders


def _cases(world, params, graphs, predicates):
    """(params index, frame, triple) of ground-truth triples with one of `predicates`."""
    ids = {world.vocab.predicate_id(p) for p in predicates}
    return [(i, t, tri) for i, clip in enumerate(graphs) for t, g in enumerate(clip)
            for tri in g.triples.tolist() if tri[1] in ids]


def _single(graph: SceneGraph, triple) -> SceneGraph:
    return SceneGraph(graph.objs, torch.tensor([triple]), graph.boxes)


def _perturb_and_check(world, params, graphs, predicates, change, at_least, at_most=40, becomes=None):
    """For ground-truth triples with `predicates`: apply `change(params copy, t, thing)` to frame t; where the changed
    frame still keeps the world's rules, the old triple must fail on its render and the world's new graph must score
    1.0 / 1.0 there (and hold the predicate `becomes[old]`, when given). Checks up to `at_most` cases per predicate
    and wants `at_least` of each."""
    checked = dict.fromkeys(predicates, 0)
    for i, t, (s, pred, o) in _cases(world, params, graphs, predicates):
        name = world.vocab.predicates[pred]
        if checked[name] >= at_most:
            continue
        p = copy.deepcopy(params[i])
        p.person, p.objects = p.person[t:t + 1].copy(), p.objects[:, t:t + 1].copy()
        change(p, o - 1)
        one_world = HouseholdWorld(size=world.size, frames=1)
        if not one_world._frame_ok(p, 0):
            continue
        video = one_world.render([p])[0]
        old = check_video(video, [_single(graphs[i][t], [s, pred, o])])
        assert old.relation_accuracy == 0.0, (i, t, name)
        new_graph = one_world.graphs(p)[0]
        new = check_video(video, [new_graph])
        assert new.object_accuracy == 1.0 and new.relation_accuracy == 1.0, (i, t)
        if becomes:
            assert [s, world.vocab.predicate_id(becomes[name]), o] in new_graph.triples.tolist(), (i, t, name)
        checked[name] += 1
    assert min(checked.values()) >= at_least, checked


def test_moving_a_thing_away_fails_its_contact(scenes32):
    world, params, _, graphs = scenes32

    def slide(p, k):  # sideways by its width and 2 units, away from the person, out of the hand if it held it
        if p.person[0, 5] == k:
            p.person[0, 5] = -1
        width = world.placements(p, 0)[1][k].mask.shape[1]
        p.objects[k, 0, 0] += (width + 2 * world.u) * (1 if p.objects[k, 0, 0] > p.person[0, 0] else -1)

    _perturb_and_check(world, params, graphs, ["holding", "touching", "sitting_on"], slide, 10)


def test_swapping_depth_flips_in_front_of_and_behind(scenes32):
    world, params, _, graphs = scenes32

    def swap(p, k):
        p.objects[k, 0, 2] *= -1

    _perturb_and_check(world, params, graphs, ["in_front_of", "behind"], swap, 30,
                       becomes={"in_front_of": "behind", "behind": "in_front_of"})


def test_detaching_the_thing_from_the_hand_fails_holding(scenes32):
    world, params, _, graphs = scenes32

    def detach(p, k):  # the hand back at rest on the chest, the thing left where it was
        u, px, facing = world.u, p.person[0, 0], p.person[0, 1]
        p.person[0, 3] = px + 3 * u if facing > 0 else px - u
        p.person[0, 4] = world.head_y + 6 * u
        p.person[0, 5] = -1

    _perturb_and_check(world, params, graphs, ["holding"], detach, 20)


def test_turning_the_head_fails_looking_at(scenes32):
    world, params, _, graphs = scenes32

    def turn(p, k):
        p.person[0, 1] *= -1

    _perturb_and_check(world, params, graphs, ["looking_at", "not_looking_at"], turn, 30,
                       becomes={"looking_at": "not_looking_at", "not_looking_at": "looking_at"})


# ----------------------------------------------------------------------------------------------
# Determinism, sizes, statistics


def test_clips_are_a_pure_function_of_seed_split_index():
    first = HouseholdDataset("train", size=32, frames=6, seed=3)
    again = HouseholdDataset("train", size=32, frames=6, seed=3)
    batch = first.__getitems__([5, 9, 40])
    for item, index in zip(batch, [5, 9, 40]):
        alone = again[index]
        assert torch.equal(item["video"], alone["video"]) and item["source"] == alone["source"]
        assert all(torch.equal(a.triples, b.triples) and torch.equal(a.boxes, b.boxes)
                   for a, b in zip(item["graphs"], alone["graphs"]))
    other = HouseholdDataset("val", size=32, frames=6, seed=3)[5]
    assert not torch.equal(batch[0]["video"], other["video"])
    assert not torch.equal(batch[0]["video"], HouseholdDataset("train", size=32, frames=6, seed=4)[5]["video"])


def test_sizes_scale_the_same_scene():
    small, big = HouseholdWorld(size=32, frames=4), HouseholdWorld(size=64, frames=4)
    tiny = HouseholdWorld(size=16, frames=4)
    p32, p64 = small.params("test", 11), big.params("test", 11)
    assert p32.activity == p64.activity and (p32.classes == p64.classes).all()
    f32, f16 = small.render([p32])[0], tiny.render([tiny.params("test", 11)])[0]
    assert f16.shape == (4, 16, 16, 3) and np.array_equal(f16, f32[:, ::2, ::2])
    assert big.render([p64]).shape == (1, 4, 64, 64, 3)
    with pytest.raises(Exception, match="data.size=48"):
        HouseholdWorld(size=48)


def test_graph_statistics_are_near_action_genomes():
    world = HouseholdWorld(size=64, frames=4)
    clips = [world.graphs(world.params("train", i)) for i in range(500)]
    values = split_stats("household/train", clips, world.vocab, 64).values
    assert 2.3 <= values["mean_degree"] <= 2.9  # Action Genome: 2.57
    assert values["isolated_nodes"] == 0 and values["missing_boxes"] == 0
    assert values["distinct_graphs"] <= 0.6 * values["graphs"]  # many repeated graphs (0.37 over 2000 clips)
    assert values["graph_repeat_share_gallery100"] >= 0.1
    assert values["relation_changes_per_clip"] >= 0.5
    assert values["predicates_used"] == len(PREDICATES) and values["object_classes_used"] == 1 + len(OBJECT_CLASSES)


# ----------------------------------------------------------------------------------------------
# Registered: config, data_stats.py, inspect_data.py


def _data_config(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=["data=household", *overrides]).data


def test_data_household_builds_from_the_config():
    data_cfg = _data_config("data.size=32", "data.frames=3")
    dataset = build_dataset(data_cfg, "val")
    item = dataset[0]
    assert len(dataset) == data_cfg.val_size and tuple(item["video"].shape) == (3, 3, 32, 32)
    assert dataset.vocab == household_vocab()


def _cli(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "src" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_data_stats_runs_on_household(tmp_path):
    done = _cli("data_stats.py", ["data=household", "splits=[val]", "max_clips=150", f"out={tmp_path}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| figure | household/val |" in done.stdout
    values = json.loads((tmp_path / "stats.json").read_text())["splits"][0]["values"]
    assert values["clips"] == 150 and 2.3 <= values["mean_degree"] <= 2.9
    assert (tmp_path / "household_val_histograms.png").stat().st_size > 0


def test_inspect_data_writes_household_clips(tmp_path):
    out = tmp_path / "out"
    done = _cli("inspect_data.py", ["data=household", "split=val", "num=2", f"out={out}"], tmp_path)
    assert done.returncode == 0, done.stderr
    expected = [f"{i:03d}.{ext}" for i in range(2) for ext in ("gif", "json", "npy", "png")]
    assert sorted(p.name for p in out.iterdir()) == expected
    graph = json.loads((out / "000.json").read_text())
    assert graph["objects"][0] == "person" and graph["source"]["dataset"] == "household"
    item = build_dataset(_data_config(), "val")[0]  # the defaults of conf/data/household.yaml
    assert np.array_equal(np.load(out / "000.npy"), item["video"].permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("args, message", [
    (["data.size=48"], "data.size=48"),
    (["data.min_objects=4", "data.max_objects=3"], "data.min_objects=4"),
])
def test_bad_household_settings_are_one_line(tmp_path, args, message):
    done = _cli("inspect_data.py", ["data=household", *args, f"out={tmp_path / 'out'}"], tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()

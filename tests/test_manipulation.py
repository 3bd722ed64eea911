"""Semantic manipulation (sg2video.eval.manipulation) checked on ground-truth shapes clips."""
import copy
import math

import numpy as np
import pytest
import torch

from sg2video.data.shapes import COLOURS, SHAPES, ShapesWorld
from sg2video.eval.compliance import check_video
from sg2video.eval.manipulation import OPPOSITE, element_outcomes, manipulate_graph, score_manipulation
from sg2video.graphs import SceneGraph

WORLD = ShapesWorld(size=32, frames=6, min_objects=3, max_objects=4, seed=0)
VOCAB = WORLD.vocab


def clip(index: int, world: ShapesWorld = WORLD) -> tuple[np.ndarray, list[SceneGraph]]:
    item = world.clips("test", [index])[0]
    return item["video"].numpy().transpose(0, 2, 3, 1), item["graphs"]


def test_outcomes_per_row_sum_to_check_video_counts():
    frames, graphs = clip(0)
    damaged = frames.copy()
    damaged[2:4] = 0  # two black frames: nothing holds there
    damaged[5, :, :16] = 0  # the left half of the last frame erased
    for video in (frames, damaged):
        outcome = element_outcomes(video, graphs)
        result = check_video(video, graphs)
        per_frame_triples = np.add.reduceat(outcome.triples, np.cumsum([0] + [g.num_triples for g in graphs[:-1]]))
        per_frame_objects = np.add.reduceat(outcome.objects, np.cumsum([0] + [g.num_objects for g in graphs[:-1]]))
        assert per_frame_triples.tolist() == result.relation_correct_per_frame.tolist()
        assert per_frame_objects.tolist() == result.object_correct_per_frame.tolist()
    assert element_outcomes(frames, graphs).triples.all()
    assert not element_outcomes(damaged, graphs).triples.all()


@pytest.mark.parametrize("index", range(4))
def test_flipped_relation_is_not_satisfied_by_the_original_video(index):
    frames, graphs = clip(index)
    new_graphs, change = manipulate_graph(graphs, "relation", rng=index)
    assert change.kind == "relation" and len(new_graphs) == len(graphs)
    # exactly one object pair flipped, in every frame (shapes graphs relate every pair in every frame)
    changed = change.changed.triples.reshape(len(graphs), -1)
    assert (changed.sum(axis=1) == 1).all()
    for old, new, rows in zip(graphs, new_graphs, changed):
        assert torch.equal(old.objs, new.objs) and torch.equal(old.triples[:, [0, 2]], new.triples[:, [0, 2]])
        k = int(np.flatnonzero(rows)[0])
        assert VOCAB.predicates[int(new.triples[k, 1])] == OPPOSITE[VOCAB.predicates[int(old.triples[k, 1])]]
        keep = torch.arange(old.num_triples) != k
        assert torch.equal(old.triples[keep], new.triples[keep])

    before = element_outcomes(frames, graphs)
    after = element_outcomes(frames, new_graphs)  # a "model" that ignored the change
    assert before.triples.all() and before.objects.all()
    assert not after.triples[change.changed.triples].any(), "the flipped relation must not hold in the original clip"
    assert after.triples[change.unchanged.triples].all() and after.objects[change.unchanged.objects].all()
    scores = score_manipulation(before, after, change.changed, change.unchanged)
    assert scores["changed_accuracy"] == 0.0 and scores["changed_before_accuracy"] == 1.0
    assert scores["unchanged_accuracy"] == 1.0 and scores["unchanged_preserved"] == 1.0
    assert scores["num_changed"] == len(graphs)


@pytest.mark.parametrize("index", range(4))
def test_replaced_object_is_not_found_in_the_original_video(index):
    frames, graphs = clip(index)
    new_graphs, change = manipulate_graph(graphs, "object", rng=index)
    old_names = [VOCAB.objects[int(i)] for i in graphs[0].objs]
    new_names = [VOCAB.objects[int(i)] for i in new_graphs[0].objs]
    replaced = [i for i, (a, b) in enumerate(zip(old_names, new_names)) if a != b]
    assert len(replaced) == 1
    new_colour = new_names[replaced[0]].split()[0]
    assert new_colour not in {name.split()[0] for name in old_names}, "a colour the graph did not have"
    assert change.description == f"object {replaced[0]}: {old_names[replaced[0]]} -> {new_names[replaced[0]]}"

    before, after = element_outcomes(frames, graphs), element_outcomes(frames, new_graphs)
    assert not after.objects[change.changed.objects].any()
    assert after.objects[change.unchanged.objects].all() and after.triples[change.unchanged.triples].all()
    # triples with the replaced object are neither changed nor unchanged: they fail here, so they must be out
    touching = ~change.unchanged.triples & ~change.changed.triples
    assert touching.any() and not after.triples[touching].any()
    scores = score_manipulation(before, after, change.changed, change.unchanged)
    assert scores["changed_accuracy"] == 0.0 and scores["unchanged_preserved"] == 1.0


def test_a_video_that_follows_the_change_scores_full_marks():
    """Re-render ground truth for the manipulated graphs: the change shows and the rest holds."""
    befores, afters, changed, unchanged = [], [], [], []
    # object change: the replaced object gets its new colour and shape on the same trajectory
    for index in range(3):
        params = WORLD.params("test", index)
        frames, graphs = clip(index)
        new_graphs, change = manipulate_graph(graphs, "object", rng=10 + index)
        i = int(np.flatnonzero(change.changed.objects[: graphs[0].num_objects])[0])
        colour, shape = VOCAB.objects[int(new_graphs[0].objs[i])].split()
        edited = copy.deepcopy(params)
        edited.colours[i] = [name for name, _ in COLOURS].index(colour)
        edited.shapes[i] = SHAPES.index(shape)
        new_frames = WORLD.render([edited])[0]
        befores.append(element_outcomes(frames, graphs))
        afters.append(element_outcomes(new_frames, new_graphs))
        changed.append(change.changed)
        unchanged.append(change.unchanged)
    # relation change in a two-object world: the objects swap trajectories, so the one relation flips
    pair_world = ShapesWorld(size=32, frames=6, min_objects=2, max_objects=2, seed=0)
    for index in range(3):
        params = pair_world.params("test", index)
        frames, graphs = clip(index, pair_world)
        new_graphs, change = manipulate_graph(graphs, "relation", rng=index)
        swapped = copy.deepcopy(params)
        swapped.centres = params.centres[::-1].copy()
        befores.append(element_outcomes(frames, graphs))
        afters.append(element_outcomes(pair_world.render([swapped])[0], new_graphs))
        changed.append(change.changed)
        unchanged.append(change.unchanged)
    scores = score_manipulation(befores, afters, changed, unchanged)
    assert scores == {
        "changed_accuracy": 1.0,
        "changed_before_accuracy": 1.0,
        "unchanged_accuracy": 1.0,
        "unchanged_preserved": 1.0,
        "num_changed": 6 * 6,
        "num_unchanged": sum(c.count for c in unchanged),
    }


def test_scores_count_rows_and_say_nan_when_empty():
    from sg2video.eval.manipulation import Outcomes, Selection

    before = Outcomes(triples=np.array([1, 1, 0, 1], bool), objects=np.array([1, 0], bool))
    after = Outcomes(triples=np.array([0, 1, 1, 0], bool), objects=np.array([1, 1], bool))
    changed = Selection(triples=np.array([1, 0, 0, 0], bool), objects=np.array([0, 0], bool))
    unchanged = Selection(triples=np.array([0, 1, 1, 1], bool), objects=np.array([1, 1], bool))
    scores = score_manipulation(before, after, changed, unchanged)
    assert scores["changed_accuracy"] == 0.0 and scores["changed_before_accuracy"] == 1.0
    assert scores["unchanged_accuracy"] == pytest.approx(4 / 5)  # triples 1, 2 and both objects
    assert scores["unchanged_preserved"] == pytest.approx(2 / 3)  # held before: triples 1, 3 and object 0
    nothing = Selection(triples=np.zeros(4, bool), objects=np.zeros(2, bool))
    assert math.isnan(score_manipulation(before, after, nothing, nothing)["changed_accuracy"])
    with pytest.raises(ValueError, match="line up"):
        score_manipulation(before, after, Selection(np.zeros(3, bool), np.zeros(2, bool)), unchanged)
    with pytest.raises(ValueError, match="one entry per video"):
        score_manipulation([before, before], [after], [changed], [unchanged])


def test_graph_json_input_errors_and_determinism():
    graph_json = {
        "objects": ["red circle", "blue square", "green triangle"],
        "relations": [["red circle", "left of", "blue square"], [1, "above", 2]],
    }
    new_graphs, change = manipulate_graph(graph_json, "relation", rng=0, num_frames=4)
    assert len(new_graphs) == 4 and change.changed.triples.reshape(4, 2).sum(axis=1).tolist() == [1] * 4
    seen = {manipulate_graph(graph_json, "relation", rng=seed, num_frames=1)[1].description for seed in range(20)}
    assert seen == {
        "relation: red circle left of blue square -> right of (in 1 of 1 frames)",
        "relation: blue square above green triangle -> below (in 1 of 1 frames)",
    }
    assert manipulate_graph(graph_json, "object", rng=3, num_frames=2)[1].description == (
        manipulate_graph(graph_json, "object", rng=3, num_frames=2)[1].description
    )
    lonely = SceneGraph(torch.tensor([0]), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no relation to flip"):
        manipulate_graph(lonely, "relation", rng=0)
    with pytest.raises(ValueError, match="kind must be one of relation, object"):
        manipulate_graph(lonely, "colour", rng=0)
    all_colours = SceneGraph(torch.arange(0, 24, 3), torch.zeros(0, 3, dtype=torch.long))  # 8 colours used
    with pytest.raises(ValueError, match="every colour"):
        manipulate_graph(all_colours, "object", rng=0)

"""Vocab, SceneGraph packing, and the graph JSON format (shared/specs/graph_json.md)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sg2video.data.shapes import ShapesDataset, shapes_vocab
from sg2video.graph_json import GraphFormatError, graphs_to_json, load_graph_json, parse_graph, write_graph_json
from sg2video.graphs import GraphBatch, SceneGraph, Vocab

VOCAB = shapes_vocab()
RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE = 0, 7, 5
LEFT_OF, RIGHT_OF, ABOVE, BELOW = range(4)

STATIC_EXAMPLE = {
    "objects": ["red circle", "blue square", "green triangle"],
    "relations": [[0, "left of", 1], ["blue square", "above", "green triangle"]],
}
TIMELINE_EXAMPLE = {
    "objects": ["red circle", "blue square"],
    "timeline": [
        {"frames": [0, 8], "relations": [[0, "left of", 1]]},
        {"frames": [8, 24], "relations": [[0, "above", 1]]},
    ],
}


# ----------------------------------------------------------------------------------------------
# Vocab


def test_vocab_round_trips_through_json_and_maps_names_to_ids():
    vocab = Vocab(objects=["person", "chair", "cup"], predicates=["on", "holding"])
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab
    assert again.objects == ["person", "chair", "cup"] and again.predicates == ["on", "holding"]
    assert [again.object_id(n) for n in ("person", "chair", "cup", "table")] == [0, 1, 2, None]
    assert [again.predicate_id(n) for n in ("on", "holding", "under")] == [0, 1, None]
    assert (again.num_objects, again.num_predicates) == (3, 2)
    assert vocab != Vocab(objects=["person", "cup", "chair"], predicates=["on", "holding"])


def test_shapes_vocab_ids_follow_the_spec():
    assert VOCAB.num_objects == 24 and VOCAB.num_predicates == 4
    assert VOCAB.object_id("red circle") == 0
    assert VOCAB.object_id("red square") == 1
    assert VOCAB.object_id("blue square") == BLUE_SQUARE
    assert VOCAB.object_id("orange triangle") == 23
    assert VOCAB.predicates == ["left of", "right of", "above", "below"]


# ----------------------------------------------------------------------------------------------
# GraphBatch


def test_pack_reindexes_triples_into_the_concatenation():
    boxes0 = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    g0 = SceneGraph(objs=[5, 7, 9], triples=[[0, 1, 2], [2, 0, 1]], boxes=boxes0)
    g1 = SceneGraph(objs=[3, 4], triples=[[1, 2, 0]])  # no layout
    batch = GraphBatch.pack([g0, g1])
    assert batch.num_graphs == 2
    assert batch.objs.tolist() == [5, 7, 9, 3, 4]
    # graph 1's objects start at row 3: its local (1, 2, 0) becomes (4, 2, 3)
    assert batch.triples.tolist() == [[0, 1, 2], [2, 0, 1], [4, 2, 3]]
    assert batch.obj_to_graph.tolist() == [0, 0, 0, 1, 1]
    assert batch.triple_to_graph.tolist() == [0, 0, 1]
    assert batch.has_box.tolist() == [True, True, True, False, False]
    assert torch.equal(batch.boxes[:3], boxes0)
    assert batch.boxes[3:].abs().sum().item() == 0.0
    assert batch.objects_per_graph().tolist() == [3, 2]
    assert batch.triples_per_graph().tolist() == [2, 1]


def _random_graph(gen: torch.Generator, num_obj: int, num_tri: int, with_boxes: bool) -> SceneGraph:
    objs = torch.randint(0, 24, (num_obj,), generator=gen)
    if num_obj:
        triples = torch.stack(
            [
                torch.randint(0, num_obj, (num_tri,), generator=gen),
                torch.randint(0, 4, (num_tri,), generator=gen),
                torch.randint(0, num_obj, (num_tri,), generator=gen),
            ],
            dim=1,
        )
    else:
        triples = torch.zeros(0, 3, dtype=torch.long)
    boxes = torch.rand(num_obj, 4, generator=gen) if with_boxes and num_obj else None
    return SceneGraph(objs, triples, boxes)


def _graphs_equal(a: SceneGraph, b: SceneGraph) -> bool:
    if not a.same_relations(b):
        return False
    if a.boxes is None or b.boxes is None:
        return a.boxes is None and b.boxes is None
    return torch.equal(a.boxes, b.boxes)


def test_pack_unpack_round_trip_with_empty_graphs():
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 2, True), (0, 0, False), (4, 0, True), (1, 0, False), (5, 7, False), (0, 0, False), (2, 3, True)]
    graphs = [_random_graph(gen, *s) for s in shapes]
    batch = GraphBatch.pack(graphs)
    assert batch.objects_per_graph().tolist() == [s[0] for s in shapes]
    assert batch.triples_per_graph().tolist() == [s[1] for s in shapes]
    # every packed triple points at objects of its own graph
    assert torch.equal(batch.obj_to_graph[batch.triples[:, 0]], batch.triple_to_graph)
    assert torch.equal(batch.obj_to_graph[batch.triples[:, 2]], batch.triple_to_graph)
    unpacked = batch.unpack()
    assert len(unpacked) == len(graphs)
    for original, again in zip(graphs, unpacked):
        assert _graphs_equal(original, again)


def test_pack_of_no_graphs_and_of_only_empty_graphs():
    empty = GraphBatch.pack([])
    assert empty.num_graphs == 0
    assert empty.objs.shape == (0,) and empty.triples.shape == (0, 3) and empty.boxes.shape == (0, 4)
    assert empty.unpack() == []
    two_empty = GraphBatch.pack([SceneGraph([], []), SceneGraph([], [])])
    assert two_empty.num_graphs == 2
    assert two_empty.objects_per_graph().tolist() == [0, 0]
    assert [g.num_objects for g in two_empty.unpack()] == [0, 0]


# ----------------------------------------------------------------------------------------------
# Parsing the spec's examples


def test_parse_static_example_from_the_spec():
    spec = parse_graph(copy.deepcopy(STATIC_EXAMPLE), VOCAB)
    assert spec.objects == [RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE]
    assert spec.is_static and spec.length is None
    assert spec.segments[0].triples == [(0, LEFT_OF, 1), (1, ABOVE, 2)]
    frames = spec.frame_graphs(5)
    assert len(frames) == 5
    for graph in frames:
        assert graph.objs.tolist() == [RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE]
        assert graph.triples.tolist() == [[0, LEFT_OF, 1], [1, ABOVE, 2]]
        assert graph.boxes is None
    with pytest.raises(ValueError):
        spec.frame_graphs()


def test_parse_timeline_example_from_the_spec():
    spec = parse_graph(copy.deepcopy(TIMELINE_EXAMPLE), VOCAB)
    assert spec.objects == [RED_CIRCLE, BLUE_SQUARE]
    assert not spec.is_static and spec.length == 24
    assert [(s.start, s.end) for s in spec.segments] == [(0, 8), (8, 24)]
    frames = spec.frame_graphs()
    assert len(frames) == 24
    assert all(g.triples.tolist() == [[0, LEFT_OF, 1]] for g in frames[:8])
    assert all(g.triples.tolist() == [[0, ABOVE, 1]] for g in frames[8:])


def test_duplicate_names_are_fine_when_referred_to_by_index_and_boxes_are_kept():
    data = {
        "objects": ["red circle", "red circle", "blue square"],
        "relations": [[0, "left of", 1], [1, "below", "blue square"]],
        "boxes": [[0, 0, 0.25, 0.25], None, [0.5, 0.5, 1, 1]],
    }
    spec = parse_graph(data, VOCAB)
    assert spec.objects == [RED_CIRCLE, RED_CIRCLE, BLUE_SQUARE]
    assert spec.segments[0].triples == [(0, LEFT_OF, 1), (1, BELOW, 2)]
    assert spec.segments[0].boxes == [[0.0, 0.0, 0.25, 0.25], None, [0.5, 0.5, 1.0, 1.0]]
    # one object without a box: the others keep theirs (shared/specs/graph_json.md: null is "no box" for that one)
    graph = spec.frame_graphs(1)[0]
    assert graph.has_box.tolist() == [True, False, True]
    assert graph.boxes[0].tolist() == [0.0, 0.0, 0.25, 0.25] and graph.boxes[2].tolist() == [0.5, 0.5, 1.0, 1.0]
    batch = GraphBatch.pack([graph])
    assert batch.has_box.tolist() == [True, False, True]
    back = batch.unpack()[0]
    assert back.has_box.tolist() == [True, False, True] and torch.equal(back.boxes, graph.boxes)
    assert graphs_to_json(VOCAB, [graph])["timeline"][0]["boxes"][1] is None
    data["boxes"][1] = [0.25, 0, 0.5, 0.25]
    boxes = parse_graph(data, VOCAB).frame_graphs(1)[0].boxes
    assert boxes is not None and boxes.tolist()[1] == [0.25, 0.0, 0.5, 0.25]


# ----------------------------------------------------------------------------------------------
# Refusals: one line naming the file, the place and the problem


def _timeline(*segments: dict) -> dict:
    return {"objects": ["red circle", "blue square"], "timeline": list(segments)}


REFUSALS = [
    # (graph, max_objects, location, problem fragment)
    ({"objects": ["red circle", "purple circle"]}, None, "objects[1]", 'unknown object "purple circle" (known: red circle, red square'),
    (
        {"objects": ["red circle", "blue square"], "relations": [[0, "left of", 1], [0, "besides", 1]]},
        None,
        "relations[1]",
        'unknown predicate "besides" (known: left of, right of, above, below)',
    ),
    ({"objects": ["red circle", "blue square"], "relations": [[0, "left of", 2]]}, None, "relations[0]", "object index 2 out of range (0..1)"),
    ({"objects": ["red circle", "blue square"], "relations": [[-1, "left of", 1]]}, None, "relations[0]", "object index -1 out of range"),
    (
        {"objects": ["red circle", "red circle", "blue square"], "relations": [["red circle", "above", 2]]},
        None,
        "relations[0]",
        '"red circle" is ambiguous: it occurs 2 times',
    ),
    ({"objects": ["red circle"], "relations": [[0, "above", "green circle"]]}, None, "relations[0]", '"green circle" is not among'),
    ({"objects": []}, None, "objects", "empty"),
    ({"objects": ["red circle", "blue square"], "relations": [[0, "above", "red circle"]]}, None, "relations[0]", "self-relation"),
    (_timeline({"frames": [0, 8]}, {"frames": [9, 12]}), None, "timeline[1].frames", "gap: segment starts at 9, expected 8"),
    (_timeline({"frames": [0, 8]}, {"frames": [7, 12]}), None, "timeline[1].frames", "overlap: segment starts at 7, expected 8"),
    (_timeline({"frames": [2, 8]}), None, "timeline[0].frames", "starts at 2, expected 0"),
    (_timeline({"frames": [0, 8]}, {"frames": [8, 8]}), None, "timeline[1].frames", "empty range [8, 8)"),
    (_timeline({"frames": [0, 8]}, {"frames": [8, 3]}), None, "timeline[1].frames", "empty range [8, 3)"),
    (_timeline(), None, "timeline", "non-empty list"),
    (
        {"objects": ["red circle", "blue square", "green circle"]},
        2,
        "objects",
        "3 objects, but this model takes at most 2",
    ),
    # wrong types
    ([STATIC_EXAMPLE], None, "g.json", "expected a JSON object"),
    ({"relations": []}, None, "objects", "missing"),
    ({"objects": "red circle"}, None, "objects", "expected a list of object names, got str"),
    ({"objects": ["red circle", 3]}, None, "objects[1]", "expected an object name (string), got 3"),
    ({"objects": ["red circle", "blue square"], "relations": {"0": 1}}, None, "relations", "expected a list"),
    ({"objects": ["red circle", "blue square"], "relations": [[0, "left of"]]}, None, "relations[0]", "expected [subject, predicate, object]"),
    ({"objects": ["red circle", "blue square"], "relations": [[0, 2, 1]]}, None, "relations[0]", "expected a predicate name (string), got 2"),
    ({"objects": ["red circle", "blue square"], "relations": [[0.0, "above", 1]]}, None, "relations[0]", "expected an object index or name, got 0.0"),
    ({"objects": ["red circle", "blue square"], "relations": [[True, "above", 1]]}, None, "relations[0]", "expected an object index or name, got true"),
    ({"objects": ["red circle"], "colour": "red"}, None, '"colour"', "unknown key"),
    (_timeline({"frames": [0, 8], "relation": []}), None, "timeline[0]", 'unknown key "relation"'),
    (_timeline({"frames": ["0", 8]}), None, "timeline[0].frames", "expected [start, end) as two integers"),
    (_timeline({"frames": [0.0, 8.0]}), None, "timeline[0].frames", "expected [start, end) as two integers"),
    (_timeline([0, 8]), None, "timeline[0]", "expected an object"),
    ({"objects": ["red circle"], "timeline": {"frames": [0, 8]}}, None, "timeline", "non-empty list"),
    ({**_timeline({"frames": [0, 8]}), "relations": []}, None, "relations", 'not allowed beside "timeline"'),
    # bad boxes
    ({"objects": ["red circle", "blue square"], "boxes": [[0, 0, 1, 1]]}, None, "boxes", "expected a list of 2 boxes"),
    ({"objects": ["red circle"], "boxes": [[0, 0, 1.5, 1]]}, None, "boxes[0]", "expected [x0, y0, x1, y1] in [0, 1]"),
    ({"objects": ["red circle"], "boxes": [[0.6, 0, 0.5, 1]]}, None, "boxes[0]", "x0 <= x1"),
    ({"objects": ["red circle"], "boxes": [[0, 0.7, 0.5, 0.2]]}, None, "boxes[0]", "y0 <= y1"),
    ({"objects": ["red circle"], "boxes": [[0, 0, 1]]}, None, "boxes[0]", "got [0, 0, 1]"),
    ({"objects": ["red circle"], "boxes": [[0, 0, True, 1]]}, None, "boxes[0]", "expected [x0, y0, x1, y1]"),
    ({"objects": ["red circle"], "boxes": [[0, 0, 10**400, 1]]}, None, "boxes[0]", "expected [x0, y0, x1, y1]"),
    ({"objects": ["red circle"], "boxes": "none"}, None, "boxes", "expected a list of 1 boxes"),
    (_timeline({"frames": [0, 4], "boxes": [None, [0, 0, 2, 2]]}), None, "timeline[0].boxes[1]", "expected [x0, y0, x1, y1]"),
]


def _assert_one_line(message: str) -> None:
    assert message.splitlines() == [message], f"not one line: {message!r}"


@pytest.mark.parametrize("graph, max_objects, location, problem", REFUSALS)
def test_refusal_names_file_location_and_problem(tmp_path, graph, max_objects, location, problem):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(GraphFormatError) as info:
        load_graph_json(path, VOCAB, max_objects=max_objects)
    message = str(info.value)
    _assert_one_line(message)
    assert message.startswith("g.json: "), message
    assert location in message, message
    assert problem in message, message


def test_spec_error_example_is_reproduced_exactly():
    graph = {"objects": ["red circle", "blue square"], "relations": [[0, "left of", 1], [0, "besides", 1]]}
    with pytest.raises(GraphFormatError) as info:
        parse_graph(graph, VOCAB, source="graph.json")
    assert str(info.value) == (
        'graph.json: relations[1]: unknown predicate "besides" (known: left of, right of, above, below)'
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"objects": ["red circle"', "not valid JSON (line 1"),
        ("", "not valid JSON"),
        ("{'objects': ['red circle']}", "not valid JSON"),
        ('{"objects": [' + "1" * 5000 + "]}", "not valid JSON"),  # beyond Python's int digit limit
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_a_file_that_is_not_json_is_refused(tmp_path, text, problem):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(GraphFormatError) as info:
        load_graph_json(path, VOCAB)
    _assert_one_line(str(info.value))
    assert str(info.value).startswith("g.json: ") and problem in str(info.value)


def test_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(GraphFormatError, match="no such graph file"):
        load_graph_json(tmp_path / "nope.json", VOCAB)
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"objects": ["caf\xe9"]}')
    with pytest.raises(GraphFormatError, match="cannot read graph file"):
        load_graph_json(path, VOCAB)


def test_names_with_line_breaks_give_one_line_messages():
    for bad in ("red\ncircle", "red circle\r", "x\u2028y", "a\x85b"):
        for graph in (
            {"objects": [bad]},
            {"objects": ["red circle", "blue square"], "relations": [[0, bad, 1]]},
            {"objects": ["red circle", "blue square"], "relations": [[bad, "above", 1]]},
            {"objects": ["red circle"], bad: 1},
            _timeline({"frames": [0, 1], bad: 1}),
        ):
            with pytest.raises(GraphFormatError) as info:
                parse_graph(graph, VOCAB, source="g.json")
            _assert_one_line(str(info.value))


def test_long_values_are_shortened_in_messages():
    with pytest.raises(GraphFormatError) as info:
        parse_graph({"objects": ["red circle", "x" * 10_000]}, VOCAB, source="g.json")
    assert len(str(info.value)) < 400


# ----------------------------------------------------------------------------------------------
# graphs_to_json -> parse_graph on shapes clips


def test_graphs_to_json_segments_a_hand_worked_clip():
    objs = [RED_CIRCLE, BLUE_SQUARE]
    boxes = [torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]) + 0.1 * t for t in range(4)]
    rels = [[[0, LEFT_OF, 1]], [[0, LEFT_OF, 1]], [[0, ABOVE, 1]], [[0, ABOVE, 1]]]
    graphs = [SceneGraph(objs, rels[t], boxes[t]) for t in range(4)]
    data = graphs_to_json(VOCAB, graphs, source={"dataset": "hand"})
    assert data["objects"] == ["red circle", "blue square"]
    assert [seg["frames"] for seg in data["timeline"]] == [[0, 2], [2, 4]]
    assert data["timeline"][0]["relations"] == [[0, "left of", 1]]
    assert data["timeline"][1]["relations"] == [[0, "above", 1]]
    # a segment's boxes are its first frame's (frame 2), not frame 3's
    assert torch.allclose(torch.tensor(data["timeline"][1]["boxes"]), boxes[2], atol=1e-6)
    assert torch.allclose(torch.tensor(data["timeline"][0]["boxes"]), boxes[0], atol=1e-6)
    assert data["source"] == {"dataset": "hand"}


@pytest.mark.parametrize("size, frames", [(32, 12), (64, 8)])
def test_graphs_to_json_round_trips_shapes_clips(tmp_path, size, frames):
    dataset = ShapesDataset("val", length=6, size=size, frames=frames, min_objects=2, max_objects=6)
    for index in range(6):
        item = dataset[index]
        graphs = item["graphs"]
        data = graphs_to_json(VOCAB, graphs, source=item["source"])
        path = tmp_path / f"{index}.json"
        write_graph_json(path, data)
        spec = load_graph_json(path, VOCAB, max_objects=8)
        assert spec.length == frames
        again = spec.frame_graphs()
        assert len(again) == frames
        changes = sum(not graphs[t].same_relations(graphs[t - 1]) for t in range(1, frames))
        assert len(spec.segments) == changes + 1
        for seg in spec.segments:
            first = graphs[seg.start]
            for t in range(seg.start, seg.end):
                assert again[t].same_relations(graphs[t])  # objects and every relation, per frame
                # boxes: each segment carries the boxes of its first frame
                assert again[t].boxes is not None
                assert torch.allclose(again[t].boxes, first.boxes, atol=1e-6)
        assert json.loads(path.read_text())["source"] == item["source"]


# ----------------------------------------------------------------------------------------------
# Property tests: anything JSON-like either parses or is refused with one GraphFormatError line

_names = st.sampled_from(VOCAB.objects[:6] + VOCAB.predicates + ["", "purple circle", "left of "])
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 1, 2, 8])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | _names
)
_json_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(["objects", "relations", "boxes", "timeline", "frames", "source"]), children, max_size=4),
    max_leaves=24,
)


def _check_parse_or_refuse(value) -> None:
    try:
        spec = parse_graph(value, VOCAB, source="g.json", max_objects=8)
    except GraphFormatError as err:
        message = str(err)
        _assert_one_line(message)
        assert message.startswith("g.json: ")
        return
    # accepted: what came out obeys the format's rules
    assert 1 <= len(spec.objects) <= 8
    assert all(0 <= o < VOCAB.num_objects for o in spec.objects)
    expected_start = 0
    for seg in spec.segments:
        assert seg.start == expected_start
        if seg.end is not None:
            assert seg.end > seg.start
            expected_start = seg.end
        for s, p, o in seg.triples:
            assert 0 <= s < len(spec.objects) and 0 <= o < len(spec.objects) and s != o
            assert 0 <= p < VOCAB.num_predicates
    if spec.is_static or spec.length <= 256:
        frames = spec.frame_graphs(3)
        assert all(g.num_objects == len(spec.objects) for g in frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values)
def test_random_json_values_parse_or_are_refused(value):
    _check_parse_or_refuse(value)


_graph_like = st.fixed_dictionaries(
    {
        "objects": st.lists(st.sampled_from(VOCAB.objects[:6]), min_size=1, max_size=4)
        | st.lists(_names, min_size=0, max_size=9)
        | _json_values
    },
    optional={
        "relations": st.lists(st.lists(st.integers(-1, 9) | _names | _leaves, min_size=2, max_size=4), max_size=4) | _json_values,
        "boxes": st.lists(st.none() | st.lists(st.floats(-0.5, 1.5) | _leaves, min_size=3, max_size=5), max_size=9) | _json_values,
        "timeline": st.lists(
            st.fixed_dictionaries(
                {"frames": st.lists(st.integers(-2, 30) | _leaves, min_size=1, max_size=3)},
                optional={"relations": st.lists(st.lists(st.integers(-1, 3) | _names, min_size=3, max_size=3), max_size=3), "boxes": _json_values},
            )
            | _json_values,
            max_size=4,
        ),
        "source": _json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_graph_like)
def test_graph_shaped_values_parse_or_are_refused(value):
    _check_parse_or_refuse(value)


def _paths(value, prefix=()):
    """Every place inside a JSON value: key paths to each dict value and list element."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, prefix + (i,))


_VALID = {
    "objects": ["red circle", "blue square", "green triangle"],
    "timeline": [
        {"frames": [0, 3], "relations": [[0, "left of", 1], ["blue square", "above", 2]], "boxes": [[0, 0, 0.2, 0.2], None, [0.5, 0.5, 0.7, 0.7]]},
        {"frames": [3, 5], "relations": [[1, "below", "green triangle"]]},
    ],
    "source": {"dataset": "shapes", "index": 3},
}
_VALID_PATHS = list(_paths(_VALID))[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_of_a_valid_graph_parse_or_are_refused(data):
    graph = copy.deepcopy(_VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_VALID_PATHS))
        parent = graph
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]]  # still there after an earlier mutation?
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)):  # an earlier mutation put a string where a container was
            continue
        action = data.draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = data.draw(_json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
    _check_parse_or_refuse(graph)


def test_the_unmutated_valid_graph_parses():
    spec = parse_graph(copy.deepcopy(_VALID), VOCAB, max_objects=8)
    assert spec.length == 5 and len(spec.segments) == 2


def test_relation_segments_split_where_objects_or_relations_change():
    from sg2video.graphs import relation_segments

    a = SceneGraph([0, 1], [[0, 0, 1]])
    b = SceneGraph([0, 1], [[0, 1, 1]])  # same objects, another predicate
    c = SceneGraph([0, 2], [[0, 1, 1]])  # another object
    moved = SceneGraph([0, 1], [[0, 0, 1]], boxes=[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])  # boxes do not split
    assert relation_segments([a, a, moved, b, b, c]) == [(0, 3), (3, 5), (5, 6)]
    assert relation_segments([a]) == [(0, 1)]

"""Pictures of scene graphs and boxes drawn on frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sg2video.data.shapes import PALETTE, ShapesWorld, shapes_vocab
from sg2video.graphs import SceneGraph, Vocab
from sg2video.viz import draw_graph, draw_timeline, frames_with_boxes, name_colour

VOCAB = shapes_vocab()
RED, GREY = (255, 0, 0), (160, 160, 160)


def _png(path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _count(image: np.ndarray, rgb) -> int:
    return int((image == np.array(rgb, dtype=np.uint8)).all(axis=-1).sum())


def _assert_non_trivial(image: np.ndarray) -> None:
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # not one flat colour


def test_name_colour():
    assert name_colour("red circle") == RED
    assert name_colour("orange triangle") == (255, 128, 0)
    assert name_colour("person") == GREY
    assert name_colour("") == GREY


def test_draw_graph_colours_nodes_by_their_names(tmp_path):
    vocab = Vocab(objects=["red circle", "blue square", "person"], predicates=["left of", "holding"])
    graph = SceneGraph([0, 1, 2], [[0, 0, 1], [2, 1, 0], [0, 0, 2]])
    image = _png(draw_graph(vocab, graph, tmp_path / "g.png", title="three objects"))
    _assert_non_trivial(image)
    assert _count(image, RED) > 200  # the "red circle" node's fill
    assert _count(image, (0, 0, 255)) > 200
    assert _count(image, GREY) > 200  # "person" has no palette colour
    assert _count(image, (0, 255, 0)) == 0  # no green object, no green pixel


@pytest.mark.parametrize("num_objects", [1, 2, 30])
def test_draw_graph_handles_sizes_duplicates_and_no_triples(tmp_path, num_objects):
    objs = [0] * num_objects  # every object is a "red circle": duplicate names
    graph = SceneGraph(objs, torch.zeros(0, 3, dtype=torch.long))
    image = _png(draw_graph(VOCAB, graph, tmp_path / "g.png"))
    _assert_non_trivial(image)
    assert _count(image, RED) > 30 * num_objects
    if num_objects == 30:
        triples = [[i, i % 4, (i + 1) % 30] for i in range(30)] + [[1, 0, 0], [0, 3, 1]]
        image = _png(draw_graph(VOCAB, SceneGraph(list(range(24)) + [0] * 6, triples), tmp_path / "dense.png"))
        _assert_non_trivial(image)


def _graphs_with_segments(relations_per_frame: list[int]) -> list[SceneGraph]:
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]])
    return [SceneGraph([0, 7], [[0, pred, 1]], boxes) for pred in relations_per_frame]


def test_draw_timeline_draws_one_panel_per_segment(tmp_path):
    one = _png(draw_timeline(VOCAB, _graphs_with_segments([0, 0, 0]), tmp_path / "one.png"))
    three = _png(draw_timeline(VOCAB, _graphs_with_segments([0, 0, 2, 2, 1, 1]), tmp_path / "three.png"))
    _assert_non_trivial(one)
    _assert_non_trivial(three)
    assert one.shape[1] == 400 and three.shape[1] == 1200  # 4-inch panels at 100 dpi, side by side
    assert _count(three, RED) > 2.5 * _count(one, RED)  # the red node is drawn in each panel
    # many segments: at most 12 panels, 4 per row
    many = _png(draw_timeline(VOCAB, _graphs_with_segments([t % 4 for t in range(20)]), tmp_path / "many.png"))
    assert many.shape[1] == 1600 and many.shape[0] > 3 * 400


def test_draw_timeline_shows_the_frame_beside_the_graphs(tmp_path):
    frame = np.zeros((16, 16, 3), dtype=np.uint8)
    frame[4:12, 4:12] = (0, 255, 255)  # cyan: no node of this graph has it
    graphs = _graphs_with_segments([0, 0, 2])
    image = _png(draw_timeline(VOCAB, graphs, tmp_path / "t.png", frame=frame))
    assert image.shape[1] == 1200  # frame panel + two segments
    assert _count(image, (0, 255, 255)) > 1000


def test_frames_with_boxes_outlines_a_hand_made_box():
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    graph = SceneGraph([0], [], boxes=[[0.25, 0.25, 0.5, 0.5]])  # red circle over pixels 4..7
    out = frames_with_boxes(frames, graph, VOCAB)
    assert frames.sum() == 0  # the input is not changed
    outline = np.zeros((16, 16), dtype=bool)
    outline[3:9, [3, 8]] = True
    outline[[3, 8], 3:9] = True
    for t in range(2):
        lit = out[t].any(axis=-1)
        np.testing.assert_array_equal(lit, outline)
        assert (out[t][outline] == (127, 0, 0)).all()  # red at half intensity
    unboxed = frames_with_boxes(frames, SceneGraph([0], []), VOCAB)
    assert unboxed.sum() == 0


def test_frames_with_boxes_surrounds_each_shapes_object():
    world = ShapesWorld(size=64, frames=4, min_objects=3, max_objects=4, seed=0)
    params = world.params("val", 2)
    frames = world.render([params])[0]
    graphs = world.graphs(params)
    out = frames_with_boxes(frames, graphs, world.vocab)
    r = world.radius
    objects = frames.any(axis=-1)
    assert (out[objects] == frames[objects]).all()  # outlines never cover an object's pixels
    changed = (out != frames).any(axis=-1)
    expected = np.zeros_like(changed)
    for k, colour in enumerate(params.colours):
        half = PALETTE[colour] // 2
        for t in range(world.frames):
            cx, cy = params.centres[k, t]
            x0, x1, y0, y1 = cx - r - 1, cx + r + 1, cy - r - 1, cy + r + 1
            for x in (x0, x1):
                if 0 <= x < 64:
                    assert (out[t, max(y0, 0) : y1 + 1, x] == half).all()
                    expected[t, max(y0, 0) : y1 + 1, x] = True
            for y in (y0, y1):
                if 0 <= y < 64:
                    assert (out[t, y, max(x0, 0) : x1 + 1] == half).all()
                    expected[t, y, max(x0, 0) : x1 + 1] = True
    np.testing.assert_array_equal(changed, expected)

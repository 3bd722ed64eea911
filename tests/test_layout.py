"""The generative layout stage (sg2video.layout): box space, conditioning, the relation-aware denoiser, the scorer,
window planning, and a trained model's layouts measured against the shapes world's rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sg2video.cli import CONF_DIR
from sg2video.data.shapes import ShapesDataset, shapes_vocab
from sg2video.diffusion import GaussianDiffusion, make_schedule
from sg2video.encoder.graph_encoder import GraphEncoder
from sg2video.eval.layouts import evaluate_layouts, rule_accuracy
from sg2video.graph_json import parse_graph
from sg2video.graphs import SceneGraph
from sg2video.layout.boxes import centres, from_model_space, moves, pairwise_iou, to_model_space
from sg2video.layout.condition import encode_layout_batch
from sg2video.layout.model import EdgeAttention, build_layout_module
from sg2video.layout.sampler import LayoutSampler, Window, _twins, plan_windows
from sg2video.layout.scorer import LayoutStats, RelationScorer, violations
from sg2video.layout.train import LayoutTask, drop_relations, given_mask

VOCAB = shapes_vocab()
LEFT_OF, RIGHT_OF, ABOVE, BELOW = range(4)
RED_CIRCLE, GREEN_SQUARE, BLUE_TRIANGLE = 0, 4, 8


def tiny_settings(**changes):
    cfg = OmegaConf.load(CONF_DIR / "layout" / "sampled.yaml")
    cfg.merge_with({"frames": 8, "prefix_frames": 1, "lookahead": 4, "dim": 32, "layers": 2, "heads": 2,
                    "edge_dim": 8, "timesteps": 100, "sample_steps": 10, "candidates": 2, **changes})
    return cfg


def encoder(cond_dim: int = 16) -> GraphEncoder:
    torch.manual_seed(0)
    return GraphEncoder(VOCAB.num_objects, VOCAB.num_predicates, dim=16, cond_dim=cond_dim, layers=1, hidden=16).eval()


# -- boxes -------------------------------------------------------------------------------------------


def test_model_space_round_trips_and_box_arithmetic_by_hand():
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.6], [0.5, 0.5, 1.0, 1.0]])
    assert torch.allclose(to_model_space(boxes), torch.tensor([[-0.6, -0.2, -0.6, -0.2], [0.5, 0.5, 0.0, 0.0]]))
    assert torch.allclose(from_model_space(to_model_space(boxes)), boxes, atol=1e-6)
    # a model-space box reaching outside the frame is clipped to it
    # centre (0.95, 0.5), size 0.75: x1 = 1.325 is cut to 1
    assert from_model_space(torch.tensor([0.9, 0.0, 0.5, 0.5])).tolist() == pytest.approx([0.575, 0.125, 1.0, 0.875])
    iou = pairwise_iou(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.9, 0.9, 1.0, 1.0]]))
    assert iou[0, 1].item() == pytest.approx(0.0625 / (0.25 + 0.25 - 0.0625)) and iou[0, 2].item() == 0.0
    track = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.3, 0.4, 0.5, 0.6]])  # centre (0.1, 0.1) -> (0.4, 0.5)
    assert moves(track).tolist() == pytest.approx([0.5]) and centres(track)[1].tolist() == pytest.approx([0.4, 0.5])


# -- conditioning ------------------------------------------------------------------------------------


def test_layout_batch_puts_objects_triples_and_boxes_where_their_clip_and_frame_are():
    a = [SceneGraph([RED_CIRCLE, GREEN_SQUARE], [[0, LEFT_OF, 1]], [[0, 0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]),
         SceneGraph([RED_CIRCLE, GREEN_SQUARE], [[1, ABOVE, 0]], [[0.1, 0, 0.3, 0.2], [0.5, 0.5, 0.7, 0.7]])]
    b_graph = SceneGraph([BLUE_TRIANGLE, RED_CIRCLE, GREEN_SQUARE], [[2, BELOW, 0], [0, RIGHT_OF, 1]],
                         [[0, 0, 0.1, 0.1]] * 3, box_mask=[True, False, True])
    batch = encode_layout_batch(encoder(), [a, [b_graph, b_graph]])
    assert batch.shape == (2, 3, 2)
    assert batch.classes.tolist() == [[RED_CIRCLE, GREEN_SQUARE, 0], [BLUE_TRIANGLE, RED_CIRCLE, GREEN_SQUARE]]
    assert batch.obj_mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.triples[0, 1, 0].tolist() == [1, ABOVE, 0] and batch.triple_mask[0].tolist() == [[True, False]] * 2
    assert batch.triples[1, 0].tolist() == [[2, BELOW, 0], [0, RIGHT_OF, 1]]
    assert batch.has_box[1, :, 0].tolist() == [True, False, True] and not batch.has_box[0, 2].any()
    assert torch.allclose(from_model_space(batch.boxes[0, 0, 1]), torch.tensor([0.1, 0.0, 0.3, 0.2]))
    # every real object and triple has its own encoder token (a tiny graph is far below the token cap)
    assert (batch.obj_tokens[batch.obj_mask].abs().sum(-1) > 0).all()
    assert (batch.triple_tokens[batch.triple_mask].abs().sum(-1) > 0).all()
    # without an encoder: the same graph and boxes, no tokens
    bare = encode_layout_batch(None, [a, [b_graph, b_graph]])
    assert torch.equal(bare.triples, batch.triples) and torch.equal(bare.boxes, batch.boxes)


def test_identical_consecutive_frames_are_encoded_once_with_the_same_tokens():
    graph = SceneGraph([RED_CIRCLE, GREEN_SQUARE], [[0, LEFT_OF, 1]])
    other = SceneGraph([RED_CIRCLE, GREEN_SQUARE], [[0, ABOVE, 1]])
    enc = encoder()
    together = encode_layout_batch(enc, [[graph, graph, other]])
    alone = encode_layout_batch(enc, [[other]])
    assert torch.allclose(together.obj_tokens[0, :, 2], alone.obj_tokens[0, :, 0], atol=1e-6)
    assert torch.equal(together.obj_tokens[0, :, 0], together.obj_tokens[0, :, 1])


# -- the denoiser ------------------------------------------------------------------------------------


def test_edge_attention_sees_each_pair_through_its_own_edge():
    torch.manual_seed(0)
    attn = EdgeAttention(dim=8, heads=2, edge_dim=4)
    x = torch.randn(1, 3, 8)
    edges = torch.zeros(1, 3, 3, 4)
    mask = torch.ones(1, 3, dtype=torch.bool)
    base = attn(x, edges, mask)
    edges[0, 0, 2] = torch.randn(4)  # only object 0's view of object 2 changes
    changed = attn(x, edges, mask)
    assert not torch.allclose(changed[0, 0], base[0, 0]) and torch.allclose(changed[0, 1:], base[0, 1:])
    # a masked key is invisible whatever it holds
    hidden = torch.tensor([[True, True, False]])
    x2 = x.clone()
    x2[0, 2] = 100.0
    assert torch.allclose(attn(x, edges, hidden)[0, :2], attn(x2, edges, hidden)[0, :2])


def test_the_denoiser_is_equivariant_to_the_order_of_objects():
    torch.manual_seed(0)
    module = build_layout_module(tiny_settings(), VOCAB.num_objects, VOCAB.num_predicates, 16).eval()
    graph = [SceneGraph([RED_CIRCLE, GREEN_SQUARE, BLUE_TRIANGLE], [[0, LEFT_OF, 1], [2, ABOVE, 1]])] * 3
    swapped = [SceneGraph([BLUE_TRIANGLE, GREEN_SQUARE, RED_CIRCLE], [[2, LEFT_OF, 1], [0, ABOVE, 1]])] * 3
    enc = encoder()
    x = torch.randn(1, 3, 3, 4)
    t = torch.full((1, 3, 3), 500)
    with torch.no_grad():
        out = module.denoiser(x, t, encode_layout_batch(enc, [graph]))
        out_swapped = module.denoiser(x[:, [2, 1, 0]], t, encode_layout_batch(enc, [swapped]))
    assert torch.allclose(out[:, [2, 1, 0]], out_swapped, atol=1e-5)


# -- training pieces ---------------------------------------------------------------------------------


def test_relation_dropout_removes_whole_pairs_in_every_frame():
    torch.manual_seed(3)
    clip = [SceneGraph([0, 4, 8, 12], [[0, LEFT_OF, 1], [0, ABOVE, 2], [1, BELOW, 2], [2, LEFT_OF, 3]])] * 4
    dropped = [drop_relations([clip], 1.0)[0] for _ in range(20)]
    for frames in dropped:
        pairs = [{(min(s, o), max(s, o)) for s, _, o in g.triples.tolist()} for g in frames]
        assert all(p == pairs[0] for p in pairs)  # the same pairs in every frame
    counts = {len(frames[0].triples) for frames in dropped}
    assert len(counts) > 1 and max(counts) <= 4
    assert drop_relations([clip], 0.0)[0][0].num_triples == 4


def test_training_windows_are_cut_to_every_length_from_a_quarter_to_all():
    from sg2video.layout.train import crop_window

    torch.manual_seed(0)
    clip = [SceneGraph([RED_CIRCLE], torch.zeros(0, 3), [[0.1 * t, 0, 0.1 * t + 0.1, 0.1]]) for t in range(8)]
    lengths = set()
    for _ in range(60):
        cut = crop_window([clip, clip])
        lengths.add(len(cut[0]))
        assert len(cut[0]) == len(cut[1])
        first = int(round(float(cut[0][0].boxes[0, 0]) * 10))
        assert [g.boxes[0, 0].item() for g in cut[0]] == pytest.approx([0.1 * (first + i) for i in range(len(cut[0]))])
    assert lengths == set(range(2, 9))  # a quarter of 8 frames, up to all 8


def test_given_mask_gives_prefixes_and_whole_objects_never_all_and_only_real_boxes():
    torch.manual_seed(0)
    clips = [[SceneGraph([0, 4, 8], [[0, LEFT_OF, 1]], torch.rand(3, 4).sort(-1).values)] * 6 for _ in range(64)]
    cond = encode_layout_batch(None, clips)
    given = given_mask(cond, prefix_prob=1.0, given_prob=0.0)
    assert given[:, :, 0].all() and not given[:, :, -1].any()  # a prefix of 1..W-1 frames, whole frames
    assert (given == given[:, :1]).all()
    objects = given_mask(cond, prefix_prob=0.0, given_prob=1.0)
    assert (objects == objects[:, :, :1]).all()  # an object is given in every frame or none
    assert objects.any() and not objects.all(dim=(1, 2)).any()


def train_scorer(steps: int = 150) -> RelationScorer:
    torch.manual_seed(0)
    data = ShapesDataset("train", 10_000, size=32, frames=1)
    scorer = RelationScorer(VOCAB.num_objects, VOCAB.num_predicates)
    opt = torch.optim.Adam(scorer.parameters(), 3e-3)
    for step in range(steps):
        batch = encode_layout_batch(None, [it["graphs"] for it in data.__getitems__(range(step * 64, step * 64 + 64))])
        loss = scorer.loss(from_model_space(batch.boxes), batch.classes, batch.triples, batch.triple_mask, batch.has_box)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return scorer


def test_scorer_learns_the_shapes_rule_from_data():
    scorer = train_scorer()
    held_out = encode_layout_batch(None, [it["graphs"] for it in ShapesDataset("test", 256, size=32, frames=1).__getitems__(range(256))])
    from sg2video.layout.scorer import scorer_accuracy

    accuracy = scorer_accuracy(scorer, from_model_space(held_out.boxes), held_out.classes, held_out.triples,
                               held_out.triple_mask)
    assert accuracy > 0.95, accuracy  # measured 0.98 after 150 steps


def test_stats_and_violations_by_hand():
    # one clip, two objects over three frames: object 0 moves 0.1 then 0.3; object 1 still, overlapping object 0
    # in frame 2
    boxes = torch.tensor([[[[0.0, 0.0, 0.1, 0.1], [0.1, 0.0, 0.2, 0.1], [0.4, 0.0, 0.5, 0.1]],
                           [[0.4, 0.0, 0.5, 0.1], [0.4, 0.0, 0.5, 0.1], [0.4, 0.0, 0.5, 0.1]]]])
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    stats = LayoutStats.measure(boxes, mask, torch.ones(1, 2, dtype=torch.bool), quantile=1.0)
    assert stats.max_move == pytest.approx(0.3) and stats.max_overlap == pytest.approx(1.0)
    strict = LayoutStats(max_move=0.2, max_overlap=0.0)
    counts = violations(boxes, torch.ones(1, 2, dtype=torch.bool), strict, torch.ones(3, dtype=torch.bool))
    assert counts.tolist() == [2.0]  # the 0.3 move and the frame-2 overlap
    later = violations(boxes, torch.ones(1, 2, dtype=torch.bool), strict, torch.tensor([True, True, False]))
    assert later.tolist() == [0.0]
    # gaps between the two boxes: 0.3, 0.2, then -0.1 (they overlap); the data's smallest is the last one
    assert stats.min_gap == pytest.approx(-0.1)
    apart = LayoutStats(max_move=1.0, max_overlap=1.0, min_gap=0.25)  # a world whose objects keep 0.25 apart
    assert violations(boxes, torch.ones(1, 2, dtype=torch.bool), apart, torch.ones(3, dtype=torch.bool)).tolist() == [2.0]


ROW_OF_FOUR = {"objects": ["red circle", "green square", "blue triangle", "yellow circle"],
               "relations": [[0, "left of", 1], [1, "left of", 2], [2, "left of", 3]]}


def test_repair_moves_a_crowded_wrong_layout_until_every_relation_holds_and_objects_keep_apart():
    # four objects drawn on top of each other in the frame's middle, while the graph asks for a row of four:
    # no candidate to choose from, only the repair's gradient steps on the learned scorer and the data's limits
    settings = tiny_settings(repair_steps=100)
    module = build_layout_module(settings, VOCAB.num_objects, VOCAB.num_predicates, 16)
    module.scorer.load_state_dict(train_scorer().state_dict())
    stats = LayoutStats(max_move=0.1, max_overlap=0.0, min_gap=0.03, centre_lo=(0.1, 0.1), centre_hi=(0.9, 0.9))
    half = 0.08  # boxes of 0.16: a row of four fits with the data's gaps, inside the frame
    sampler = LayoutSampler(module, encoder(), stats, settings)
    graphs = parse_graph(ROW_OF_FOUR, VOCAB).frame_graphs(8)
    cond = encode_layout_batch(sampler.encoder, [graphs])
    jitter = torch.linspace(-0.02, 0.02, 4)[:, None].expand(4, 8)  # a hair apart, in the given order's reverse
    crowd = torch.stack([0.5 - jitter, 0.5 + jitter * 0.5], -1)
    x = to_model_space(torch.cat([crowd - half, crowd + half], -1))[None]  # (1, 4, 8, 4)
    given = torch.zeros(1, 4, 8, dtype=torch.bool)
    judged = torch.ones(8, dtype=torch.bool)
    before = from_model_space(x)
    assert rule_accuracy(before, cond.triples, cond.triple_mask, VOCAB) == 0.0
    with torch.inference_mode():  # as sample.py calls it
        after = from_model_space(sampler._repair(x, cond, given, judged, 100))
    assert rule_accuracy(after, cond.triples, cond.triple_mask, VOCAB) == 1.0
    from sg2video.layout.scorer import pairwise_gap

    gaps = pairwise_gap(after.transpose(1, 2))[:, :, ~torch.eye(4, dtype=torch.bool)]
    assert gaps.min() >= stats.min_gap - 0.005, gaps.min()  # apart as the data's objects are (measured 0.03+)
    assert torch.allclose(after[..., 2:] - after[..., :2], before[..., 2:] - before[..., :2], atol=1e-5)  # sizes kept
    assert moves(after).max() <= stats.max_move + 0.005  # and nothing jumps between frames
    # a given box never moves
    given[0, 1] = True
    kept = from_model_space(sampler._repair(x, cond, given, judged, 100))
    assert torch.equal(kept[0, 1], before[0, 1])


# -- windows -----------------------------------------------------------------------------------------


def test_windows_cover_a_timeline_with_given_prefixes_and_lookahead():
    assert plan_windows(6, 16, 4, 4) == [Window(0, 6, 0, 6)]
    windows = plan_windows(64, 16, 4, 4)
    assert windows[0] == Window(0, 16, 0, 12) and windows[1] == Window(8, 24, 12, 20)
    assert windows[-1].end == 64 and windows[-1].keep_until == 64 and windows[-1].start == 48
    kept = sorted(f for w in windows for f in range(w.given_until, w.keep_until))
    assert kept == list(range(64))  # every frame laid out exactly once
    assert all(w.given_until - w.start >= 4 for w in windows[1:])  # each later window continues 4+ given frames
    with pytest.raises(Exception, match="prefix_frames"):
        plan_windows(20, 16, 0, 4)


def test_samples_of_one_graph_are_twins_and_a_different_graph_or_given_box_is_not():
    row = parse_graph(ROW_OF_FOUR, VOCAB).frame_graphs(4)
    other = [g.without_boxes() for g in ShapesDataset("val", 4, size=32, frames=4)[0]["graphs"]]
    boxed = parse_graph({**ROW_OF_FOUR, "boxes": [[0.0, 0.0, 0.2, 0.2], None, None, None]}, VOCAB).frame_graphs(4)
    cond = encode_layout_batch(encoder(), [row, other, row, row, boxed], "cpu")
    assert _twins(cond) == [[2, 3], [], [0, 3], [0, 2], []]


def test_the_choice_among_candidates_that_look_right_by_hand():
    def boxes_at(*xs):  # (C, K=1, W=2, 4) model-space boxes of one object at centre (x, 0.5), 0.2 wide
        b = torch.tensor([[[[x - 0.1, 0.4, x + 0.1, 0.6]] * 2] for x in xs])
        return to_model_space(b)

    x = boxes_at(0.2, 0.5, 0.8, 0.3)
    right = torch.tensor([False, True, True, True])
    scores = torch.tensor([9.0, 1.0, 3.0, 2.0])
    judged = torch.ones(2, dtype=torch.bool)
    pick = LayoutSampler._pick_right
    assert pick(x, right, scores, x[:0], judged, "best") == 2  # the highest score among those that look right
    assert pick(x, right, scores, x[:0], judged, "first") == 1
    assert pick(x, right, scores, x[:0], judged, "diverse") == 1  # no sample chosen yet: the first
    assert pick(x, right, scores, boxes_at(0.75), judged, "diverse") == 3  # 0.45 from the peer; 0.8 is 0.05 away
    # peers at 0.75 and 0.35: 0.5 is 0.15 from its nearest peer, 0.8 and 0.3 only 0.05
    assert pick(x, right, scores, boxes_at(0.75, 0.35), judged, "diverse") == 1


def test_repel_pushes_each_sample_of_a_graph_away_from_the_others_and_leaves_a_lone_graph_alone():
    settings = tiny_settings(parameterization="x0")  # the output is the predicted boxes themselves
    module = build_layout_module(settings, VOCAB.num_objects, VOCAB.num_predicates, 16)
    sampler = LayoutSampler(module, encoder(), None, settings)
    row = parse_graph(ROW_OF_FOUR, VOCAB).frame_graphs(4)
    other = [g.without_boxes() for g in ShapesDataset("val", 4, size=32, frames=4)[0]["graphs"]]
    cond = encode_layout_batch(sampler.encoder, [row, row, other], "cpu")
    B, K, W = cond.shape
    given = torch.zeros(B, K, W, dtype=torch.bool)
    given[:, :, 0] = True  # a prefix frame: never moved
    x0 = torch.zeros(B, K, W, 4)
    x0[0, :, :, 0], x0[1, :, :, 0] = -0.2, 0.1  # sample 0 left of sample 1, every object
    samples = torch.tensor([[0, 0], [0, 1], [2, 2]])
    out = sampler._repel(x0, torch.zeros_like(x0), 10, cond, given, samples, 0.05)
    moved = out - x0
    real = cond.obj_mask[0]
    assert torch.allclose(moved[0, real, 1:, 0], torch.tensor(-0.05)) and torch.allclose(moved[1, real, 1:, 0], torch.tensor(0.05))
    assert moved[:, :, 0].abs().max() == 0 and moved[..., 1:].abs().max() == 0  # prefix frames, y, sizes kept
    assert moved[2].abs().max() == 0  # no other sample of its graph


# -- a trained model ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")  # built once per test run (conftest keeps its users in one worker)
def trained_sampler():
    """A small layout model trained 800 steps on 8-frame shapes clips (32 px), with a random frozen encoder (400
    steps left it jittery: 6% of its moves were 1.5x the world's longest; 800: 1.6%)."""
    torch.manual_seed(0)
    settings = tiny_settings(dim=64, layers=3, heads=4, edge_dim=16, parameterization="v", sample_steps=20,
                             candidates=4)
    enc = encoder()
    module = build_layout_module(settings, VOCAB.num_objects, VOCAB.num_predicates, 16)
    task = LayoutTask(module, enc, GaussianDiffusion(make_schedule("cosine", 100), "v"), settings)
    data = ShapesDataset("train", 100_000, size=32, frames=8)
    opt = torch.optim.AdamW(module.parameters(), 2e-3)
    for step in range(800):
        clips = [it["graphs"] for it in data.__getitems__(range(step * 32, step * 32 + 32))]
        loss = task.loss(module, clips, step)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    from sg2video.stages.layout import measure_stats

    return LayoutSampler(module, enc, measure_stats(data, 256), settings)


@pytest.mark.slow
def test_sampled_layouts_satisfy_held_out_relations_move_like_the_data_and_differ_by_seed(trained_sampler):
    clips = [it["graphs"] for it in ShapesDataset("test", 64, size=32, frames=8).__getitems__(range(48))]
    metrics = evaluate_layouts(trained_sampler, clips, VOCAB, samples=4, diversity_clips=8)
    assert metrics["relation_accuracy_gt"] == 1.0
    assert metrics["relation_accuracy"] > 0.9, metrics  # measured 0.97
    assert metrics["teleport_rate"] < 0.05 and metrics["overlap_rate"] < 0.05, metrics
    assert metrics["diversity"] > 0.08, metrics  # samples of one graph land apart (measured 0.16 of the frame)
    box_free = [[g.without_boxes() for g in clip] for clip in clips[:4]]
    one = trained_sampler.sample_boxes(box_free, torch.Generator().manual_seed(1))
    again = trained_sampler.sample_boxes(box_free, torch.Generator().manual_seed(1))
    other = trained_sampler.sample_boxes(box_free, torch.Generator().manual_seed(2))
    assert torch.equal(one, again)
    assert (centres(one) - centres(other)).norm(dim=-1).mean() > 0.05


@pytest.mark.slow
def test_the_diverse_choice_and_repel_spread_samples_of_one_graph_and_keep_them_right(trained_sampler):
    clips = [it["graphs"] for it in ShapesDataset("test", 64, size=32, frames=8).__getitems__(range(8))]
    figures = {}
    for choice, repel in (("best", 0.0), ("diverse", 0.05)):
        trained_sampler.cfg.choice, trained_sampler.cfg.repel = choice, repel
        figures[choice, repel] = evaluate_layouts(trained_sampler, clips, VOCAB, samples=4, diversity_clips=8)
    before, after = figures["best", 0.0], figures["diverse", 0.05]
    assert after["diversity"] > 1.3 * before["diversity"], figures
    assert after["relation_accuracy"] >= before["relation_accuracy"] - 0.03, figures
    assert after["teleport_rate"] <= before["teleport_rate"] + 0.02, figures


@pytest.mark.slow
def test_rows_of_four_are_laid_out_right_with_the_repair_and_not_always_without(trained_sampler):
    graphs = parse_graph(ROW_OF_FOUR, VOCAB).frame_graphs(8)
    triples = torch.tensor([[g.triples.tolist() for g in graphs]]).expand(8, -1, -1, -1)
    mask = torch.ones(8, 8, 3, dtype=torch.bool)
    figures = {}
    for steps in (0, 50):
        trained_sampler.cfg.repair_steps = steps
        boxes = trained_sampler.sample_boxes([graphs] * 8, torch.Generator().manual_seed(0))
        figures[steps] = rule_accuracy(boxes, triples, mask, VOCAB)
    trained_sampler.cfg.repair_steps = 0
    assert figures[50] >= 0.97 and figures[50] > figures[0], figures


@pytest.mark.slow
def test_a_timeline_changes_relation_at_its_border_without_teleporting(trained_sampler):
    spec = parse_graph({"objects": ["red circle", "green square"],
                        "timeline": [{"frames": [0, 12], "relations": [[0, "left of", 1]]},
                                     {"frames": [12, 24], "relations": [[0, "above", 1]]}]}, VOCAB)
    graphs = spec.frame_graphs()
    boxes = trained_sampler.sample_boxes([graphs] * 8, torch.Generator().manual_seed(0))
    triples = torch.tensor([[g.triples[0].tolist()] for g in graphs])[None].expand(8, -1, -1, -1)
    mask = torch.ones(8, 24, 1, dtype=torch.bool)
    assert rule_accuracy(boxes, triples, mask, VOCAB) > 0.85
    step = moves(boxes) / trained_sampler.stats.max_move  # (8, 2, 23), in units of the world's longest move
    assert (step > 1.5).float().mean() < 0.05
    border = step[:, :, 10:13]  # the moves into, across and out of the border at frame 12
    assert (border > 1.5).float().mean() <= 0.1 and border.mean() <= 2 * step.mean(), border


@pytest.mark.slow
def test_partial_boxes_are_kept_exactly_and_the_rest_is_laid_out_around_them(trained_sampler):
    spec = parse_graph({"objects": ["red circle", "green square", "blue triangle"],
                        "relations": [[0, "left of", 1], [2, "below", 1]],
                        "boxes": [None, [0.4, 0.4, 0.6, 0.6], None]}, VOCAB)
    graphs = spec.frame_graphs(8)
    filled = trained_sampler.fill([graphs] * 4, torch.Generator().manual_seed(0))
    for clip in filled:
        for g in clip:
            assert g.all_boxes_given
            assert g.boxes[1].tolist() == pytest.approx([0.4, 0.4, 0.6, 0.6])
    boxes = torch.stack([torch.stack([g.boxes for g in clip], dim=1) for clip in filled])  # (4, 3, 8, 4)
    c = centres(boxes)
    assert (c[:, 0, :, 0] < c[:, 1, :, 0]).float().mean() > 0.9  # red left of the given green square
    assert (c[:, 2, :, 1] > c[:, 1, :, 1]).float().mean() > 0.9  # blue below it


def test_an_image_model_holds_one_layout_per_segment():
    settings = tiny_settings(frames=1, prefix_frames=0, lookahead=0)
    module = build_layout_module(settings, VOCAB.num_objects, VOCAB.num_predicates, 16)
    sampler = LayoutSampler(module, encoder(), LayoutStats(), settings)
    spec = parse_graph({"objects": ["red circle", "green square"],
                        "timeline": [{"frames": [0, 3], "relations": [[0, "left of", 1]]},
                                     {"frames": [3, 5], "relations": [[0, "above", 1]]}]}, VOCAB)
    boxes = sampler.sample_boxes([spec.frame_graphs()], torch.Generator().manual_seed(0))
    assert boxes.shape == (1, 2, 5, 4)
    assert torch.equal(boxes[:, :, 0], boxes[:, :, 2]) and torch.equal(boxes[:, :, 3], boxes[:, :, 4])
    assert not torch.equal(boxes[:, :, 2], boxes[:, :, 3])


def test_a_pair_with_several_predicates_is_judged_by_its_set():
    """Action Genome's person and cup carry looking_at, on_the_side_of and holding at once; the softmax scorer can
    name one predicate per pair, so a pair looks right when its top predicate is any of the pair's, and scores the
    mass on all of them, counted once. One predicate per pair (shapes) is the per-triple judgement exactly."""
    from types import SimpleNamespace

    from sg2video.layout.scorer import layout_scores, pair_sets, set_log_probs

    P = 4
    triples = torch.tensor([[[[0, 0, 1], [0, 1, 1], [0, 2, 2], [1, 0, 0], [0, 0, 0]]]])  # (1, 1, 5, 3); last: pad
    mask = torch.tensor([[[True, True, True, True, False]]])
    members, first = pair_sets(triples, mask, P)
    assert members[0, 0].tolist() == [[True, True, False, False], [True, True, False, False],
                                      [False, False, True, False], [True, False, False, False], [False] * 4]
    assert first[0, 0].tolist() == [True, False, True, True, False]
    probs = torch.tensor([0.1, 0.6, 0.2, 0.1])  # the scorer's top predicate is 1 for every pair's boxes
    log_p = probs.log().expand(1, 1, 5, P)
    assert set_log_probs(log_p, members)[0, 0, 0] == pytest.approx(math.log(0.7))

    class Fixed(RelationScorer):
        def predicate_log_probs(self, boxes, classes, triples):
            return log_p.expand(boxes.shape[0], *log_p.shape[1:])

    stats = LayoutStats()
    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6], [0.7, 0.1, 0.8, 0.2]])[None, :, None]
    cond = SimpleNamespace(triples=triples, triple_mask=mask, classes=torch.zeros(1, 3, dtype=torch.long),
                           obj_mask=torch.ones(1, 3, dtype=torch.bool))
    score, right = layout_scores(Fixed(1, P), stats, boxes, cond, torch.ones(1, dtype=torch.bool))
    assert not bool(right[0])  # pairs (0, 2) and (1, 0) do not hold predicate 1
    assert float(score[0]) == pytest.approx(math.log(0.7) + math.log(0.2) + math.log(0.1), abs=1e-5)
    only_first = SimpleNamespace(**{**vars(cond), "triple_mask": torch.tensor([[[True, True, False, False, False]]])})
    assert bool(layout_scores(Fixed(1, P), stats, boxes, only_first, torch.ones(1, dtype=torch.bool))[1][0])
    single = SimpleNamespace(**{**vars(cond), "triple_mask": torch.tensor([[[False, True, True, True, False]]])})
    members, first = pair_sets(triples, single.triple_mask, P)  # one predicate per pair: each triple on its own
    assert (members.sum(-1) == single.triple_mask.long()).all() and (first == single.triple_mask).all()


def test_class_ranges_move_each_class_into_its_own_sizes_and_centres():
    """LayoutStats.measure with classes keeps each class's range of sizes and centres; project with classes moves
    a box into its class's (a rigid 0.1-wide sprite standing on the floor row), without classes into the data's."""
    N, K, W = 40, 2, 2
    boxes = torch.zeros(N, K, W, 4)
    x = torch.linspace(0.1, 0.7, N)[:, None]
    boxes[:, 0] = torch.stack([x, torch.full_like(x, 0.8), x + 0.1, torch.full_like(x, 0.9)], -1)  # class 1: floor
    boxes[:, 1] = torch.stack([x, torch.full_like(x, 0.2), x + 0.3, torch.full_like(x, 0.6)], -1)  # class 2: tall
    classes = torch.tensor([[1, 2]]).expand(N, K)
    stats = LayoutStats.measure(boxes, torch.ones(N, K, W, dtype=torch.bool), torch.ones(N, K, dtype=torch.bool),
                                quantile=1.0, classes=classes, num_classes=3)
    assert stats.class_size_lo[1] == pytest.approx((0.1, 0.1)) and stats.class_size_hi[2] == pytest.approx((0.3, 0.4))
    assert stats.class_centre_lo[1][1] == pytest.approx(0.85) and stats.class_centre_hi[1][1] == pytest.approx(0.85)
    assert stats.class_size_lo[0] == stats.size_lo  # a class the data never shows: the whole range
    drawn = torch.tensor([[0.30, 0.60, 0.55, 0.75]])  # class 1 drawn too wide and floating
    snapped = stats.project(drawn, torch.tensor([1]))
    assert snapped[0].tolist() == pytest.approx([0.375, 0.8, 0.475, 0.9], abs=1e-6)
    loose = stats.project(drawn)
    assert (loose[0, 2] - loose[0, 0]).item() == pytest.approx(0.25) and loose[0, 1].item() < 0.8
    assert LayoutStats.from_dict(stats.to_dict()) == stats


def test_steady_keeps_each_class_within_its_own_moves():
    """class_max_move is measured per class; steady holds a class the data never moves where its first frame is,
    slows a class to its largest move, and keeps given frames as they are."""
    N, K, W = 30, 2, 3
    boxes = torch.zeros(N, K, W, 4)
    boxes[:, 0] = torch.tensor([0.1, 0.8, 0.3, 0.9])  # class 1: never moves
    step = torch.arange(W, dtype=torch.float32)[None, :, None] * 0.05  # class 2: 0.05 a frame along x
    boxes[:, 1] = torch.tensor([0.5, 0.2, 0.6, 0.3]) + torch.cat([step, 0 * step, step, 0 * step], -1)
    classes = torch.tensor([[1, 2]]).expand(N, K)
    stats = LayoutStats.measure(boxes, torch.ones(N, K, W, dtype=torch.bool), torch.ones(N, K, dtype=torch.bool),
                                quantile=1.0, classes=classes, num_classes=3)
    assert stats.class_max_move[1] == 0.0 and stats.class_max_move[2] == pytest.approx(0.05)
    drawn = boxes[:1].clone()
    drawn[0, 0, 1:, [0, 2]] += 0.02  # the still class jitters
    drawn[0, 1, 2, [0, 2]] += 0.3  # the moving one jumps
    steady = stats.steady(drawn, classes[:1])
    assert torch.allclose(steady[0, 0], boxes[0, 0], atol=1e-6)
    assert moves(steady[0, 1]).max().item() == pytest.approx(0.05, abs=1e-6)
    given = torch.zeros(1, K, W, dtype=torch.bool)
    given[0, 0, 2] = True
    assert torch.allclose(stats.steady(drawn, classes[:1], given)[0, 0, 2], drawn[0, 0, 2])

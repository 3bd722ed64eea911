"""Retrieval that knows duplicate graphs (issue 25): canonical graph keys, graph-equivalent top-1, the top-1
ceiling duplicates allow, and data_stats' distinct-graph and repeat figures, against numbers worked out by hand."""
from __future__ import annotations

import csv
import io

import pytest
import torch

from sg2video.data.stats import csv_text, json_text, markdown_table, read_stats_json, split_stats
from sg2video.eval.retrieval import evaluate_retrieval, gallery_indices, retrieval_accuracy, same_graph_counts
from sg2video.graphs import SceneGraph, Vocab, canonical_key, clip_key

VOCAB = Vocab(objects=["person", "cup", "table"], predicates=["holding", "looking_at"])
PERSON, CUP, TABLE = 0, 1, 2
HOLDING, LOOKING_AT = 0, 1


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def g_a(permuted: bool = False) -> SceneGraph:
    """person -holding-> cup, person -looking_at-> table; `permuted`: the same graph, objects listed in another
    order (and other boxes)."""
    if not permuted:
        return SceneGraph(torch.tensor([PERSON, CUP, TABLE]),
                          torch.tensor([[0, HOLDING, 1], [0, LOOKING_AT, 2]]), torch.rand(3, 4))
    return SceneGraph(torch.tensor([TABLE, PERSON, CUP]), torch.tensor([[1, LOOKING_AT, 0], [1, HOLDING, 2]]))


def g_b(permuted: bool = False) -> SceneGraph:
    """person -looking_at-> cup, cup -holding-> table (nonsense, but a different graph)."""
    if not permuted:
        return SceneGraph(torch.tensor([PERSON, CUP, TABLE]), torch.tensor([[0, LOOKING_AT, 1], [1, HOLDING, 2]]))
    return SceneGraph(torch.tensor([CUP, TABLE, PERSON]), torch.tensor([[0, HOLDING, 1], [2, LOOKING_AT, 0]]))


def g_c() -> SceneGraph:
    """g_a with one predicate changed: person -looking_at-> cup."""
    return SceneGraph(torch.tensor([PERSON, CUP, TABLE]), torch.tensor([[0, LOOKING_AT, 1], [0, LOOKING_AT, 2]]))


# -- canonical keys ---------------------------------------------------------------------------------


def test_canonical_key_ignores_object_order_and_boxes_but_not_content():
    assert canonical_key(g_a()) == canonical_key(g_a(permuted=True))
    assert hash(canonical_key(g_a())) == hash(canonical_key(g_a(permuted=True)))
    assert canonical_key(g_b()) == canonical_key(g_b(permuted=True))
    assert canonical_key(g_a()) != canonical_key(g_c())  # one predicate changed
    assert canonical_key(g_a()) != canonical_key(g_b())
    base = g_a()
    extra_object = SceneGraph(torch.tensor([PERSON, CUP, TABLE, CUP]), base.triples)  # an isolated extra cup
    assert canonical_key(base) != canonical_key(extra_object)
    doubled = SceneGraph(base.objs, torch.cat([base.triples, base.triples[:1]]))  # a triple twice: a multiset
    assert canonical_key(base) != canonical_key(doubled)
    swapped = SceneGraph(base.objs, torch.tensor([[1, HOLDING, 0], [0, LOOKING_AT, 2]]))  # cup holds person
    assert canonical_key(base) != canonical_key(swapped)
    # a clip's key is its frames' keys in order
    assert clip_key([g_a(), g_b()]) == clip_key([g_a(permuted=True), g_b(permuted=True)])
    assert clip_key([g_a(), g_b()]) != clip_key([g_b(), g_a()])


# -- retrieval --------------------------------------------------------------------------------------


def hand_gallery() -> tuple[list[list[SceneGraph]], torch.Tensor, torch.Tensor]:
    """Six 2-frame clips; clips 0 and 1 share a graph, and so do clips 2 and 3.

    clip 0: [A, A]    clip 1: [A', A']  (A' = A, objects reordered)
    clip 2: [A, B]    clip 3: [A', B']
    clip 4: [C, C]    clip 5: [B, A]    (C: A with a predicate changed; clip 5: clip 2's frames reversed)
    Video j's vector is e_j; graph i's vector is e_target(i), target = [1, 1, 2, 2, 5, 5], so graph i retrieves
    video target(i) alone (cosine 1, every other video 0):
    - top-1: hits for clips 1, 2, 5 -> 3 / 6 = 0.5;
    - graph-equivalent top-1: also clip 0 (retrieves clip 1, same graph) and clip 3 (retrieves clip 2): 5 / 6;
      clip 4 retrieves clip 5, another graph: a miss;
    - ceiling: equal-graph counts [2, 2, 2, 2, 1, 1] -> (4 * 1/2 + 1 + 1) / 6 = 2 / 3.
    """
    clips = [[g_a(), g_a()], [g_a(True), g_a(True)], [g_a(), g_b()], [g_a(True), g_b(True)], [g_c(), g_c()],
             [g_b(), g_a()]]
    videos = torch.eye(6)
    graphs = torch.eye(6)[[1, 1, 2, 2, 5, 5]]
    return clips, graphs, videos


def test_graph_equivalent_top1_and_ceiling_match_hand_counts():
    clips, graphs, videos = hand_gallery()
    keys = [clip_key(c) for c in clips]
    assert len(set(keys)) == 4
    metrics = retrieval_accuracy(graphs, videos, gallery=100, graph_keys=keys)
    assert metrics["g2v_top1"] == 0.5
    assert metrics["g2v_top1_graph_equiv"] == 5 / 6
    assert metrics["g2v_top1_ceiling"] == 2 / 3
    assert metrics["galleries"] == 1.0 and metrics["gallery_size"] == 6.0
    # the same gallery shuffled by another seed: one gallery of all six, so the same numbers
    again = retrieval_accuracy(graphs, videos, gallery=100, seed=3, graph_keys=keys)
    assert {k: again[k] for k in metrics} == metrics
    # without keys the metrics are the old ones, with the same values
    plain = retrieval_accuracy(graphs, videos, gallery=100)
    assert set(metrics) - set(plain) == {"g2v_top1_graph_equiv", "g2v_top1_ceiling"}
    assert all(plain[k] == metrics[k] for k in plain)


def test_ties_count_against_graph_equivalence_too():
    ones = torch.ones(6, 4)
    same = retrieval_accuracy(ones, ones, graph_keys=["g"] * 6)  # every clip has the query's graph: any is a hit
    assert (same["g2v_top1"], same["g2v_top1_graph_equiv"], same["g2v_top1_ceiling"]) == (0.0, 1.0, 1 / 6)
    distinct = retrieval_accuracy(ones, ones, graph_keys=list(range(6)))  # tied with other graphs: a miss
    assert (distinct["g2v_top1_graph_equiv"], distinct["g2v_top1_ceiling"]) == (0.0, 1.0)
    pairs = retrieval_accuracy(ones, ones, graph_keys=[0, 0, 1, 1, 2, 2])  # tied with other graphs: a miss
    assert (pairs["g2v_top1_graph_equiv"], pairs["g2v_top1_ceiling"]) == (0.0, 0.5)


def test_same_graph_counts_follow_the_retrieval_galleries():
    keys = ["x", "y", "x", "z", "y", "x", "w", "w", "v", "u"]
    order = gallery_indices(len(keys), gallery=4, seed=0)
    counts = same_graph_counts(keys, gallery=4, seed=0)
    assert order.shape == counts.shape == (2, 4)  # floor(10 / 4) galleries, two items left out
    for items, row in zip(order.tolist(), counts.tolist()):
        assert row == [sum(keys[j] == keys[i] for j in items) for i in items]
    assert torch.equal(counts, same_graph_counts(keys, gallery=4, seed=0))  # seeded
    # the ceiling of retrieval_accuracy is the mean of 1 / counts over the same galleries
    emb = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    metrics = retrieval_accuracy(emb, emb, gallery=4, graph_keys=keys)
    assert metrics["g2v_top1_ceiling"] == pytest.approx(float((1.0 / counts.double()).mean()))


def test_evaluate_retrieval_reports_the_duplicate_figures_per_clip_and_per_frame():
    from sg2video.data.shapes import ShapesDataset, shapes_vocab
    from sg2video.encoder import EncoderPretrainer, GraphEncoder, VideoEncoder

    vocab = shapes_vocab()
    torch.manual_seed(0)
    graph_encoder = GraphEncoder(vocab.num_objects, vocab.num_predicates, dim=32, cond_dim=64, layers=2, hidden=64)
    video_encoder = VideoEncoder(img_size=32, patch_size=8, embed_dim=64, depth=2, heads=4, out_dim=64)
    model = EncoderPretrainer(graph_encoder, video_encoder, mask_ratio=0.8)
    dataset = ShapesDataset("val", length=24, size=32, frames=4)
    metrics = evaluate_retrieval(model, dataset, num=24, gallery=100, batch_size=12)
    graphs = [item["graphs"] for item in dataset.__getitems__(list(range(24)))]
    clip_counts = same_graph_counts([clip_key(c) for c in graphs], gallery=100)
    frame_counts = same_graph_counts([canonical_key(g) for c in graphs for g in c], gallery=100)
    assert metrics["g2v_top1_ceiling"] == pytest.approx(float((1.0 / clip_counts.double()).mean()))
    assert metrics["frame_g2v_top1_ceiling"] == pytest.approx(float((1.0 / frame_counts.double()).mean()))
    for prefix in ("", "frame_"):
        # a plain hit is a graph-equivalent hit (top-1 is a float32 mean, the new figures float64 ones)
        assert metrics[f"{prefix}g2v_top1"] <= metrics[f"{prefix}g2v_top1_graph_equiv"] + 1e-6
        assert metrics[f"{prefix}g2v_top1_graph_equiv"] <= 1.0
        assert 0.0 < metrics[f"{prefix}g2v_top1_ceiling"] <= 1.0
    # a static shapes clip repeats its frame graph, so frames share graphs within a frame gallery
    assert metrics["frame_g2v_top1_ceiling"] < 1.0


# -- data_stats -------------------------------------------------------------------------------------


def stats_clips() -> list[list[SceneGraph]]:
    """Five 2-frame clips: [A, A], [A', A'] (the same clip graph), [A, B], [B, B], [C, C].

    Relation segments: A | A' | A, B | B | C: 6 graphs, 3 distinct (A = A'). Clip graphs: 4 distinct.
    Fewer than 100 clips: one gallery of all 5, where clips 0 and 1 repeat: share 2 / 5.
    """
    return [[g_a(), g_a()], [g_a(True), g_a(True)], [g_a(), g_b()], [g_b(), g_b()], [g_c(), g_c()]]


def test_data_stats_distinct_graphs_and_repeat_share():
    stats = split_stats("hand/val", stats_clips(), VOCAB, max_tokens=16)
    v = stats.values
    assert (v["clips"], v["graphs"], v["distinct_graphs"], v["distinct_clip_graphs"]) == (5, 6, 3, 4)
    assert v["graph_repeat_share_gallery100"] == 0.4 and v["repeat_gallery_size"] == 5
    unique = split_stats("hand/test", stats_clips()[2:], VOCAB, max_tokens=16).values
    assert (unique["distinct_clip_graphs"], unique["graph_repeat_share_gallery100"]) == (3, 0.0)
    # 150 clips of one graph: one gallery of 100 (50 left out), every clip repeats
    same = split_stats("hand/train", [[g_a()]] * 150, VOCAB, max_tokens=16).values
    assert (same["distinct_graphs"], same["distinct_clip_graphs"]) == (1, 1)
    assert same["graph_repeat_share_gallery100"] == 1.0 and same["repeat_gallery_size"] == 100


def test_data_stats_outputs_carry_the_new_rows(tmp_path):
    stats = [split_stats("hand/val", stats_clips(), VOCAB, max_tokens=16)]
    table = markdown_table(stats)
    assert "| distinct graphs (relation segments) | 3 |" in table
    assert "| distinct clip graphs (per-frame graph sequences) | 4 |" in table
    assert "| clips whose graph repeats in a gallery of 100 | 0.400 |" in table
    rows = {row[0]: row[1] for row in csv.reader(io.StringIO(csv_text(stats)))}
    assert (rows["distinct_graphs"], rows["distinct_clip_graphs"]) == ("3", "4")
    assert rows["graph_repeat_share_gallery100"] == "0.4" and rows["repeat_gallery_size"] == "5"
    (tmp_path / "stats.json").write_text(json_text(stats))
    back = read_stats_json(tmp_path)[0].values
    assert back["graph_repeat_share_gallery100"] == 0.4 and back["distinct_clip_graphs"] == 4
    empty = split_stats("hand/none", [], VOCAB, max_tokens=16).values
    assert empty["distinct_clip_graphs"] == 0 and empty["repeat_gallery_size"] == 0

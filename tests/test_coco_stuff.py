"""COCO-Stuff on the real COCO 2017 records in shared/fixtures/coco: stuff annotations (compressed RLE)
of train2017 images 934 and 13715, and instances (polygons + one crowd region in uncompressed RLE) of
val2017 image 448263; placeholder JPEGs of the sizes the records give. Expected values are worked out
by hand from the JSON, as the comments show.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sg2video.data.clips import collate_clips
from sg2video.data.coco_stuff import (
    CocoStuffDataset, CocoStuffOptions, decode_segmentation, relation, rle_string_to_counts,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "coco"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/fixtures/coco")
STUFF = json.loads((FIXTURES / "stuff_examples.json").read_text())
INSTANCES = json.loads((FIXTURES / "instances_val2017_1img_sample.json").read_text())


def stuff_class(category_id: int) -> int:
    # vocabulary: the 80 instance categories by id, then stuff 92..182 by id ("other", 183, left out)
    return 80 + category_id - 92


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    shutil.copy(FIXTURES / "instances_val2017_1img_sample.json", root / "annotations" / "instances_train2017.json")
    shutil.copy(FIXTURES / "stuff_examples.json", root / "annotations" / "stuff_train2017.json")
    for info in STUFF["images"] + INSTANCES["images"]:
        folder = root / ("train2017" if info["id"] == 13715 else "images/train2017")  # both layouts
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (info["width"], info["height"]), (90, 140, 60)).save(folder / info["file_name"])
    return root


def test_rle_and_polygon_decoding():
    # compressed RLE (stuff): the decoded mask has exactly the annotation's area and bbox
    images = {i["id"]: i for i in STUFF["images"]}
    for ann in STUFF["annotations"]:
        info = images[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], info["height"], info["width"])
        ys, xs = np.nonzero(mask)
        assert mask.shape == (info["height"], info["width"]) and mask.sum() == ann["area"]
        assert [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == ann["bbox"]
    # the string code's first values by hand: "Skh62l>6M3" starts with 'S' = 83 - 48 = 35 = 0b100011:
    # continuation bit (0x20) set, low five bits 3; then 'k' = 107 - 48 = 59 = 0b111011 -> 27 << 5 = 864,
    # 'h' = 56 = 0b111000 -> 24 << 10, '6' = 6 -> 6 << 15, ends (no 0x20, no sign bit 0x10):
    # 3 + 864 + 24576 + 196608 = 222051 background pixels before the bush starts (column 462, row 291).
    first = rle_string_to_counts(STUFF["annotations"][0]["segmentation"]["counts"])[0]
    assert first == 3 + (27 << 5) + (24 << 10) + (6 << 15) == 222051 == 462 * 480 + 291
    # uncompressed RLE (the crowd region): foreground = the odd runs; its first run, 272 = 240 + 32, puts
    # the first pixel at column 1, row 32 (runs go down columns of 240)
    crowd = next(a for a in INSTANCES["annotations"] if a["iscrowd"])
    mask = decode_segmentation(crowd["segmentation"], 240, 320)
    counts = crowd["segmentation"]["counts"]
    assert mask.sum() == sum(counts[1::2]) == 12852  # COCO's "area" (18419) for crowd regions is not the mask's
    assert counts[0] == 272 and mask[32, 1] and not mask[:, 0].any() and not mask[:32, 1].any()
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min()) == (1, 0) and abs((xs.max() + 1 - xs.min()) - crowd["bbox"][2]) <= 1
    # polygons: the big person's mask is within 3% of its polygon area, and inside its bbox (+1 px)
    person = INSTANCES["annotations"][0]
    mask = decode_segmentation(person["segmentation"], 240, 320)
    x, y, w, h = person["bbox"]
    ys, xs = np.nonzero(mask)
    assert abs(mask.sum() - person["area"]) / person["area"] < 0.03
    assert xs.min() >= x - 1 and ys.min() >= y - 1 and xs.max() <= x + w + 1 and ys.max() <= y + h + 1


def test_vocabulary_and_object_filters_match_hand_counts(coco_root):
    ds = CocoStuffDataset(coco_root, "train", CocoStuffOptions())
    assert len(ds.vocab.objects) == 80 + 91  # "other" is left out
    assert ds.vocab.objects[0] == "person" and ds.vocab.objects[stuff_class(97)] == "bush"
    assert ds.vocab.predicates == ["left of", "right of", "above", "below", "inside", "surrounding"]
    # Image 934 (640 x 480 = 307200 px): bbox area fractions 97 bush 143*61 = .0284, 113 fence .0398,
    # 124 grass .0313, 128 house 76*58 = .0143 (<= 0.02: out), 154 sand .467, 157 sky .502, 162 stone .398,
    # 169 tree .767, 172 wall-concrete .352, 183 "other" (out) -> 8 objects (the maximum).
    # Image 13715 (335 x 500): 126, 149, 164, 173, 176, 181 all > 0.02, 183 "other" out -> 6.
    # Image 448263 has no stuff annotations: dropped (stuff_only).
    assert [r["id"] for r in ds.records] == [934, 13715]
    assert ds.dropped == {"no stuff annotations": 1}
    assert ds.records[0]["objs"] == [stuff_class(c) for c in (97, 113, 124, 154, 157, 162, 169, 172)]
    assert ds.records[1]["objs"] == [stuff_class(c) for c in (126, 149, 164, 173, 176, 181)]
    # Without stuff_only, 448263 (320 x 240 = 76800 px) keeps persons 80.0 (223.89*223.36 = .651) and
    # 18.34 (63.1*211.96 = .174) and the crowd region (276*122 = .438); every other instance is
    # <= 0.02 (the largest, the handbag 33.89*44.49 = .0196) -> 3 objects, the minimum.
    everything = CocoStuffDataset(coco_root, "train", CocoStuffOptions(stuff_only=False))
    assert [r["id"] for r in everything.records] == [934, 13715, 448263]
    assert everything.records[2]["objs"] == [0, 0, 0]
    no_crowd = CocoStuffDataset(coco_root, "train", CocoStuffOptions(stuff_only=False, include_crowd=False))
    assert no_crowd.dropped == {"too few objects": 1}
    assert CocoStuffDataset(coco_root, "train", CocoStuffOptions(max_objects=7)).dropped == {
        "too many objects": 1, "no stuff annotations": 1}
    # with "other" (183) as a class: 934 has 9 objects (other: 539*199 = .349) -> too many; 13715 has 7
    with_other = CocoStuffDataset(coco_root, "train", CocoStuffOptions(include_other=True))
    assert with_other.vocab.objects[-1] == "other" and len(with_other.vocab.objects) == 172
    assert [(r["id"], len(r["objs"])) for r in with_other.records] == [(13715, 7)]


def test_relations_match_sg2im_rules(coco_root):
    ds = CocoStuffDataset(coco_root, "train", CocoStuffOptions(relations="pairs"))
    triples = ds.relations(ds.records[0])  # image 934, objects 0..7 = bush fence grass sand sky stone tree wall
    assert len(triples) == 8 * 7 // 2
    named = {(s, o): ds.vocab.predicates[p] for s, p, o in triples.tolist()}
    # Normalised boxes (x0, y0, x1, y1): bush (.722, .598, .945, .725); fence (.719, .548, .973, .704);
    # grass (.630, .660, .936, .763); sand (0, .533, 1, 1); sky (0, 0, .902, .556); stone (0, .602, 1, 1);
    # tree (0, 0, 1, .767); wall (0, .433, .948, .804). Mask centroids (from the RLE): bush (.789, .665),
    # fence (.844, .625), grass (.798, .715), sky (.644, .187), stone (.206, .836).
    assert named[(0, 1)] == "left of"  # bush y1 .725 > fence y1 .704: not inside; d = (-.055, .040): 144 deg
    assert named[(0, 2)] == "above"  # bush x1 .945 > grass x1 .936; d = (-.009, -.049): -100 deg
    assert named[(0, 3)] == "inside"  # .722 > 0, .945 < 1, .598 > .533, .725 < 1
    assert named[(0, 4)] == "below"  # d = (.145, .478): 73 deg
    assert named[(0, 5)] == "right of"  # bush y0 .598 < stone y0 .602: not inside; d = (.583, -.171): -16 deg
    assert named[(0, 6)] == "inside" and named[(0, 7)] == "inside" and named[(2, 6)] == "inside"
    boxes = ds.records[0]["boxes"]
    assert relation(boxes[6], boxes[2], np.zeros(2), np.zeros(2)) == "surrounding"  # tree around grass
    # the angle rule's edges: left beyond +-135 deg, above [-135, -45), right [-45, 45), below [45, 135)
    box = np.array([0.4, 0.4, 0.6, 0.6])
    at = lambda deg: relation(box, box, np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))]), np.zeros(2))
    assert [at(d) for d in (180, 136, -136, -134, -46, -44, 44, 46, 134)] == [
        "left of", "left of", "left of", "above", "above", "right of", "right of", "below", "below"]
    # sg2im's random partners: one triple per object, the same for the same seed
    rnd = CocoStuffDataset(coco_root, "train", CocoStuffOptions(relations="random", seed=3))
    first, again = rnd.relations(rnd.records[0]), rnd.relations(rnd.records[0])
    assert len(first) == 8 and np.array_equal(first, again)
    assert all((t[0] == i or t[2] == i) for i, t in enumerate(first.tolist()))


@pytest.mark.parametrize("mode, kept", [
    # 13715 is 335 x 500: the crop keeps rows 82.5..417.5 of the original; road (y 464..500) and
    # ground-other (y 431..479) lie wholly below it and are dropped with their triples. Padding keeps all.
    ("crop", (164, 173, 176, 181)),
    ("pad", (126, 149, 164, 173, 176, 181)),
])
def test_items_contract_and_crop(coco_root, mode, kept):
    ds = CocoStuffDataset(coco_root, "train", CocoStuffOptions(resize=mode, size=32, image_node=True))
    item = ds[1]
    assert item["source"]["image_id"] == 13715 and item["video"].shape == (1, 3, 32, 32)
    (graph,) = item["graphs"]
    image = ds.vocab.object_id("__image__")
    assert graph.objs.tolist() == [stuff_class(c) for c in kept] + [image]
    n = len(kept)
    pairs = graph.triples[graph.triples[:, 1] != ds.vocab.predicate_id("__in_image__")]
    assert len(pairs) == n * (n - 1) // 2 and (pairs[:, 2] < n).all()
    assert graph.boxes.min() >= 0 and graph.boxes.max() <= 1 and graph.boxes[-1].tolist() == [0, 0, 1, 1]
    batch = collate_clips([ds[0], ds[1]])
    assert batch.video.shape == (2, 3, 1, 32, 32) and batch.graphs.num_graphs == 2
    assert batch.graphs.objects_per_graph().tolist() == [9, n + 1]


def test_val_test_split_of_one_file_and_missing_images(coco_root, tmp_path):
    opts = CocoStuffOptions(splits={"train": "train2017", "val": "train2017", "test": "train2017"}, val_images=1)
    val, test = CocoStuffDataset(coco_root, "val", opts), CocoStuffDataset(coco_root, "test", opts)
    assert [r["id"] for r in val.records] == [934] and [r["id"] for r in test.records] == [13715]
    (coco_root / "train2017" / "000000013715.jpg").rename(tmp_path / "moved.jpg")
    try:
        ds = CocoStuffDataset(coco_root, "train", CocoStuffOptions())
        assert ds[1]["source"]["image_id"] == 934 and ds.skipped == 1  # unreadable -> next clip
    finally:
        (tmp_path / "moved.jpg").rename(coco_root / "train2017" / "000000013715.jpg")
    assert isinstance(ds[0]["video"], torch.Tensor)

"""Visual Genome on the real VG 1.2 records of images 1-5 (shared/fixtures/visual_genome), with
placeholder JPEGs of the sizes image_data.json gives.

The expected values below were worked out from the fixture JSON by hand-style counting (a few lines of
throwaway Python over the raw records, independent of the loader), as the comments show.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sg2video.data.clips import collate_clips
from sg2video.data.visual_genome import VisualGenomeDataset, VisualGenomeOptions, hash_split
from sg2video.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "visual_genome"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/fixtures/visual_genome")
BUILDING = 1023819  # image 2's building: subject of its five "has window" relationships
RED = (230, 20, 20)


def fixture_object(image_id: int, object_id: int) -> dict:
    for image in json.loads((FIXTURES / "objects.json").read_text()):
        if image["image_id"] == image_id:
            return next(o for o in image["objects"] if o["object_id"] == object_id)
    raise KeyError(object_id)


@pytest.fixture(scope="module")
def vg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("visual_genome")
    for name in ("image_data.json", "objects.json", "relationships.json", "attributes.json"):
        shutil.copy(FIXTURES / name, root / name)
    (root / "object_alias.txt").write_text("window,windows\n")
    (root / "relationship_alias.txt").write_text("wearing,wears\n")
    # the three layouts: images/VG_100K_2/1.jpg (as its url says), images/VG_100K/2.jpg, images/3.jpg
    places = {1: "images/VG_100K_2", 2: "images/VG_100K", 3: "images", 4: "images/VG_100K", 5: "images/VG_100K"}
    for info in json.loads((root / "image_data.json").read_text()):
        folder = root / places[info["image_id"]]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{info['image_id']}.jpg"
        if info["image_id"] == 5:  # corrupt: must be skipped and counted
            path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
            continue
        image = Image.new("RGB", (info["width"], info["height"]), (128, 128, 128))
        if info["image_id"] == 2:
            b = fixture_object(2, BUILDING)
            ImageDraw.Draw(image).rectangle([b["x"], b["y"], b["x"] + b["w"] - 1, b["y"] + b["h"] - 1], fill=RED)
        image.save(path, quality=95)
    return root


def options(**kw) -> VisualGenomeOptions:
    base = dict(min_object_instances=3, min_predicate_instances=2, split_ratios=(1.0, 0.0, 0.0))
    base.update(kw)
    return VisualGenomeOptions(**base)


def test_vocabulary_filters_and_relations_match_hand_counts(vg_root):
    ds = VisualGenomeDataset(vg_root, "train", options())
    # Object names used by >= 3 objects (an object counts once per distinct name; "windows" -> "window"
    # by object_alias.txt): window 8 + windows 3 = 11, wall 6, man 5, car/desk/floor/plug/tree 4 each,
    # bike/building/chair/color/computer/picture/sidewalk 3 each; most frequent first, ties by name.
    assert ds.vocab.objects == ["window", "wall", "man", "car", "desk", "floor", "plug", "tree", "bike",
                                "building", "chair", "color", "computer", "picture", "sidewalk"]
    # Relationships whose two ends are kept objects (in the vocabulary, box >= 0.2% of the image):
    # has 5 (image 2: building has 5 windows), against 2 (image 5: two chairs against the wall),
    # on 2 (image 1: bike on sidewalk; image 3: picture on wall); near/next to/parked on/with once each.
    assert ds.vocab.predicates == ["has", "against", "on"]
    # Kept objects per image: 13, 15, 12, 7, 11 (3..30 each); relationships among them: 1, 5, 1, 0, 2,
    # so image 4 goes (too few relations).
    assert [r["id"] for r in ds.records] == [1, 2, 3, 5]
    assert ds.dropped == {"too few relations": 1}
    rec = {r["id"]: r for r in ds.records}
    # Image 2 keeps 10 of its 15: the 6 in relationships (5 windows, the building) and the first 4 others
    # in file order (man, car, tree, tree), all in file order; the 5 triples follow relationships.json.
    assert rec[2]["objs"] == [2, 3, 7, 7, 0, 0, 0, 0, 0, 9]
    assert rec[2]["triples"] == [[9, 0, 5], [9, 0, 6], [9, 0, 7], [9, 0, 8], [9, 0, 4]]
    # Image 1: bike (position 2) on the second sidewalk (7); 13 objects -> the first 10 (both related ones are among them)
    assert rec[1]["objs"] == [2, 3, 8, 9, 14, 3, 2, 14, 1, 7] and rec[1]["triples"] == [[2, 2, 7]]
    # Image 3: picture 1060292 (6) on wall 1060274 (3); image 5: chairs (2, 7) against wall 1060360 (1),
    # and its 11th object (computer 1060351, an orphan) is the one left out.
    assert rec[3]["triples"] == [[6, 2, 3]]
    assert rec[5]["triples"] == [[2, 1, 1], [7, 1, 1]] and 12 not in rec[5]["objs"]
    # boxes: x, y, w, h -> normalised x0, y0, x1, y1 (image 2 is 800 x 600)
    b = fixture_object(2, BUILDING)
    assert np.allclose(rec[2]["boxes"][9], [b["x"] / 800, b["y"] / 600, (b["x"] + b["w"]) / 800, (b["y"] + b["h"]) / 600], atol=1e-6)


def test_image_size_filter_splits_and_cache(vg_root):
    small = VisualGenomeDataset(vg_root, "train", options(min_image_size=500))
    # images 3 and 4 are 640 x 480: shorter side 480 < 500
    assert small.dropped["image too small"] == 2 and {r["id"] for r in small.records} <= {1, 2, 5}
    assert small.index_path is not None and small.index_path.is_file()
    again = VisualGenomeDataset(vg_root, "train", options(min_image_size=500))
    assert again.index_path == small.index_path and again.records == small.records  # served from the cache
    ratios = (0.4, 0.3, 0.3)
    by_split = {s: {r["id"] for r in VisualGenomeDataset(vg_root, s, options(split_ratios=ratios)).records}
                for s in ("train", "val", "test")}
    assert set().union(*by_split.values()) <= {1, 2, 3, 5}
    for split, ids in by_split.items():  # deterministic: the split of an id is a function of the id
        assert all(hash_split(i, ratios) == split for i in ids)
    # A splits file: the vocabularies now come from train images 1, 2 and 5 only. Names used >= 3 times
    # there: window, man, car, tree, bike, building, sidewalk, wall; among kept objects only "has" is used
    # twice or more (image 2's five), so image 2 is the one image left with a relationship.
    (vg_root / "splits.json").write_text(json.dumps({"train": [1, 2, 5], "val": [3], "test": [4]}))
    by_file = {s: VisualGenomeDataset(vg_root, s, options(splits_file="splits.json")) for s in ("train", "val", "test")}
    assert by_file["train"].vocab.objects == ["window", "man", "car", "tree", "bike", "building", "sidewalk", "wall"]
    assert by_file["train"].vocab.predicates == ["has"]
    assert {s: [r["id"] for r in d.records] for s, d in by_file.items()} == {"train": [2], "val": [], "test": []}
    with pytest.raises(ConfigError, match="does not exist"):
        VisualGenomeDataset(vg_root / "nope", "train", options())


@pytest.mark.parametrize("mode, scale, shift", [
    # 800 x 600 -> 64: crop scales by 64/600 to 85 x 64 and cuts (85 - 64) // 2 = 10 px on the left;
    # pad scales by 64/800 = 0.08 to 64 x 48 and puts 8 px of black above.
    ("crop", (85 / 800, 64 / 600), (-10, 0)),
    ("pad", (0.08, 0.08), (0, 8)),
])
def test_items_contract_boxes_and_corrupt_images(vg_root, mode, scale, shift):
    ds = VisualGenomeDataset(vg_root, "train", options(resize=mode, image_node=True))
    assert ds.vocab.objects[-1] == "__image__" and ds.vocab.predicates[-1] == "__in_image__"
    item = ds[1]  # image 2
    assert item["source"] == {"dataset": "visual_genome", "split": "train", "image_id": 2}
    video, (graph,) = item["video"], item["graphs"]
    assert video.shape == (1, 3, 64, 64) and video.dtype == torch.uint8
    assert graph.boxes.min() >= 0 and graph.boxes.max() <= 1
    # the building's box lands on the red pixels
    b = fixture_object(2, BUILDING)
    expected = np.array([b["x"] * scale[0] + shift[0], b["y"] * scale[1] + shift[1],
                         (b["x"] + b["w"]) * scale[0] + shift[0], (b["y"] + b["h"]) * scale[1] + shift[1]])
    building = int((graph.objs == ds.vocab.object_id("building")).nonzero()[0])
    assert np.allclose(graph.boxes[building].numpy() * 64, np.clip(expected, 0, 64), atol=1e-3)
    red = (video[0, 0].int() > 180) & (video[0, 1].int() < 90)
    ys, xs = red.nonzero(as_tuple=True)
    assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.clip(expected, 0, 64), atol=1.5)
    # __image__ is the last node, every other object is __in_image__ of it
    n = graph.num_objects
    assert graph.objs[-1] == ds.vocab.object_id("__image__") and graph.boxes[-1].tolist() == [0, 0, 1, 1]
    in_image = graph.triples[graph.triples[:, 1] == ds.vocab.predicate_id("__in_image__")]
    assert in_image[:, 0].tolist() == list(range(n - 1)) and (in_image[:, 2] == n - 1).all()
    # image 5's JPEG is corrupt: the clip is skipped, counted, and the next readable one served
    assert ds[3]["source"]["image_id"] == 1 and ds.skipped == 1
    batch = collate_clips([ds[0], ds[1], ds[2]])
    assert batch.video.shape == (3, 3, 1, 64, 64) and batch.graphs.num_graphs == 3


def test_build_dataset_branch_and_still_clips(vg_root):
    from omegaconf import OmegaConf

    from sg2video.data import build_dataset

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "visual_genome.yaml")
    cfg.root, cfg.min_object_instances, cfg.min_predicate_instances = str(vg_root), 3, 2
    cfg.split_ratios, cfg.frames, cfg.size, cfg.resize = [1, 0, 0], 4, 32, "stretch"
    ds = build_dataset(cfg, "train")
    item = ds[0]
    assert item["video"].shape == (4, 3, 32, 32)
    assert all(torch.equal(f, item["video"][0]) for f in item["video"])  # a still clip
    assert all(g.same_relations(item["graphs"][0]) for g in item["graphs"])
    # stretch keeps every object: image 1 keeps its 10
    assert item["graphs"][0].num_objects == 10


def test_sg2im_preprocessed_needs_h5py(vg_root):
    try:
        import h5py  # noqa: F401
    except ImportError:
        from sg2video.errors import UserError

        with pytest.raises(UserError, match="need h5py .*pip install h5py"):
            VisualGenomeDataset(vg_root, "train", options(preprocessed="sg2im"))
    else:
        pytest.skip("h5py is installed: the missing-h5py message cannot be shown")

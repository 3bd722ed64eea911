"""Visual Genome on the real VG 1.2 records of images 1-5 (shared/fixtures/visual_genome), with
placeholder JPEGs of the sizes image_data.json gives.

The expected values below were worked out from the fixture JSON by hand-style counting (a few lines of
throwaway Python over the raw records, independent of the loader), as the comments show.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sg2video.data.clips import collate_clips
from sg2video.data.visual_genome import VisualGenomeDataset, VisualGenomeOptions, hash_split
from sg2video.errors import ConfigError, UserError

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


def test_sg2im_preprocessed_needs_h5py(vg_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` now raises ImportError, installed or not
    with pytest.raises(UserError, match="need h5py .*pip install h5py"):
        VisualGenomeDataset(vg_root, "train", options(preprocessed="sg2im"))


# --- sg2im's preprocessed format: what its scripts/preprocess_vg.py writes -----------------------------
# vocab.json: object_idx_to_name ('__image__' at 0), pred_idx_to_name ('__in_image__' at 0), the two
# name_to_idx maps (and empty attribute ones); <split>.h5: int32 arrays padded with -1 to
# max_objects_per_image / max_relationships_per_image, boxes x, y, w, h in pixels of the original image,
# and image_paths (variable-length str) relative to the image folder (ROOT/images).

SG2IM_VOCAB_OBJECTS = ["__image__", "person", "dog", "tree", "car", "sky"]
SG2IM_VOCAB_PREDICATES = ["__in_image__", "on", "near", "holding"]
PERSON, DOG, TREE, CAR, SKY = 1, 2, 3, 4, 5
ON, NEAR, HOLDING = 1, 2, 3
COLOURS = {PERSON: (230, 20, 20), DOG: (20, 20, 230), TREE: (20, 200, 20), CAR: (230, 20, 230), SKY: (230, 230, 20)}
# split -> image id -> (path under images/, width, height, [(class, x, y, w, h)] in file order, [(s, p, o)])
SG2IM_IMAGES = {
    "train": {
        11: ("VG_100K/11.jpg", 200, 100,
             [(SKY, 0, 0, 200, 30), (PERSON, 80, 20, 40, 60), (DOG, 130, 60, 30, 30), (TREE, 0, 10, 30, 80)],
             [(1, NEAR, 2), (3, NEAR, 1)]),
        12: ("VG_100K_2/12.jpg", 100, 200,
             [(CAR, 0, 140, 50, 40), (PERSON, 50, 50, 40, 80), (TREE, 0, 0, 40, 60), (DOG, 60, 130, 30, 30),
              (SKY, 0, 0, 100, 20)],
             [(1, HOLDING, 3), (3, NEAR, 0)]),
        13: ("VG_100K/13.jpg", 100, 100,
             [(PERSON, 10, 10, 30, 30), (DOG, 50, 50, 40, 40), (TREE, 60, 0, 30, 40)],
             [(0, NEAR, 1)]),
    },
    "val": {
        21: ("VG_100K/21.jpg", 100, 100,
             [(CAR, 0, 50, 60, 40), (TREE, 70, 0, 30, 90), (DOG, 10, 10, 30, 30)],
             [(2, ON, 0)]),
    },
}
SG2IM_MAX_OBJECTS, SG2IM_MAX_RELATIONS, SG2IM_MAX_ATTRIBUTES = 6, 4, 3


def write_sg2im_split(h5py, path: Path, images: dict) -> None:
    """One <split>.h5 laid out the way preprocess_vg.py writes it."""
    arrays: dict[str, list] = {name: [] for name in (
        "image_ids", "object_ids", "object_names", "object_boxes", "objects_per_image", "relationship_ids",
        "relationship_subjects", "relationship_predicates", "relationship_objects", "relationships_per_image",
        "attributes_per_object", "object_attributes")}
    for image_id, (_, _, _, objects, triples) in images.items():
        pad, rel_pad = SG2IM_MAX_OBJECTS - len(objects), SG2IM_MAX_RELATIONS - len(triples)
        arrays["image_ids"].append(image_id)
        arrays["object_ids"].append([image_id * 100 + i for i in range(len(objects))] + [-1] * pad)
        arrays["object_names"].append([o[0] for o in objects] + [-1] * pad)
        arrays["object_boxes"].append([list(o[1:]) for o in objects] + [[-1, -1, -1, -1]] * pad)
        arrays["objects_per_image"].append(len(objects))
        arrays["relationship_ids"].append([image_id * 100 + i for i in range(len(triples))] + [-1] * rel_pad)
        for k, name in enumerate(("relationship_subjects", "relationship_predicates", "relationship_objects")):
            arrays[name].append([t[k] for t in triples] + [-1] * rel_pad)
        arrays["relationships_per_image"].append(len(triples))
        arrays["attributes_per_object"].append([0] * len(objects) + [-1] * pad)
        arrays["object_attributes"] += [[-1] * SG2IM_MAX_ATTRIBUTES] * len(objects)
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            f.create_dataset(name, data=np.asarray(values, dtype=np.int32))
        paths = f.create_dataset("image_paths", (len(images),), dtype=h5py.special_dtype(vlen=str))
        for i, (image_path, *_) in enumerate(images.values()):
            paths[i] = image_path


@pytest.fixture(scope="module")
def sg2im_root(tmp_path_factory) -> Path:
    """ROOT/images/VG_100K{,_2}/<id>.jpg with a coloured rectangle per object on grey, ROOT/sg2im/ with
    vocab.json, train.h5 and val.h5 (no test.h5), and ROOT/sg2im_no_vocab/ with train.h5 only."""
    h5py = pytest.importorskip("h5py")
    root = tmp_path_factory.mktemp("visual_genome_sg2im")
    for split_images in SG2IM_IMAGES.values():
        for image_path, width, height, objects, _ in split_images.values():
            image = Image.new("RGB", (width, height), (128, 128, 128))
            draw = ImageDraw.Draw(image)
            for cls, x, y, w, h in sorted(objects, key=lambda o: o[0] != SKY):  # the sky underneath the rest
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=COLOURS[cls])
            (root / "images" / image_path).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / "images" / image_path, quality=95, subsampling=0)
    (root / "sg2im").mkdir()
    (root / "sg2im_no_vocab").mkdir()
    vocab = {  # the name -> index maps in another key order than the index order
        "object_name_to_idx": {n: i for i, n in reversed(list(enumerate(SG2IM_VOCAB_OBJECTS)))},
        "object_idx_to_name": SG2IM_VOCAB_OBJECTS,
        "attribute_name_to_idx": {}, "attribute_idx_to_name": [],
        "pred_name_to_idx": {n: i for i, n in reversed(list(enumerate(SG2IM_VOCAB_PREDICATES)))},
        "pred_idx_to_name": SG2IM_VOCAB_PREDICATES,
    }
    (root / "sg2im" / "vocab.json").write_text(json.dumps(vocab))
    for split, split_images in SG2IM_IMAGES.items():
        write_sg2im_split(h5py, root / "sg2im" / f"{split}.h5", split_images)
    write_sg2im_split(h5py, root / "sg2im_no_vocab" / "train.h5", SG2IM_IMAGES["train"])
    return root


def sg2im_options(**kw) -> VisualGenomeOptions:
    return VisualGenomeOptions(**{"preprocessed": "sg2im", "size": 64, **kw})


def colour_extent(frame: torch.Tensor, colour: tuple[int, int, int], tol: int = 60) -> list[int] | None:
    """Pixel extent (x0, y0, x1, y1) of the pixels of `frame` (3, H, W) within `tol` of `colour` per channel."""
    near = (frame.int() - torch.tensor(colour).view(3, 1, 1)).abs().amax(0) <= tol
    ys, xs = near.nonzero(as_tuple=True)
    return None if len(xs) == 0 else [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_sg2im_preprocessed_vocabulary_records_and_normalised_boxes(sg2im_root):
    ds = VisualGenomeDataset(sg2im_root, "train", sg2im_options(resize="stretch"))
    # names in vocab.json's index order (not the order of the name_to_idx maps, which is reversed there)
    assert ds.vocab.objects == ["__image__", "person", "dog", "tree", "car", "sky"]
    assert ds.vocab.predicates == ["__in_image__", "on", "near", "holding"]
    assert ds.index_path is None and ds.dropped == {} and len(ds) == 3
    # the h5 rows without their -1 padding (objects_per_image 4, 5, 3; relationships_per_image 2, 2, 1)
    rec = {r["id"]: r for r in ds.records}
    assert [r["id"] for r in ds.records] == [11, 12, 13]
    assert rec[11]["path"] == "VG_100K/11.jpg" and rec[12]["path"] == "VG_100K_2/12.jpg"
    assert rec[11]["objs"] == [5, 1, 2, 3] and rec[11]["triples"] == [[1, 2, 2], [3, 2, 1]]
    assert rec[11]["boxes"] == [[0, 0, 200, 30], [80, 20, 40, 60], [130, 60, 30, 30], [0, 10, 30, 80]]
    assert rec[12]["objs"] == [4, 1, 3, 2, 5] and rec[12]["triples"] == [[1, 3, 3], [3, 2, 0]]
    assert rec[13]["objs"] == [1, 2, 3] and rec[13]["triples"] == [[0, 2, 1]]
    assert rec[13]["boxes"] == [[10, 10, 30, 30], [50, 50, 40, 40], [60, 0, 30, 40]]
    val = VisualGenomeDataset(sg2im_root, "val", sg2im_options())
    assert [(r["id"], r["path"], r["objs"], r["triples"]) for r in val.records] == [
        (21, "VG_100K/21.jpg", [4, 3, 2], [[2, 1, 0]])]
    # stretch keeps every object; boxes are x, y, w, h / the image's width and height -> x0, y0, x1, y1
    item = ds[0]  # image 11, 200 x 100
    assert item["source"] == {"dataset": "visual_genome", "split": "train", "image_id": 11}
    (graph,) = item["graphs"]
    assert item["video"].shape == (1, 3, 64, 64)
    assert graph.objs.tolist() == [5, 1, 2, 3] and graph.triples.tolist() == [[1, 2, 2], [3, 2, 1]]
    assert np.allclose(graph.boxes.numpy(), [[0, 0, 1, 0.3], [0.4, 0.2, 0.6, 0.8], [0.65, 0.6, 0.8, 0.9],
                                             [0, 0.1, 0.15, 0.9]], atol=1e-6)
    (graph,) = ds[1]["graphs"]  # image 12, 100 x 200
    assert np.allclose(graph.boxes.numpy(), [[0, 0.7, 0.5, 0.9], [0.5, 0.25, 0.9, 0.65], [0, 0, 0.4, 0.3],
                                             [0.6, 0.65, 0.9, 0.8], [0, 0, 1, 0.1]], atol=1e-6)
    # image_node: vocab.json already holds __image__ / __in_image__ (both at 0), so nothing is appended
    node = VisualGenomeDataset(sg2im_root, "train", sg2im_options(resize="stretch", image_node=True))
    assert node.vocab == ds.vocab
    (graph,) = node[0]["graphs"]
    assert graph.objs.tolist() == [5, 1, 2, 3, 0] and graph.boxes[-1].tolist() == [0, 0, 1, 1]
    assert graph.triples.tolist() == [[1, 2, 2], [3, 2, 1], [0, 0, 4], [1, 0, 4], [2, 0, 4], [3, 0, 4]]


@pytest.mark.parametrize("index, objs, triples, boxes, gone", [
    # image 11, 200 x 100 -> crop to 64: scaled by 0.64 to 128 x 64, 32 px cut on the left. The tree
    # (x 0..30 -> 0..19.2 - 32) falls wholly in the cut: it goes, with its "tree near person" triple.
    (0, [SKY, PERSON, DOG], [[1, NEAR, 2]],
     [[0, 0, 64, 19.2], [19.2, 12.8, 44.8, 51.2], [51.2, 38.4, 64, 57.6]], TREE),
    # image 12, 100 x 200 -> scaled by 0.64 to 64 x 128, 32 px cut at the top: the sky (y 0..20 -> 0..12.8)
    # goes; the tree keeps its bottom (y 50..60 -> 0..6.4), car and dog are cut at the bottom edge.
    (1, [CAR, PERSON, TREE, DOG], [[1, HOLDING, 3], [3, NEAR, 0]],
     [[0, 57.6, 32, 64], [32, 0, 57.6, 51.2], [0, 0, 25.6, 6.4], [38.4, 51.2, 57.6, 64]], SKY),
])
def test_sg2im_preprocessed_boxes_land_on_their_pixels(sg2im_root, index, objs, triples, boxes, gone):
    ds = VisualGenomeDataset(sg2im_root, "train", sg2im_options(resize="crop"))
    item = ds[index]
    frame, (graph,) = item["video"][0], item["graphs"]
    assert graph.objs.tolist() == objs and graph.triples.tolist() == triples
    assert np.allclose(graph.boxes.numpy() * 64, boxes, atol=1e-3)
    for cls, box in zip(objs, boxes):
        # the object's rectangle is where its box says (to the pixel, up to resampling blur at the edges)
        assert np.allclose(colour_extent(frame, COLOURS[cls]), box, atol=1.5), ds.vocab.objects[cls]
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        assert (frame[:, cy, cx].int() - torch.tensor(COLOURS[cls])).abs().max() < 40
    assert colour_extent(frame, COLOURS[gone]) is None  # the object the crop removed is not in the frame


def test_sg2im_preprocessed_keeps_related_objects_first(sg2im_root):
    def kept(**kw) -> dict[int, tuple[list, list]]:
        ds = VisualGenomeDataset(sg2im_root, "train", sg2im_options(**kw))
        return {r["id"]: (r["objs"], r["triples"]) for r in ds.records}

    # 3 of image 12's 5 (car, person, tree, dog, sky): the three in relationships (car, person, dog),
    # not the first three in file order (the tree is an orphan); triples renumbered to the new positions.
    three = kept(max_objects_kept=3)
    assert three[12] == ([CAR, PERSON, DOG], [[1, HOLDING, 2], [2, NEAR, 0]])
    assert three[11] == ([PERSON, DOG, TREE], [[0, NEAR, 1], [2, NEAR, 0]])  # the sky (an orphan) goes
    assert three[13] == ([PERSON, DOG, TREE], [[0, NEAR, 1]])  # fits: unchanged
    ds = VisualGenomeDataset(sg2im_root, "train", sg2im_options(max_objects_kept=3))
    assert ds.records[1]["boxes"] == [[0, 140, 50, 40], [50, 50, 40, 80], [60, 130, 30, 30]]
    # room for one orphan: the first in file order (the tree), all back in file order
    assert kept(max_objects_kept=4)[12] == ([CAR, PERSON, TREE, DOG], [[1, HOLDING, 3], [3, NEAR, 0]])
    # no orphans at all
    no_orphans = kept(use_orphaned_objects=False)
    assert no_orphans[12] == ([CAR, PERSON, DOG], [[1, HOLDING, 2], [2, NEAR, 0]])
    assert no_orphans[13] == ([PERSON, DOG], [[0, NEAR, 1]])
    # fewer slots than related objects: the first two related (car, person) in file order; neither of the
    # relationships has both ends left, so none stays
    assert kept(max_objects_kept=2)[12] == ([CAR, PERSON], [])


def test_sg2im_preprocessed_missing_files_are_named(sg2im_root):
    with pytest.raises(UserError) as err:  # train.h5 and val.h5 exist, test.h5 does not
        VisualGenomeDataset(sg2im_root, "test", sg2im_options())
    assert str(err.value) == (f"{sg2im_root / 'sg2im' / 'test.h5'}: missing "
                              "(sg2im's preprocess_vg.py writes train.h5, val.h5 and test.h5)")
    for folder in ("sg2im_no_vocab", "no_such_folder"):
        with pytest.raises(UserError) as err:
            VisualGenomeDataset(sg2im_root, "train", sg2im_options(preprocessed=folder))
        message = str(err.value)
        assert message.startswith(f"{sg2im_root / folder / 'vocab.json'}: missing ")
        assert "data.preprocessed" in message and "preprocess_vg.py" in message and "objects.json" not in message

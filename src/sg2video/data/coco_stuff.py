"""COCO-Stuff images as 1-frame clips with sg2im's synthetic geometric scene graphs.

Files under `root`: `annotations/instances_<name>.json` and `annotations/stuff_<name>.json` (either may be
missing, not both), images in `images/<name>/<file_name>` or `<name>/<file_name>`, where `<name>` is
`data.splits[split]` (train2017 / val2017). When val and test name the same file (the default: COCO has
no public test annotations), its kept images sorted by id go to val up to `val_images`, the rest to test.

Objects (sg2im's filters): every instance and stuff annotation whose category is in the vocabulary
(all categories of the files, by id, minus stuff `other` unless `include_other`, within the optional
whitelists), crowd regions only with `include_crowd` (sg2im keeps them), and whose box covers more than
`min_object_size` of the image area. An image is kept with `min_objects`..`max_objects` objects and, with
`stuff_only`, at least one stuff annotation.

Relations (sg2im's rules, computed on the original image in normalised coordinates): subject box
strictly containing the object box -> `surrounding`, strictly inside it -> `inside`; otherwise the angle
of `centre(subject) - centre(object)` (y down), centres being mask centroids: `left of` beyond +-3pi/4,
`above` in [-3pi/4, -pi/4), `right of` in [-pi/4, pi/4), `below` in [pi/4, 3pi/4). `relations: pairs`
relates every pair i < j once (subject i); `relations: random` is sg2im's choice: each object with one
random other, in random order, seeded by (seed, image id). Masks are decoded here without pycocotools:
RLE (compressed string or uncompressed list) and polygons (drawn with Pillow).
`image_node: true` adds sg2im's `__image__` node and `__in_image__` triples.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sg2video.data.fit import check_resize_mode, xywh_to_norm_xyxy
from sg2video.data.sources import (
    IMAGE_NODE, IN_IMAGE, SkippingDataset, Unreadable, image_clip, read_image, require_root,
)
from sg2video.errors import ConfigError, UserError
from sg2video.graphs import Vocab

ROOT_HOLDS = "annotations/ (instances_*.json, stuff_*.json) and images/"
PREDICATES = ("left of", "right of", "above", "below", "inside", "surrounding")
OTHER = "other"
SPLITS = ("train", "val", "test")
RELATION_MODES = ("pairs", "random")


# ----------------------------------------------------------------------------------------------
# Masks


def rle_string_to_counts(text: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths (the LEB128-like code of maskApi's rleFrString)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[pos]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            pos += 1
            shift += 1
            if not more and chunk & 0x10:  # sign bit of the last chunk
                value |= -1 << (5 * shift)
        if len(counts) > 2:  # from the third run on, runs are stored as differences
            value += counts[-2]
        counts.append(value)
    return counts


def decode_rle(counts: list[int] | str, height: int, width: int) -> np.ndarray:
    """Run lengths (background first, column-major) -> bool mask (H, W)."""
    if isinstance(counts, str):
        counts = rle_string_to_counts(counts)
    runs = np.asarray(counts, dtype=np.int64)
    if runs.sum() != height * width or (runs < 0).any():
        raise UserError(f"an RLE mask's runs sum to {int(runs.sum())}, not {height} x {width} = {height * width}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


def decode_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(x), float(y)) for x, y in zip(poly[0::2], poly[1::2])], fill=1)
    return np.asarray(canvas, dtype=bool)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (polygons, or RLE with `counts` as a string or a list) -> bool (H, W)."""
    if isinstance(segmentation, list):
        return decode_polygons(segmentation, height, width)
    h, w = segmentation.get("size", (height, width))
    return decode_rle(segmentation["counts"], int(h), int(w))


def mask_centre(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Normalised (x, y) centroid of the mask's pixels (pixel centres); the box centre if it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return np.array([(xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0]])


def relation(box_s: np.ndarray, box_o: np.ndarray, centre_s: np.ndarray, centre_o: np.ndarray) -> str:
    """sg2im's geometric predicate of (subject, object) from boxes (x0, y0, x1, y1) and centres."""
    sx0, sy0, sx1, sy1 = box_s
    ox0, oy0, ox1, oy1 = box_o
    if sx0 < ox0 and sx1 > ox1 and sy0 < oy0 and sy1 > oy1:
        return "surrounding"
    if sx0 > ox0 and sx1 < ox1 and sy0 > oy0 and sy1 < oy1:
        return "inside"
    dx, dy = centre_s - centre_o
    theta = math.atan2(dy, dx)
    if theta >= 3 * math.pi / 4 or theta <= -3 * math.pi / 4:
        return "left of"
    if theta < -math.pi / 4:
        return "above"
    if theta < math.pi / 4:
        return "right of"
    return "below"


# ----------------------------------------------------------------------------------------------
# Index


@dataclass
class CocoStuffOptions:
    size: int = 64
    frames: int = 1
    resize: str = "crop"
    splits: dict = field(default_factory=lambda: {"train": "train2017", "val": "val2017", "test": "val2017"})
    val_images: int = 1024
    min_object_size: float = 0.02
    min_objects: int = 3
    max_objects: int = 8
    include_other: bool = False
    stuff_only: bool = True
    include_crowd: bool = True
    instance_whitelist: list | None = None
    stuff_whitelist: list | None = None
    relations: str = "pairs"
    seed: int = 0
    image_node: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "CocoStuffOptions":
        values = {}
        for f in fields(cls):
            if f.name in cfg:
                value = cfg[f.name]
                if hasattr(value, "items"):
                    value = {str(k): v for k, v in value.items()}
                elif value is not None and not isinstance(value, (str, int, float, bool)):
                    value = list(value)
                values[f.name] = value
        return cls(**values)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def build_index(root: Path, name: str, opts: CocoStuffOptions) -> dict:
    """`instances_<name>.json` + `stuff_<name>.json` -> vocab, kept image records (by id), drop counts."""
    paths = [root / "annotations" / f"{kind}_{name}.json" for kind in ("instances", "stuff")]
    if not any(p.is_file() for p in paths):
        raise UserError(f"neither {paths[0]} nor {paths[1]} exists (data.splits names the COCO files)")
    instances, stuff = (_read_json(p) if p.is_file() else {"images": [], "annotations": [], "categories": []} for p in paths)
    categories = []  # (id, name, is_stuff)
    for data, is_stuff, whitelist in ((instances, False, opts.instance_whitelist), (stuff, True, opts.stuff_whitelist)):
        for cat in data["categories"]:
            if cat["name"] == OTHER and not opts.include_other:
                continue
            if whitelist is not None and cat["name"] not in whitelist:
                continue
            categories.append((int(cat["id"]), str(cat["name"]), is_stuff))
    categories.sort()
    names = [n for _, n, _ in categories]
    if len(set(names)) != len(names):
        raise UserError(f"{root / 'annotations'}: a category name occurs twice in the {name} files")
    class_of = {cid: i for i, (cid, _, _) in enumerate(categories)}
    images = {int(i["id"]): i for data in (instances, stuff) for i in data["images"]}
    anns: dict[int, list[dict]] = {i: [] for i in images}
    has_stuff = {int(a["image_id"]) for a in stuff["annotations"]}
    for ann in instances["annotations"] + stuff["annotations"]:
        anns.setdefault(int(ann["image_id"]), []).append(ann)
    dropped: dict[str, int] = {}
    records = []
    for image_id in sorted(images):
        info = images[image_id]
        width, height = int(info["width"]), int(info["height"])
        objects = []
        for ann in anns[image_id]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if (int(ann["category_id"]) not in class_of or (ann.get("iscrowd") and not opts.include_crowd)
                    or w * h / (width * height) <= opts.min_object_size):
                continue
            objects.append(ann)
        reason = None
        if opts.stuff_only and image_id not in has_stuff:
            reason = "no stuff annotations"
        elif len(objects) < opts.min_objects:
            reason = "too few objects"
        elif len(objects) > opts.max_objects:
            reason = "too many objects"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        records.append({
            "id": image_id, "file_name": info["file_name"], "width": width, "height": height,
            "objs": [class_of[int(a["category_id"])] for a in objects],
            "boxes": xywh_to_norm_xyxy(np.array([a["bbox"] for a in objects], dtype=np.float64), width, height),
            "segmentations": [a["segmentation"] for a in objects],
        })
    return {"vocab": names, "images": records, "dropped": dropped}


class CocoStuffDataset(SkippingDataset):
    """COCO-Stuff images as still clips of `opts.frames` frames (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", opts: CocoStuffOptions | None = None) -> None:
        super().__init__()
        self.root = require_root(root, ROOT_HOLDS)
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is not a split (accepted: {', '.join(SPLITS)})")
        self.opts = opts or CocoStuffOptions()
        check_resize_mode(self.opts.resize)
        if self.opts.relations not in RELATION_MODES:
            raise ConfigError(f"data.relations={self.opts.relations!r} is not accepted (accepted: {', '.join(RELATION_MODES)})")
        self.split = split
        self.file_name = str(self.opts.splits[split])
        index = build_index(self.root, self.file_name, self.opts)
        records = index["images"]
        if self.opts.splits["val"] == self.opts.splits["test"] and split in ("val", "test"):
            records = records[: self.opts.val_images] if split == "val" else records[self.opts.val_images :]
        self.records = records
        self.dropped: dict[str, int] = index["dropped"]
        predicates = list(PREDICATES) + ([IN_IMAGE] if self.opts.image_node else [])
        objects = index["vocab"] + ([IMAGE_NODE] if self.opts.image_node else [])
        self.vocab = Vocab(objects, predicates)
        self.image_node = (self.vocab.object_id(IMAGE_NODE), self.vocab.predicate_id(IN_IMAGE)) if self.opts.image_node else None

    def __len__(self) -> int:
        return len(self.records)

    def relations(self, record: dict) -> np.ndarray:
        """(R, 3) triples of one image record (module docstring)."""
        boxes = record["boxes"]
        centres = [mask_centre(decode_segmentation(seg, record["height"], record["width"]), box)
                   for seg, box in zip(record["segmentations"], boxes)]
        n = len(boxes)
        if self.opts.relations == "pairs":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        else:
            rng = np.random.default_rng([self.opts.seed, record["id"]])
            pairs = []
            for i in range(n):
                j = int(rng.choice([k for k in range(n) if k != i])) if n > 1 else i
                pairs.append((i, j) if rng.random() > 0.5 else (j, i))
            pairs = [(s, o) for s, o in pairs if s != o]
        triples = [(s, PREDICATES.index(relation(boxes[s], boxes[o], centres[s], centres[o])), o) for s, o in pairs]
        return np.asarray(triples, dtype=np.int64).reshape(-1, 3)

    def image_path(self, record: dict) -> Path:
        for folder in (self.root / "images" / self.file_name, self.root / self.file_name, self.root / "images"):
            if (folder / record["file_name"]).is_file():
                return folder / record["file_name"]
        raise Unreadable(f"{record['file_name']} is in none of images/{self.file_name}/, {self.file_name}/, images/")

    def load(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(self.image_path(record))
        video, graphs = image_clip(image, np.asarray(record["objs"]), record["boxes"], self.relations(record),
                                   self.opts.size, self.opts.resize, self.opts.frames, self.image_node)
        return {"video": video, "graphs": graphs,
                "source": {"dataset": "coco_stuff", "split": self.split, "image_id": record["id"]}}

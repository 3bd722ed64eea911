"""Visual Genome images as 1-frame clips, filtered the way sg2im's preprocessing does.

Two sources:
- the raw release under `root`: `image_data.json`, `objects.json`, `relationships.json` (attributes
  are ignored) and, when present, alias files (`object_alias.txt`, `relationship_alias.txt`: each line
  `canonical,alias,alias,...`). Images: `root/images/<id>.jpg`, or under `images/VG_100K/` /
  `images/VG_100K_2/` (or those two folders directly under root);
- sg2im's preprocessed `vocab.json` + `{train,val,test}.h5` in `data.preprocessed` (needs h5py).

Filters on the raw release, in order (sg2im's, with the object size as a fraction of image area):
1. split per image: `data.splits_file` (JSON `{"train": [ids], "val": [...], "test": [...]}`), else by
   a hash of the image id (crc32 of its decimal string) against `data.split_ratios`;
2. images whose shorter side is below `min_image_size` pixels are dropped;
3. names are lower-cased, stripped and aliased; the object vocabulary is every name used by at least
   `min_object_instances` objects of train images (an object counts once per distinct name), most
   frequent first (ties by name);
4. an object is kept when one of its names is in the vocabulary (the first such name is its class)
   and its box covers at least `min_object_size` of the image area;
5. predicates (lower-cased, stripped, aliased) used at least `min_predicate_instances` times by train
   relationships between kept objects make the predicate vocabulary;
6. an image is kept with `min_objects`..`max_objects` kept objects and `min_relations`..`max_relations`
   relationships (vocabulary predicate, both ends kept, not an object to itself, duplicates removed);
7. at most `max_objects_kept` objects stay per image, those in relationships first (then the others
   when `use_orphaned_objects`), in file order; relationships between the ones that stay are kept.
The filtered index is cached as JSON under `data.cache_dir` (default ROOT/sg2video_index), keyed by the
options and the input files' sizes, so later runs skip the slow JSON parse.

`image_node: true` adds sg2im's `__image__` object (box = the frame) and `__in_image__` triples.
Items are `frames` copies of the image (a still clip; 1 by default); objects whose box the crop
removes are dropped with their relationships.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from sg2video.data.fit import check_resize_mode, xywh_to_norm_xyxy
from sg2video.data.sources import (
    IMAGE_NODE, IN_IMAGE, SkippingDataset, Unreadable, default_cache_dir, image_clip, read_image, require_root,
)
from sg2video.errors import ConfigError, UserError
from sg2video.graphs import Vocab

ROOT_HOLDS = "image_data.json, objects.json, relationships.json and images/"
SPLITS = ("train", "val", "test")
INDEX_VERSION = 1


@dataclass
class VisualGenomeOptions:
    size: int = 64
    frames: int = 1
    resize: str = "crop"
    min_object_instances: int = 2000
    min_predicate_instances: int = 500
    min_image_size: int = 200
    min_object_size: float = 0.002  # fraction of image area (~ sg2im's 32 x 32 px on an 800 x 600 image)
    min_objects: int = 3
    max_objects: int = 30
    min_relations: int = 1
    max_relations: int = 30
    max_objects_kept: int = 10
    use_orphaned_objects: bool = True
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    splits_file: str | None = None
    object_aliases: str | None = "object_alias.txt"
    predicate_aliases: str | None = "relationship_alias.txt"
    image_node: bool = False
    preprocessed: str | None = None
    cache_dir: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "VisualGenomeOptions":
        values = {}
        for f in fields(cls):
            if f.name in cfg and cfg[f.name] is not None:
                value = cfg[f.name]
                values[f.name] = tuple(float(v) for v in value) if f.name == "split_ratios" else value
            elif f.name in cfg:
                values[f.name] = None
        return cls(**values)

    def index_key(self) -> dict:
        """The options the filtered index depends on."""
        skip = ("size", "frames", "resize", "image_node", "cache_dir")
        return {k: v for k, v in asdict(self).items() if k not in skip}


def _name(text: str, aliases: dict[str, str]) -> str:
    name = text.strip().lower()
    return aliases.get(name, name)


def load_aliases(path: Path) -> dict[str, str]:
    """sg2im's alias files: each line `canonical,alias,...` maps every name on it to the first."""
    aliases: dict[str, str] = {}
    if not path.is_file():
        return aliases
    for line in path.read_text(encoding="utf-8").splitlines():
        names = [n.strip().lower() for n in line.split(",") if n.strip()]
        for n in names:
            aliases[n] = names[0]
    return aliases


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing (a Visual Genome root holds {ROOT_HOLDS})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def hash_split(image_id: int, ratios: tuple[float, float, float]) -> str:
    """train / val / test from crc32 of the id's decimal string: stable on every machine."""
    total = sum(ratios)
    if len(ratios) != 3 or total <= 0 or min(ratios) < 0:
        raise ConfigError(f"data.split_ratios={list(ratios)} must be three non-negative numbers (train, val, test)")
    u = zlib.crc32(str(image_id).encode()) / 2**32
    edge = 0.0
    for split, ratio in zip(SPLITS, ratios):
        edge += ratio / total
        if u < edge:
            return split
    return SPLITS[-1]


def _most_common(counter: Counter, minimum: int) -> list[str]:
    return [name for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if count >= minimum]


def select_objects(num_objects: int, triples: list[tuple[int, int, int]], keep: int, orphans: bool) -> list[int]:
    """Indices (file order) of at most `keep` objects: those in `triples` first, then the others."""
    related = sorted({t[0] for t in triples} | {t[2] for t in triples})
    chosen = related[:keep]
    if orphans:
        related_set = set(related)
        others = [i for i in range(num_objects) if i not in related_set]
        chosen += others[: keep - len(chosen)]
    return sorted(chosen)


def build_index(root: Path, opts: VisualGenomeOptions) -> dict:
    """The raw release -> {vocab, images: {split: [record]}, dropped: {reason: count}} (module docstring)."""
    images = {int(i["image_id"]): i for i in _read_json(root / "image_data.json")}
    if opts.splits_file:
        listed = _read_json(root / opts.splits_file)
        split_of = {int(i): s for s in SPLITS for i in listed.get(s, []) if int(i) in images}
    else:
        split_of = {i: hash_split(i, opts.split_ratios) for i in images}
    dropped = Counter()
    for image_id, image in images.items():
        if image_id in split_of and min(image["width"], image["height"]) < opts.min_image_size:
            del split_of[image_id]
            dropped["image too small"] += 1
    obj_aliases = load_aliases(root / opts.object_aliases) if opts.object_aliases else {}
    pred_aliases = load_aliases(root / opts.predicate_aliases) if opts.predicate_aliases else {}

    objects_json = _read_json(root / "objects.json")
    name_counts: Counter = Counter()
    for image in objects_json:
        if split_of.get(int(image["image_id"])) == "train":
            for obj in image["objects"]:
                name_counts.update({_name(n, obj_aliases) for n in obj.get("names", [])})
    object_names = _most_common(name_counts, opts.min_object_instances)
    object_index = {n: i for i, n in enumerate(object_names)}

    kept_objects: dict[int, list[tuple[int, int, list[float]]]] = {}  # image -> [(object_id, class, xywh)]
    for image in objects_json:
        image_id = int(image["image_id"])
        if image_id not in split_of:
            continue
        info = images[image_id]
        area = float(info["width"] * info["height"])
        seen, kept = set(), []
        for obj in image["objects"]:
            cls = next((object_index[n] for n in (_name(x, obj_aliases) for x in obj.get("names", [])) if n in object_index), None)
            w, h = float(obj["w"]), float(obj["h"])
            if cls is None or obj["object_id"] in seen or w <= 0 or h <= 0 or w * h < opts.min_object_size * area:
                continue
            seen.add(obj["object_id"])
            kept.append((int(obj["object_id"]), cls, [float(obj["x"]), float(obj["y"]), w, h]))
        kept_objects[image_id] = kept
    del objects_json

    relationships_json = _read_json(root / "relationships.json")
    raw_relations: dict[int, list[tuple[int, str, int]]] = {}
    pred_counts: Counter = Counter()
    for image in relationships_json:
        image_id = int(image["image_id"])
        if image_id not in kept_objects:
            continue
        ids = {oid for oid, _, _ in kept_objects[image_id]}
        rels = []
        for rel in image["relationships"]:
            s, o = rel["subject"]["object_id"], rel["object"]["object_id"]
            if s in ids and o in ids:
                rels.append((s, _name(rel["predicate"], pred_aliases), o))
        raw_relations[image_id] = rels
        if split_of[image_id] == "train":
            pred_counts.update(p for _, p, _ in rels)
    del relationships_json
    predicate_names = _most_common(pred_counts, opts.min_predicate_instances)
    pred_index = {n: i for i, n in enumerate(predicate_names)}

    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for image_id in sorted(kept_objects):
        objs = kept_objects[image_id]
        position = {oid: i for i, (oid, _, _) in enumerate(objs)}
        triples = list(dict.fromkeys(  # duplicates removed, first-seen order kept
            (position[s], pred_index[p], position[o])
            for s, p, o in raw_relations.get(image_id, []) if p in pred_index and s != o
        ))
        reason = None
        if len(objs) < opts.min_objects:
            reason = "too few objects"
        elif len(objs) > opts.max_objects:
            reason = "too many objects"
        elif len(triples) < opts.min_relations:
            reason = "too few relations"
        elif len(triples) > opts.max_relations:
            reason = "too many relations"
        if reason:
            dropped[reason] += 1
            continue
        chosen = select_objects(len(objs), triples, opts.max_objects_kept, opts.use_orphaned_objects)
        new = {old: i for i, old in enumerate(chosen)}
        info = images[image_id]
        boxes = xywh_to_norm_xyxy(np.array([objs[i][2] for i in chosen]), info["width"], info["height"])
        records[split_of[image_id]].append({
            "id": image_id,
            "path_hint": Path(str(info.get("url") or "")).parent.name,
            "objs": [objs[i][1] for i in chosen],
            "boxes": np.round(boxes, 6).tolist(),
            "triples": [[new[s], p, new[o]] for s, p, o in triples if s in new and o in new],
        })
    return {"version": INDEX_VERSION, "vocab": {"objects": object_names, "predicates": predicate_names},
            "images": records, "dropped": dict(sorted(dropped.items()))}


def _index_path(root: Path, opts: VisualGenomeOptions) -> Path:
    stamp = {name: (root / name).stat().st_size for name in ("image_data.json", "objects.json", "relationships.json")
             if (root / name).is_file()}
    key = json.dumps([opts.index_key(), stamp], sort_keys=True)
    return default_cache_dir(root, opts.cache_dir) / f"visual_genome_{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def load_or_build_index(root: Path, opts: VisualGenomeOptions) -> tuple[dict, Path | None]:
    """The cached index when there is one for these options, else a fresh one (cached if writable)."""
    from sg2video.video_io import write_atomic

    path = _index_path(root, opts)
    if path.is_file():
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("version") == INDEX_VERSION:
            return index, path
    index = build_index(root, opts)
    try:
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(index), encoding="utf-8"))
    except OSError:
        return index, None  # a read-only dataset directory: rebuild next time
    return index, path


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise UserError(
            "data.preprocessed points at sg2im's .h5 files, which need h5py (not installed): "
            "`pip install h5py`, or set data.preprocessed=null to read the raw Visual Genome JSON"
        ) from None
    return h5py


def load_sg2im_preprocessed(directory: Path, split: str, opts: VisualGenomeOptions) -> dict:
    """sg2im's `vocab.json` + `<split>.h5` -> the same index layout (boxes stay in pixels: `pixel_boxes`)."""
    h5py = _import_h5py()
    vocab_path = directory / "vocab.json"
    if not vocab_path.is_file():  # _read_json's hint is about the raw release, not this folder
        raise UserError(f"{vocab_path}: missing (data.preprocessed names the folder where sg2im's preprocess_vg.py "
                        "wrote vocab.json, train.h5, val.h5 and test.h5)")
    vocab = _read_json(vocab_path)
    path = directory / f"{split}.h5"
    if not path.is_file():
        raise UserError(f"{path}: missing (sg2im's preprocess_vg.py writes train.h5, val.h5 and test.h5)")
    records = []
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in ("image_ids", "object_names", "object_boxes", "objects_per_image",
                                               "relationship_subjects", "relationship_predicates",
                                               "relationship_objects", "relationships_per_image", "image_paths")}
    for n, image_id in enumerate(data["image_ids"].tolist()):
        num_obj, num_rel = int(data["objects_per_image"][n]), int(data["relationships_per_image"][n])
        triples = list(zip(data["relationship_subjects"][n, :num_rel].tolist(),
                           data["relationship_predicates"][n, :num_rel].tolist(),
                           data["relationship_objects"][n, :num_rel].tolist()))
        chosen = select_objects(num_obj, triples, opts.max_objects_kept, opts.use_orphaned_objects)
        new = {old: i for i, old in enumerate(chosen)}
        path_value = data["image_paths"][n]
        records.append({
            "id": int(image_id),
            "path": path_value.decode() if isinstance(path_value, bytes) else str(path_value),
            "objs": [int(data["object_names"][n, i]) for i in chosen],
            "boxes": [data["object_boxes"][n, i].astype(float).tolist() for i in chosen],  # x, y, w, h pixels
            "pixel_boxes": True,
            "triples": [[new[s], p, new[o]] for s, p, o in triples if s in new and o in new],
        })
    return {"vocab": {"objects": list(vocab["object_idx_to_name"]), "predicates": list(vocab["pred_idx_to_name"])},
            "images": {split: records}, "dropped": {}}


class VisualGenomeDataset(SkippingDataset):
    """Visual Genome images as still clips of `opts.frames` frames (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", opts: VisualGenomeOptions | None = None) -> None:
        super().__init__()
        self.root = require_root(root, ROOT_HOLDS)
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is not a split (accepted: {', '.join(SPLITS)})")
        self.opts = opts or VisualGenomeOptions()
        check_resize_mode(self.opts.resize)
        self.split = split
        if self.opts.preprocessed:
            index, self.index_path = load_sg2im_preprocessed(self.root / self.opts.preprocessed, split, self.opts), None
        else:
            index, self.index_path = load_or_build_index(self.root, self.opts)
        objects, predicates = list(index["vocab"]["objects"]), list(index["vocab"]["predicates"])
        if self.opts.image_node:
            objects += [IMAGE_NODE] if IMAGE_NODE not in objects else []
            predicates += [IN_IMAGE] if IN_IMAGE not in predicates else []
        self.vocab = Vocab(objects, predicates)
        self.image_node = (self.vocab.object_id(IMAGE_NODE), self.vocab.predicate_id(IN_IMAGE)) if self.opts.image_node else None
        self.records: list[dict] = index["images"][split]
        self.dropped: dict[str, int] = index["dropped"]

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: dict) -> Path:
        if "path" in record:
            return self.root / "images" / record["path"]
        name = f"{record['id']}.jpg"
        folders = [self.root / "images", self.root / "images" / record.get("path_hint", ""),
                   self.root / "images" / "VG_100K", self.root / "images" / "VG_100K_2",
                   self.root / "VG_100K", self.root / "VG_100K_2"]
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
        raise Unreadable(f"image {name} is in none of images/, images/VG_100K/, images/VG_100K_2/")

    def load(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(self.image_path(record))
        boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
        if record.get("pixel_boxes"):
            boxes = xywh_to_norm_xyxy(boxes, image.shape[2], image.shape[1])
        video, graphs = image_clip(image, np.asarray(record["objs"]), boxes, np.asarray(record["triples"]),
                                   self.opts.size, self.opts.resize, self.opts.frames, self.image_node)
        return {"video": video, "graphs": graphs,
                "source": {"dataset": "visual_genome", "split": self.split, "image_id": record["id"]}}

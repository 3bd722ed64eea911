"""Action Genome (shared/specs/action_genome_format.md): person-object relations on Charades videos.

Two steps, so training never unpickles:
1. `prepare_action_genome` (run by `src/prepare.py ... unpickle_ok=true`) reads the class files and the
   two pickles once and writes a safe index: `action_genome_index.json` (vocabulary, videos, counts) and
   `action_genome_index.npz` (arrays, loaded with `allow_pickle=False`) under `data.cache_dir`, or
   ROOT/sg2video_index when that is null.
2. `ActionGenomeDataset` reads only that index, and frames from `videos/XXXXX.mp4` (decord, index
   NNNNNN - 1) or `frames/XXXXX.mp4/NNNNNN.png` when the clip's PNGs are all there.

What prepare keeps: a frame needs a person box (N > 0; the highest-scoring box is the person) and at
least one visible object (`visible` and a bbox); a video needs at least `data.frames` kept frames.
Vocabulary: the class files' order; names are the pickle's spellings (`cup/glass/bottle`,
`looking_at`); a pickle name maps to its class by removing `/` and `_`.

What a clip is: `frames` consecutive kept frames of one video, in frame-number order (windows every
`stride` frames). Its graph, the same object list in every frame (the item contract):
- node 0 is the person, then every object class visible in at least one of the clip's frames, in
  class-id order (Action Genome annotates one instance per class per frame);
- in a frame where an object is not visible (annotation says so, or its box lies wholly outside the
  crop) the node stays, with box (0, 0, 0, 0) and no triples: a graph says what its frame shows;
- triples `(person, r, object)` for every attention / spatial / contacting relation of a visible object;
- boxes: objects from xywh, the person from xyxy, normalised by `bbox_size`, moved with the pixels by
  the resize mode (`crop` | `pad` | `stretch`) and clipped to [0, 1]. The person node keeps its
  triples even if the crop cuts it out (it is the subject of them all).
Split: `metadata['set']` per video; Action Genome has no validation set, so `val` reads the test videos.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sg2video.data.fit import FitGeometry, check_resize_mode
from sg2video.data.sources import SkippingDataset, Unreadable, default_cache_dir, require_root
from sg2video.errors import ConfigError, UserError
from sg2video.graphs import SceneGraph, Vocab

INDEX_VERSION = 1
INDEX_JSON = "action_genome_index.json"
INDEX_NPZ = "action_genome_index.npz"
ROOT_HOLDS = "annotations/ and videos/"
SPLIT_SETS = {"train": "train", "val": "test", "test": "test"}
PERSON = "person"
# the pickles' spellings of the class-file names that differ (specs/action_genome_format.md)
PICKLE_SPELLINGS = {
    name.replace("/", "").replace("_", ""): name
    for name in (
        "closet/cabinet", "cup/glass/bottle", "paper/notebook", "phone/camera", "sofa/couch",
        "looking_at", "not_looking_at", "in_front_of", "on_the_side_of", "covered_by", "drinking_from",
        "have_it_on_the_back", "leaning_on", "lying_on", "not_contacting", "other_relationship",
        "sitting_on", "standing_on", "writing_on",
    )
}
RELATION_KEYS = ("attention_relationship", "spatial_relationship", "contacting_relationship")
DROP_REASONS = ("no person box", "nothing visible")


def class_key(name: str) -> str:
    """The spelling-free key of a class name: `cup/glass/bottle` and `cupglassbottle` agree."""
    return name.replace("/", "").replace("_", "").strip()


def read_class_file(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise UserError(f"{path}: missing (an Action Genome root holds annotations/{path.name})") from None
    names = [n for n in names if n]
    if not names:
        raise UserError(f"{path}: no class names in it")
    return names


def action_genome_vocab(root: Path) -> Vocab:
    """Vocabulary from the class files, in their order, with the pickles' spellings."""
    annotations = root / "annotations"
    objects = read_class_file(annotations / "object_classes.txt")
    predicates = read_class_file(annotations / "relationship_classes.txt")
    if PERSON not in objects:
        raise UserError(f"{annotations / 'object_classes.txt'}: no \"{PERSON}\" class in it")
    return Vocab(
        objects=[PICKLE_SPELLINGS.get(class_key(n), n) for n in objects],
        predicates=[PICKLE_SPELLINGS.get(class_key(n), n) for n in predicates],
    )


# ----------------------------------------------------------------------------------------------
# Preparation: pickles -> safe index


@dataclass
class PrepareReport:
    """What prepare read, kept and dropped (frames are annotated frames, i.e. pickle keys)."""

    frames: int = 0
    videos: int = 0
    kept_frames: int = 0
    kept_videos: int = 0
    dropped_frames: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})
    short_videos: int = 0  # videos with fewer kept frames than a clip needs
    short_video_frames: int = 0
    min_frames: int = 1
    unknown_names: dict[str, int] = field(default_factory=dict)  # object/relation names not in the class files
    index_dir: str = ""

    def lines(self) -> list[str]:
        lines = [
            f"Action Genome: {self.frames} annotated frames in {self.videos} videos",
            f"kept {self.kept_frames} frames in {self.kept_videos} videos -> {self.index_dir}",
        ]
        for reason, count in self.dropped_frames.items():
            lines.append(f"dropped {count} frames: {reason}")
        lines.append(
            f"dropped {self.short_video_frames} frames of {self.short_videos} videos: "
            f"too few frames for a clip (fewer than data.frames={self.min_frames})"
        )
        for name, count in sorted(self.unknown_names.items()):
            lines.append(f"ignored {count} uses of \"{name}\": not in the class files")
        return lines

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _load_pickle(path: Path):
    try:
        with path.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - the person opted in with unpickle_ok=true
    except FileNotFoundError:
        raise UserError(f"{path}: missing (an Action Genome root holds annotations/{path.name})") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise UserError(f"{path}: not a readable pickle ({err.__class__.__name__}: {err})") from None


def _split_key(key: str) -> tuple[str, int]:
    """`XXXXX.mp4/NNNNNN.png` -> (`XXXXX.mp4`, NNNNNN)."""
    video, _, frame = key.partition("/")
    if not video or not frame.endswith(".png") or not frame[:-4].isdigit():
        raise UserError(f"object_bbox_and_relationship.pkl: key {key!r} is not XXXXX.mp4/NNNNNN.png")
    return video, int(frame[:-4])


def _frame_record(objects: list, person: dict | None, obj_ids: dict, pred_ids: dict, unknown: dict) -> dict | str:
    """One annotated frame -> its record, or the reason it is dropped."""
    boxes = None if person is None else np.asarray(person.get("bbox", []), dtype=np.float64).reshape(-1, 4)
    if boxes is None or len(boxes) == 0:
        return "no person box"
    width, height = (float(v) for v in person["bbox_size"])
    scores = np.asarray(person.get("bbox_score", np.ones(len(boxes))), dtype=np.float64).reshape(-1)
    person_box = boxes[int(np.argmax(scores))] / np.array([width, height, width, height])
    classes, obj_boxes, preds, split = [], [], [], None
    for obj in objects or []:
        split = split or (obj.get("metadata") or {}).get("set")
        if not obj.get("visible") or obj.get("bbox") is None:
            continue
        cid = obj_ids.get(class_key(str(obj["class"])))
        if cid is None:
            unknown[str(obj["class"])] = unknown.get(str(obj["class"]), 0) + 1
            continue
        if cid in classes:  # one instance per class and frame
            continue
        rels: list[int] = []
        for rel_key in RELATION_KEYS:
            for name in obj.get(rel_key) or []:
                pid = pred_ids.get(class_key(str(name)))
                if pid is None:
                    unknown[str(name)] = unknown.get(str(name), 0) + 1
                elif pid not in rels:
                    rels.append(pid)
        x, y, w, h = (float(v) for v in obj["bbox"])
        classes.append(cid)
        obj_boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
        preds.append(rels)
    if not classes:
        return "nothing visible"
    return {
        "size": (int(round(width)), int(round(height))),
        "split": split,
        "person_box": np.clip(person_box, 0, 1),
        "classes": classes,
        "boxes": np.clip(np.asarray(obj_boxes, dtype=np.float64), 0, 1),
        "preds": preds,
    }


def build_index(objects_by_key: dict, persons_by_key: dict, vocab: Vocab, min_frames: int) -> tuple[dict, dict, PrepareReport]:
    """The two pickles' dicts -> (index meta for JSON, index arrays for NPZ, report)."""
    obj_ids = {class_key(n): i for i, n in enumerate(vocab.objects)}
    pred_ids = {class_key(n): i for i, n in enumerate(vocab.predicates)}
    report = PrepareReport(min_frames=min_frames)
    per_video: dict[str, list[tuple[int, dict]]] = {}
    all_videos: set[str] = set()
    for key, objects in objects_by_key.items():
        video, number = _split_key(key)
        all_videos.add(video)
        report.frames += 1
        record = _frame_record(objects, persons_by_key.get(key), obj_ids, pred_ids, report.unknown_names)
        if isinstance(record, str):
            report.dropped_frames[record] += 1
            continue
        per_video.setdefault(video, []).append((number, record))
    report.videos = len(all_videos)

    videos, numbers, person_boxes, obj_counts, obj_class, obj_box, rel_counts, rel_pred = [], [], [], [], [], [], [], []
    for video in sorted(per_video):
        frames = sorted(per_video[video], key=lambda item: item[0])  # frame order, not key order
        if len(frames) < min_frames:
            report.short_videos += 1
            report.short_video_frames += len(frames)
            continue
        first = frames[0][1]
        videos.append({"name": video, "split": first["split"], "width": first["size"][0],
                       "height": first["size"][1], "first": len(numbers), "count": len(frames)})
        for number, record in frames:
            numbers.append(number)
            person_boxes.append(record["person_box"])
            obj_counts.append(len(record["classes"]))
            obj_class.extend(record["classes"])
            obj_box.extend(record["boxes"])
            rel_counts.extend(len(p) for p in record["preds"])
            for p in record["preds"]:
                rel_pred.extend(p)
    report.kept_videos = len(videos)
    report.kept_frames = len(numbers)
    arrays = {
        "frame_number": np.asarray(numbers, dtype=np.int32),
        "person_box": np.asarray(person_boxes, dtype=np.float32).reshape(-1, 4),
        "obj_offsets": np.concatenate([[0], np.cumsum(obj_counts)]).astype(np.int64),
        "obj_class": np.asarray(obj_class, dtype=np.int16),
        "obj_box": np.asarray(obj_box, dtype=np.float32).reshape(-1, 4),
        "rel_offsets": np.concatenate([[0], np.cumsum(rel_counts)]).astype(np.int64),
        "rel_pred": np.asarray(rel_pred, dtype=np.int16),
    }
    meta = {"version": INDEX_VERSION, "dataset": "action_genome", "min_frames": min_frames,
            "vocab": vocab.to_dict(), "videos": videos}
    return meta, arrays, report


def prepare_action_genome(root: str | Path, frames: int, cache_dir: str | Path | None = None,
                          unpickle_ok: bool = False) -> PrepareReport:
    """Read the class files and pickles under `root` once; write the safe index; return the counts."""
    from sg2video.video_io import write_atomic

    root = require_root(root, ROOT_HOLDS)
    if not unpickle_ok:
        raise UserError(
            f"refusing to unpickle {root / 'annotations'}/*.pkl: pickles can run code when loaded; "
            "pass unpickle_ok=true if you trust these files (it is read once, into a safe index)"
        )
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"data.frames={frames!r} must be an integer >= 1")
    vocab = action_genome_vocab(root)
    objects_by_key = _load_pickle(root / "annotations" / "object_bbox_and_relationship.pkl")
    persons_by_key = _load_pickle(root / "annotations" / "person_bbox.pkl")
    if not isinstance(objects_by_key, dict) or not isinstance(persons_by_key, dict):
        raise UserError(f"{root / 'annotations'}: the pickles do not hold dicts keyed XXXXX.mp4/NNNNNN.png")
    meta, arrays, report = build_index(objects_by_key, persons_by_key, vocab, frames)
    out = default_cache_dir(root, cache_dir)
    report.index_dir = str(out)
    meta["report"] = report.to_dict()
    write_atomic(out / INDEX_NPZ, lambda tmp: np.savez(tmp, **arrays))
    write_atomic(out / INDEX_JSON, lambda tmp: tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8"))
    return report


# ----------------------------------------------------------------------------------------------
# The dataset


def load_index(root: Path, cache_dir: str | Path | None) -> tuple[dict, dict[str, np.ndarray]]:
    index_dir = default_cache_dir(root, cache_dir)
    json_path, npz_path = index_dir / INDEX_JSON, index_dir / INDEX_NPZ
    if not json_path.is_file() or not npz_path.is_file():
        raise UserError(
            f"no Action Genome index in {index_dir}: run `python src/prepare.py data=action_genome "
            f"data.root={root} unpickle_ok=true` first (it converts the pickles once)"
        )
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    if meta.get("version") != INDEX_VERSION:
        raise UserError(f"{json_path}: index version {meta.get('version')} is not {INDEX_VERSION}: run prepare.py again")
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return meta, arrays


class ActionGenomeDataset(SkippingDataset):
    """Clips of `frames` consecutive annotated frames (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", frames: int = 8, size: int = 64,
                 resize: str = "crop", cache_dir: str | Path | None = None, stride: int = 1) -> None:
        super().__init__()
        self.root = require_root(root, ROOT_HOLDS)
        if split not in SPLIT_SETS:
            raise ConfigError(f"split={split!r} is not a split (accepted: {', '.join(SPLIT_SETS)})")
        if not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"data.stride={stride!r} must be an integer >= 1")
        self.split, self.frames, self.size, self.stride = split, int(frames), int(size), stride
        self.resize = check_resize_mode(resize)
        meta, self.arrays = load_index(self.root, cache_dir)
        if self.frames < meta["min_frames"]:
            raise ConfigError(
                f"data.frames={self.frames} is below the {meta['min_frames']} frames the index was prepared for "
                f"(videos with fewer frames were dropped): run prepare.py again with data.frames={self.frames}"
            )
        self.vocab = Vocab.from_dict(meta["vocab"])
        self.person_id = self.vocab.object_id(PERSON)
        self.videos = meta["videos"]
        wanted = SPLIT_SETS[split]
        self.clips: list[tuple[int, int]] = []  # (video position, first frame row)
        for v, video in enumerate(self.videos):
            if video["split"] != wanted:
                continue
            last_start = video["first"] + video["count"] - self.frames
            self.clips.extend((v, row) for row in range(video["first"], last_start + 1, stride))

    def __len__(self) -> int:
        return len(self.clips)

    def read_frames(self, video: dict, numbers: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) of annotated frames `numbers` (1-based), or Unreadable."""
        from sg2video.video_io import read_video

        png_dir = self.root / "frames" / video["name"]
        pngs = [png_dir / f"{n:06d}.png" for n in numbers]
        try:
            if png_dir.is_dir() and all(p.is_file() for p in pngs):
                from PIL import Image

                frames = []
                for p in pngs:
                    with Image.open(p) as image:
                        frames.append(np.asarray(image.convert("RGB")))
                return np.stack(frames)
            path = self.root / "videos" / video["name"]
            if not path.is_file():
                raise Unreadable(f"{path}: missing")
            return read_video(path, [int(n) - 1 for n in numbers])
        except Unreadable:
            raise
        except Exception as err:  # decord and PIL raise many kinds for corrupt files; all mean "unreadable"
            raise Unreadable(f"{video['name']}: {err.__class__.__name__}: {err}") from None

    def load(self, index: int) -> dict:
        v, start = self.clips[index]
        video = self.videos[v]
        rows = np.arange(start, start + self.frames)
        numbers = self.arrays["frame_number"][rows]
        pixels = self.read_frames(video, numbers)
        if pixels.ndim != 4 or len(pixels) != self.frames or len(set(p.shape for p in pixels)) != 1:
            raise Unreadable(f"{video['name']}: frames {numbers.tolist()} did not decode to one size")
        geometry = FitGeometry.make(pixels.shape[2], pixels.shape[1], self.size, self.resize)
        return {
            "video": geometry.frames(pixels),
            "graphs": self.clip_graphs(rows, geometry),
            "source": {"dataset": "action_genome", "split": self.split, "video": video["name"],
                       "frames": [int(n) for n in numbers]},
        }

    def clip_graphs(self, rows: np.ndarray, geometry: FitGeometry) -> list[SceneGraph]:
        a = self.arrays
        per_frame = []  # (classes, fitted boxes, shown mask, preds per object) for each frame
        for row in rows:
            lo, hi = a["obj_offsets"][row], a["obj_offsets"][row + 1]
            boxes, shown = geometry.boxes(a["obj_box"][lo:hi])
            preds = [a["rel_pred"][a["rel_offsets"][m]:a["rel_offsets"][m + 1]] for m in range(lo, hi)]
            per_frame.append((a["obj_class"][lo:hi].astype(np.int64), boxes, shown, preds))
        union = sorted({int(c) for classes, _, shown, _ in per_frame for c in classes[shown]})
        node_of = {c: 1 + i for i, c in enumerate(union)}
        objs = torch.tensor([self.person_id] + union, dtype=torch.long)
        person_boxes, _ = geometry.boxes(a["person_box"][rows])
        graphs = []
        for t, (classes, boxes, shown, preds) in enumerate(per_frame):
            frame_boxes = np.zeros((len(objs), 4), dtype=np.float32)
            frame_boxes[0] = person_boxes[t]
            triples = []
            for cls, box, ok, obj_preds in zip(classes, boxes, shown, preds):
                if not ok:
                    continue
                node = node_of[int(cls)]
                frame_boxes[node] = box
                triples.extend((0, int(p), node) for p in obj_preds)
            graphs.append(SceneGraph(objs, torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
                                     torch.from_numpy(frame_boxes)))
        return graphs

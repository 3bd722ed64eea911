"""The graph JSON format (contract v1, shared/specs/graph_json.md): parsing, checking and writing.

`parse_graph` / `load_graph_json` read a file into a `GraphSpec` (objects + timeline segments), which expands
into per-frame `SceneGraph`s; `graphs_to_json` / `write_graph_json` write per-frame graphs back in timeline form.
Every mistake in a file is a `GraphFormatError` naming where it is and what is accepted.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from sg2video.errors import UserError
from sg2video.graphs import SceneGraph, Vocab


class GraphFormatError(UserError):
    """A graph JSON file that does not follow the format or the model's vocabulary."""


# ----------------------------------------------------------------------------------------------
# Graph JSON (shared/specs/graph_json.md)


@dataclass
class Segment:
    """Frames `[start, end)` of a graph spec with their relations and optional boxes."""

    start: int
    end: int | None  # None: a static graph (as long as asked for)
    triples: list[tuple[int, int, int]]
    boxes: list[list[float] | None] | None = None


@dataclass
class GraphSpec:
    """A parsed graph file: its objects (class ids) and one or more segments of frames."""

    objects: list[int]
    segments: list[Segment]

    @property
    def is_static(self) -> bool:
        return self.segments[0].end is None

    @property
    def length(self) -> int | None:
        """Frames of a timeline; None for a static graph."""
        return None if self.is_static else self.segments[-1].end

    def frame_graphs(self, num_frames: int | None = None) -> list[SceneGraph]:
        """One SceneGraph per frame. A static graph needs `num_frames`; a timeline has its own length."""
        if self.is_static:
            if num_frames is None:
                raise ValueError("a static graph needs num_frames")
            ranges = [(0, num_frames, self.segments[0])]
        else:
            ranges = [(s.start, s.end, s) for s in self.segments]
        graphs = []
        for start, end, seg in ranges:
            graph = _segment_graph(self.objects, seg)
            graphs.extend([graph] * (end - start))
        return graphs


def _segment_graph(objects: list[int], seg: Segment) -> SceneGraph:
    """A segment's graph; objects whose box is null keep no box (the others keep theirs)."""
    triples = torch.tensor(seg.triples, dtype=torch.long).reshape(-1, 3)
    boxes = mask = None
    if seg.boxes is not None:
        mask = torch.tensor([b is not None for b in seg.boxes], dtype=torch.bool)
        boxes = torch.tensor([b if b is not None else [0.0] * 4 for b in seg.boxes], dtype=torch.float32)
    return SceneGraph(torch.tensor(objects, dtype=torch.long), triples, boxes, mask)


_TOP_KEYS = ("objects", "relations", "boxes", "timeline", "source")
_SEGMENT_KEYS = ("frames", "relations", "boxes")


def _known(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # ints are checked apart: math.isfinite overflows on ints beyond the float range
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


_SHOW_LIMIT = 60


def _show(value: Any) -> str:
    """A value from the file, for a message: JSON-quoted (so a name's line breaks stay escaped), cut short."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):  # not JSON, a huge int, nested too deeply
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


class _Parser:
    def __init__(self, source: str, vocab: Vocab, max_objects: int | None) -> None:
        self.source = source
        self.vocab = vocab
        self.max_objects = max_objects

    def error(self, where: str, problem: str) -> GraphFormatError:
        return GraphFormatError(f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}")

    def parse(self, data: Any) -> GraphSpec:
        if not isinstance(data, dict):
            raise self.error("", f"expected a JSON object with \"objects\" and \"relations\" or \"timeline\", got {type(data).__name__}")
        for key in data:
            if key not in _TOP_KEYS:
                raise self.error("", f"unknown key {_show(key)} (accepted: {', '.join(_TOP_KEYS)})")
        if "objects" not in data:
            raise self.error("objects", "missing (a list of object names is required)")
        names = self.parse_objects(data["objects"])
        objects = [self.vocab.object_id(n) for n in names]
        if "timeline" in data:
            for key in ("relations", "boxes"):
                if key in data:
                    raise self.error(key, "not allowed beside \"timeline\" (put it inside each segment)")
            segments = self.parse_timeline(data["timeline"], names)
        else:
            triples = self.parse_relations(data.get("relations", []), names, "relations")
            boxes = self.parse_boxes(data.get("boxes"), len(names), "boxes")
            segments = [Segment(0, None, triples, boxes)]
        return GraphSpec(objects=objects, segments=segments)  # type: ignore[arg-type]

    def parse_objects(self, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise self.error("objects", f"expected a list of object names, got {type(value).__name__}")
        if not value:
            raise self.error("objects", "empty (a graph needs at least one object)")
        if self.max_objects is not None and len(value) > self.max_objects:
            raise self.error("objects", f"{len(value)} objects, but this model takes at most {self.max_objects}")
        for i, name in enumerate(value):
            if not isinstance(name, str):
                raise self.error(f"objects[{i}]", f"expected an object name (string), got {_show(name)}")
            if self.vocab.object_id(name) is None:
                raise self.error(f"objects[{i}]", f"unknown object {_show(name)} (known: {_known(self.vocab.objects)})")
        return list(value)

    def resolve_end(self, value: Any, names: list[str], where: str) -> int:
        if _is_int(value):
            if not 0 <= value < len(names):
                raise self.error(where, f"object index {_show(value)} out of range (0..{len(names) - 1})")
            return value
        if isinstance(value, str):
            hits = [i for i, n in enumerate(names) if n == value]
            if not hits:
                raise self.error(where, f"{_show(value)} is not among this graph's objects ({_known(names)})")
            if len(hits) > 1:
                raise self.error(where, f"{_show(value)} is ambiguous: it occurs {len(hits)} times in objects (use its index)")
            return hits[0]
        raise self.error(where, f"expected an object index or name, got {_show(value)}")

    def parse_relations(self, value: Any, names: list[str], where: str) -> list[tuple[int, int, int]]:
        if not isinstance(value, list):
            raise self.error(where, f"expected a list of [subject, predicate, object], got {type(value).__name__}")
        triples = []
        for i, rel in enumerate(value):
            here = f"{where}[{i}]"
            if not isinstance(rel, list) or len(rel) != 3:
                raise self.error(here, f"expected [subject, predicate, object], got {_show(rel)}")
            subj = self.resolve_end(rel[0], names, here)
            pred_name = rel[1]
            if not isinstance(pred_name, str):
                raise self.error(here, f"expected a predicate name (string), got {_show(pred_name)}")
            pred = self.vocab.predicate_id(pred_name)
            if pred is None:
                raise self.error(here, f"unknown predicate {_show(pred_name)} (known: {_known(self.vocab.predicates)})")
            obj = self.resolve_end(rel[2], names, here)
            if subj == obj:
                raise self.error(here, f"self-relation: object {subj} (\"{names[subj]}\") related to itself")
            triples.append((subj, pred, obj))
        return triples

    def parse_boxes(self, value: Any, num_objects: int, where: str) -> list[list[float] | None] | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != num_objects:
            raise self.error(where, f"expected a list of {num_objects} boxes (one per object, or null)")
        boxes: list[list[float] | None] = []
        for i, box in enumerate(value):
            if box is None:
                boxes.append(None)
                continue
            ok = isinstance(box, list) and len(box) == 4 and all(_is_number(v) and 0 <= v <= 1 for v in box)
            if not ok or box[0] > box[2] or box[1] > box[3]:
                raise self.error(f"{where}[{i}]", f"expected [x0, y0, x1, y1] in [0, 1] with x0 <= x1, y0 <= y1, or null; got {_show(box)}")
            boxes.append([float(v) for v in box])
        return boxes

    def parse_timeline(self, value: Any, names: list[str]) -> list[Segment]:
        if not isinstance(value, list) or not value:
            raise self.error("timeline", "expected a non-empty list of segments")
        segments = []
        expected_start = 0
        for i, seg in enumerate(value):
            here = f"timeline[{i}]"
            if not isinstance(seg, dict):
                raise self.error(here, f"expected an object with \"frames\" and \"relations\", got {type(seg).__name__}")
            for key in seg:
                if key not in _SEGMENT_KEYS:
                    raise self.error(here, f"unknown key {_show(key)} (accepted: {', '.join(_SEGMENT_KEYS)})")
            frames = seg.get("frames")
            if not (isinstance(frames, list) and len(frames) == 2 and all(_is_int(f) for f in frames)):
                raise self.error(f"{here}.frames", f"expected [start, end) as two integers, got {_show(frames)}")
            start, end = frames
            if start != expected_start:
                kind = "gap" if start > expected_start else "overlap"
                raise self.error(f"{here}.frames", f"{kind}: segment starts at {_show(start)}, expected {expected_start}")
            if end <= start:
                raise self.error(f"{here}.frames", f"empty range [{start}, {_show(end)}): end must be greater than start")
            triples = self.parse_relations(seg.get("relations", []), names, f"{here}.relations")
            boxes = self.parse_boxes(seg.get("boxes"), len(names), f"{here}.boxes")
            segments.append(Segment(start, end, triples, boxes))
            expected_start = end
        return segments


def parse_graph(data: Any, vocab: Vocab, source: str = "graph", max_objects: int | None = None) -> GraphSpec:
    """Check a decoded graph JSON value against the format and `vocab`; GraphFormatError if it fails."""
    return _Parser(source, vocab, max_objects).parse(data)


def load_graph_json(path: str | Path, vocab: Vocab, max_objects: int | None = None) -> GraphSpec:
    """Read and check a graph JSON file. Every problem is one GraphFormatError line naming the file."""
    path = Path(path)
    source = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphFormatError(f"{path}: no such graph file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GraphFormatError(f"{path}: cannot read graph file ({err.__class__.__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GraphFormatError(f"{source}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except ValueError:  # an integer literal past Python's digit limit (int_max_str_digits)
        raise GraphFormatError(f"{source}: not valid JSON (a number with too many digits)") from None
    except RecursionError:
        raise GraphFormatError(f"{source}: not valid JSON (nested too deeply)") from None
    return parse_graph(data, vocab, source, max_objects)


def graphs_to_json(vocab: Vocab, graphs: Sequence[SceneGraph], source: dict | None = None,
                   every_box: bool = False) -> dict:
    """Per-frame graphs of one clip -> graph JSON in timeline form.

    Consecutive frames with the same relations form one segment; a segment's boxes are those of its
    first frame. With `every_box`, frames whose boxes differ start a new segment too, so every frame's boxes
    are written (a sampled layout's motion). All frames must share the same objects (as a clip's do).
    """
    assert graphs, "no frames"
    objs = graphs[0].objs
    assert all(torch.equal(g.objs, objs) for g in graphs), "frames of one clip share their objects"

    def same(a: SceneGraph, b: SceneGraph) -> bool:
        if not a.same_relations(b):
            return False
        if not every_box or a.boxes is None or b.boxes is None:
            return not every_box or (a.boxes is None) == (b.boxes is None)
        return torch.equal(a.boxes, b.boxes) and torch.equal(a.has_box, b.has_box)

    timeline: list[dict] = []
    start = 0
    for t in range(1, len(graphs) + 1):
        if t < len(graphs) and same(graphs[t], graphs[start]):
            continue
        graph = graphs[start]
        seg: dict[str, Any] = {
            "frames": [start, t],
            "relations": [[int(s), vocab.predicates[int(p)], int(o)] for s, p, o in graph.triples.tolist()],
        }
        if graph.boxes is not None:
            seg["boxes"] = [[round(float(v), 6) for v in box] if given else None
                            for box, given in zip(graph.boxes.tolist(), graph.has_box.tolist())]
        timeline.append(seg)
        start = t
    data: dict[str, Any] = {"objects": [vocab.objects[int(i)] for i in objs], "timeline": timeline}
    if source is not None:
        data["source"] = source
    return data


def write_graph_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")



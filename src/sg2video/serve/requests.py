"""What the page may ask the server, checked before anything runs: one-line messages, as sample.py gives them.

Every mistake is a `RequestError` with the one line the page shows and `where`, the field at fault in the
graph JSON's own terms (`objects[2]`, `relations[1]`, `timeline[0].frames`, or a request key such as `frames`),
so the page can put the line next to that field. The graph goes through the graph JSON parser that
`src/sample.py` uses (sg2video.graph_json), so the page refuses exactly what the command line refuses, with the
same words; the length rules (a static graph's `frames`, a timeline's own length, `max_frames`, what chunked
generation can make) are sample.py's too.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sg2video.diffusion.samplers import SAMPLER_NAMES
from sg2video.errors import UserError
from sg2video.graph_json import GraphFormatError, GraphSpec, parse_graph
from sg2video.graphs import Vocab
from sg2video.layout import LAYOUT_SOURCES

MAX_SEED = 2**31 - 1  # a seed the page's JavaScript numbers hold exactly
MAX_GUIDANCE = 100.0
REQUEST_KEYS = ("graph", "frames", "num", "seed", "sampler", "steps", "eta", "guidance", "layout")
# "graph: <where>: <problem>" from sg2video.graph_json: the field at fault, in the file's own terms
_WHERE = re.compile(r"^graph: ((?:objects|relations|boxes|timeline)(?:\[\d+\])?(?:\.(?:frames|relations|boxes))?"
                    r"(?:\[\d+\])?): ")


class RequestError(UserError):
    """A request the server refuses: `status` (HTTP), the one-line message, and the field at fault."""

    def __init__(self, message: str, where: str = "", status: int = 400) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever a name in it held
        self.where = where
        self.status = status


@dataclass(frozen=True)
class Limits:
    """The bounds of one request (conf/serve.yaml) and what the checkpoint can make."""

    max_frames: int
    max_num: int
    max_steps: int
    max_bytes: int
    max_objects: int | None
    clip_frames: int
    prefix_frames: int
    chunked: bool


@dataclass(frozen=True)
class Settings:
    """A request's sampling settings (the page's defaults come from conf/serve.yaml)."""

    num: int
    seed: int
    sampler: str
    steps: int
    eta: float
    guidance: float
    layout: str


@dataclass
class GenerateRequest:
    spec: GraphSpec
    graph: Any  # the graph JSON as sent (echoed back beside its videos, for the side-by-side comparison)
    frames: int
    settings: Settings

    @property
    def segments(self) -> list[tuple[int, int]]:
        """Frame ranges of the graph's segments (a static graph: one, all frames)."""
        if self.spec.is_static:
            return [(0, self.frames)]
        return [(s.start, int(s.end)) for s in self.spec.segments]  # type: ignore[arg-type]


def decode_json(body: bytes, what: str = "request") -> Any:
    """Bytes -> a JSON value, with graph_json's words for what is not JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(f"{what}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise RequestError(f"{what}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except ValueError:  # an integer literal past Python's digit limit
        raise RequestError(f"{what}: not valid JSON (a number with too many digits)") from None
    except RecursionError:
        raise RequestError(f"{what}: not valid JSON (nested too deeply)") from None


def check_graph(value: Any, vocab: Vocab, max_objects: int | None, source: str = "graph") -> GraphSpec:
    """The graph JSON parser of sample.py; its message becomes a RequestError naming the field at fault."""
    try:
        return parse_graph(value, vocab, source, max_objects)
    except GraphFormatError as err:
        text = str(err)
        found = _WHERE.match(text) if source == "graph" else None
        raise RequestError(text, found.group(1) if found else "graph") from None


def _object(data: Any, what: str) -> dict:
    if not isinstance(data, dict):
        raise RequestError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _int(data: dict, key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{key}: expected an integer from {low} to {high}, got {json.dumps(value)[:40]}", key)
    return value


def _float(data: dict, key: str, default: float, low: float, high: float) -> float:
    value = data.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{key}: expected a number from {low:g} to {high:g}, got {json.dumps(value)[:40]}", key)
    return float(value)


def _name(data: dict, key: str, default: str, accepted: tuple[str, ...]) -> str:
    value = data.get(key, default)
    if value is None:
        value = default
    if value not in accepted:
        raise RequestError(f"{key}: {json.dumps(value)[:40]} is not accepted (accepted: {', '.join(accepted)})", key)
    return value


def video_length(spec: GraphSpec, frames: Any, limits: Limits) -> int:
    """sample.py's rules for a video's length: a static graph is `frames` long (default: the model's clip), a
    timeline its own length; at most `max_frames`; and what a chunked model can continue."""
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise RequestError(f"frames: expected a positive integer, got {json.dumps(frames)[:40]}", "frames")
    if spec.is_static:
        length = int(frames or limits.clip_frames)
    else:
        length = int(spec.length)  # type: ignore[arg-type]
        if frames is not None and frames != length:
            raise RequestError(f"frames={frames} but the graph's timeline is {length} frames long (leave frames empty)",
                               "frames")
    if length > limits.max_frames:
        raise RequestError(f"{length} frames asked for; at most max_frames={limits.max_frames}",
                           "frames" if spec.is_static else f"timeline[{len(spec.segments) - 1}].frames")
    if limits.chunked:
        from sg2video.diffusion import plan_chunks

        try:
            plan_chunks(length, limits.clip_frames, limits.prefix_frames)
        except UserError as err:
            raise RequestError(str(err), "frames") from None
    return length


def parse_generate(data: Any, vocab: Vocab, limits: Limits, defaults: Settings) -> GenerateRequest:
    """A decoded /api/generate (or /api/check) body -> a GenerateRequest; RequestError on the first mistake."""
    data = _object(data, "request")
    for key in data:
        if key not in REQUEST_KEYS:
            raise RequestError(f"request: unknown key {json.dumps(key)[:40]} (accepted: {', '.join(REQUEST_KEYS)})")
    if "graph" not in data:
        raise RequestError("request: no graph (send {\"graph\": {...}})", "graph")
    spec = check_graph(data["graph"], vocab, limits.max_objects)
    frames = video_length(spec, data.get("frames"), limits)
    settings = Settings(
        num=_int(data, "num", defaults.num, 1, limits.max_num),
        seed=_int(data, "seed", defaults.seed, 0, MAX_SEED),
        sampler=_name(data, "sampler", defaults.sampler, tuple(SAMPLER_NAMES)),
        steps=_int(data, "steps", defaults.steps, 1, limits.max_steps),
        eta=_float(data, "eta", defaults.eta, 0.0, 1.0),
        guidance=_float(data, "guidance", defaults.guidance, 0.0, MAX_GUIDANCE),
        layout=_name(data, "layout", defaults.layout, tuple(LAYOUT_SOURCES)),
    )
    return GenerateRequest(spec, data["graph"], frames, settings)


def parse_file(data: Any, vocab: Vocab, max_objects: int | None) -> dict:
    """A /api/parse body, {"name": file name, "text": its text} -> the graph in the editor's form. The name is
    only a label for messages: nothing of it reaches the filesystem."""
    data = _object(data, "request")
    name, text = data.get("name", "graph.json"), data.get("text")
    if not isinstance(name, str) or not isinstance(text, str):
        raise RequestError("request: expected {\"name\": file name, \"text\": its text}")
    label = "".join(c for c in name if c.isprintable())[-60:] or "graph.json"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"{label}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", "file") from None
    except (ValueError, RecursionError):
        raise RequestError(f"{label}: not valid JSON (a number with too many digits, or nested too deeply)", "file") from None
    try:
        spec = parse_graph(value, vocab, label, max_objects)
    except GraphFormatError as err:
        raise RequestError(str(err), "file") from None
    return editor_form(spec, vocab)


def editor_form(spec: GraphSpec, vocab: Vocab) -> dict:
    """A parsed graph as the editor holds it: object names, and segments whose relations name their predicate and
    point at objects by index (so a name that occurs twice stays unambiguous)."""
    segments = [{"frames": None if spec.is_static else [s.start, s.end],
                 "relations": [[a, vocab.predicates[p], b] for a, p, b in s.triples],
                 "boxes": s.boxes} for s in spec.segments]
    return {"objects": [vocab.objects[i] for i in spec.objects], "static": spec.is_static, "segments": segments}

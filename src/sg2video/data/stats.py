"""Graph statistics of a dataset split: the table researchers drew by hand to see why an encoder does not align.

`split_stats(label, clips, vocab, max_tokens)` takes a split's clips as per-frame graph lists. A clip's graph
is counted once per *relation segment* (a run of frames with the same objects and triples,
`sg2video.graphs.relation_segments`), so a static 8-frame clip adds one graph, not eight copies of it. Over
those graphs:

- `clips`, `frames`, `graphs` (segments), `nodes` (objects), `edges` (triples);
- `mean_degree`: edges touching a node, averaged over nodes (2 E / N; a self-loop counts twice);
- `isolated_nodes`: nodes no triple touches; `missing_boxes`: objects without a box (the attribute a layout
  needs; datasets without boxes at all count every object);
- `outlier_nodes`: nodes whose degree is above Q3 + 1.5 IQR of all nodes' degrees (Tukey's rule; the
  threshold is `outlier_degree_above`);
- `object_classes` / `predicates` (vocabulary sizes) and how many of them the split uses;
- `triples_per_graph_mean` / `_median` / `_max`;
- `relation_changes_per_clip`: segments per clip minus one (0 for images);
- `token_truncated_share`: share of graphs with more local tokens (one per triple, then one per object) than
  the encoder's `max_tokens`: their last objects lose their token;
- duplicate graphs, which cap graph -> video retrieval (`sg2video.eval.retrieval`): `distinct_graphs`, the
  distinct graphs among the segments (`sg2video.graphs.canonical_key`: same multisets of object classes and of
  (subject class, predicate, object class) triples, boxes aside); `distinct_clip_graphs`, the distinct clip
  graphs (per-frame graph sequences, `clip_key`, the unit clip retrieval compares); and
  `graph_repeat_share_gallery100`, the share of clips whose clip graph another clip of the same gallery also
  has, over the seeded disjoint galleries of 100 clips the encoder's retrieval draws (`gallery_indices`, seed
  0; one gallery of all clips when there are fewer, its size in `repeat_gallery_size`);
- `heldout_share` (the shapes world only, else NaN): the share of clips holding, in any frame, a triple or a
  class pair that `data.holdout=compositional` keeps out of training (sg2video.data.shapes_holdout): 0 for its
  train split, 0.5 for its val and test, what chance gives under `data.holdout=none`.

Histograms (counts by name): object classes, predicates and node degrees, drawn by `plot_histograms`.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sg2video.eval.retrieval import same_graph_counts
from sg2video.graphs import SceneGraph, Vocab, canonical_key, clip_key, relation_segments

REPEAT_GALLERY = 100  # clips per gallery of `graph_repeat_share_gallery100` (the key names the size)

ROWS = (
    ("clips", "clips"), ("frames", "frames"), ("graphs (relation segments)", "graphs"), ("nodes", "nodes"),
    ("edges (triples)", "edges"), ("mean degree", "mean_degree"), ("isolated nodes", "isolated_nodes"),
    ("isolated share", "isolated_share"), ("objects without a box", "missing_boxes"),
    ("outlier nodes (degree > Q3 + 1.5 IQR)", "outlier_nodes"), ("outlier degree above", "outlier_degree_above"),
    ("object classes (vocabulary)", "object_classes"), ("object classes used", "object_classes_used"),
    ("predicates (vocabulary)", "predicates"), ("predicates used", "predicates_used"),
    ("triples per graph, mean", "triples_per_graph_mean"), ("triples per graph, median", "triples_per_graph_median"),
    ("triples per graph, max", "triples_per_graph_max"), ("relation changes per clip", "relation_changes_per_clip"),
    ("graphs truncated by the token cap", "token_truncated_share"), ("token cap (encoder.max_tokens)", "max_tokens"),
    ("distinct graphs (relation segments)", "distinct_graphs"),
    ("distinct clip graphs (per-frame graph sequences)", "distinct_clip_graphs"),
    (f"clips whose graph repeats in a gallery of {REPEAT_GALLERY}", f"graph_repeat_share_gallery{REPEAT_GALLERY}"),
    ("repeat gallery size (clips)", "repeat_gallery_size"),
    ("clips holding a held-out combination (shapes)", "heldout_share"),
)


@dataclass
class SplitStats:
    label: str  # e.g. "shapes/val"
    values: dict[str, float | int]
    classes: Counter = field(default_factory=Counter)  # object class name -> nodes
    predicates: Counter = field(default_factory=Counter)  # predicate name -> edges
    degrees: Counter = field(default_factory=Counter)  # degree -> nodes

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "values": self.values, "classes": dict(self.classes),
                "predicates": dict(self.predicates), "degrees": {str(k): v for k, v in sorted(self.degrees.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitStats":
        return cls(data["label"], data["values"], Counter(data.get("classes", {})), Counter(data.get("predicates", {})),
                   Counter({int(k): v for k, v in data.get("degrees", {}).items()}))


def node_degrees(graph: SceneGraph) -> np.ndarray:
    """(O,) int: triples touching each object (as subject or object)."""
    triples = graph.triples.numpy()
    return (np.bincount(triples[:, 0], minlength=graph.num_objects)
            + np.bincount(triples[:, 2], minlength=graph.num_objects)).astype(np.int64)


def tukey_upper_fence(values: np.ndarray) -> float:
    """Q3 + 1.5 IQR (NaN for no values)."""
    if values.size == 0:
        return math.nan
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 + 1.5 * (q3 - q1))


def split_stats(label: str, clips: Iterable[Sequence[SceneGraph]], vocab: Vocab, max_tokens: int) -> SplitStats:
    """Statistics of one split's clips (per-frame graph lists); see the module docstring for every figure."""
    num_clips = frames = changes = 0
    graphs: list[SceneGraph] = []
    clip_keys: list[tuple] = []
    holdout, held_out = _shapes_holdout(vocab), 0
    for clip in clips:
        segments = relation_segments(clip)
        clip_keys.append(clip_key(clip))
        held_out += holdout is not None and holdout.clip_is_unseen(clip)
        num_clips += 1
        frames += len(clip)
        changes += len(segments) - 1
        graphs.extend(clip[start] for start, _ in segments)
    degrees = np.concatenate([node_degrees(g) for g in graphs]) if graphs else np.zeros(0, dtype=np.int64)
    triples = np.array([g.num_triples for g in graphs], dtype=np.int64)
    nodes, edges = int(degrees.size), int(triples.sum()) if graphs else 0
    fence = tukey_upper_fence(degrees)
    classes = Counter(vocab.objects[int(o)] for g in graphs for o in g.objs.tolist())
    predicates = Counter(vocab.predicates[int(p)] for g in graphs for p in g.triples[:, 1].tolist())
    tokens = np.array([g.num_triples + g.num_objects for g in graphs], dtype=np.int64)
    same = same_graph_counts(clip_keys, REPEAT_GALLERY) if num_clips else None  # (galleries, size)
    values: dict[str, float | int] = {
        "clips": num_clips, "frames": frames, "graphs": len(graphs), "nodes": nodes, "edges": edges,
        "mean_degree": float(degrees.mean()) if nodes else math.nan,
        "isolated_nodes": int((degrees == 0).sum()),
        "isolated_share": float((degrees == 0).mean()) if nodes else math.nan,
        "missing_boxes": int(sum(int((~g.has_box).sum()) for g in graphs)),
        "outlier_nodes": int((degrees > fence).sum()) if nodes else 0,
        "outlier_degree_above": fence,
        "object_classes": vocab.num_objects, "object_classes_used": len(classes),
        "predicates": vocab.num_predicates, "predicates_used": len(predicates),
        "triples_per_graph_mean": float(triples.mean()) if graphs else math.nan,
        "triples_per_graph_median": float(np.median(triples)) if graphs else math.nan,
        "triples_per_graph_max": int(triples.max()) if graphs else 0,
        "relation_changes_per_clip": changes / num_clips if num_clips else math.nan,
        "token_truncated_share": float((tokens > max_tokens).mean()) if graphs else math.nan,
        "max_tokens": int(max_tokens),
        "distinct_graphs": len({canonical_key(g) for g in graphs}),
        "distinct_clip_graphs": len(set(clip_keys)),
        f"graph_repeat_share_gallery{REPEAT_GALLERY}": float((same > 1).double().mean()) if num_clips else math.nan,
        "repeat_gallery_size": int(same.shape[1]) if num_clips else 0,
        "heldout_share": held_out / num_clips if holdout is not None and num_clips else math.nan,
    }
    return SplitStats(label, values, classes, predicates, Counter(degrees.tolist()))


def _shapes_holdout(vocab: Vocab):
    """The compositional split's held-out set when `vocab` is the shapes world's, else None."""
    from sg2video.data.shapes import shapes_vocab
    from sg2video.data.shapes_holdout import Holdout

    return Holdout.from_vocab(vocab) if vocab == shapes_vocab() else None


# -- writing -----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else (f"{value:.0f}" if value.is_integer() and abs(value) >= 10
                                                        else f"{value:.3f}")
    return str(value)


def markdown_table(stats: Sequence[SplitStats]) -> str:
    """One row per figure, one column per split (side by side when there are several)."""
    head = "| figure | " + " | ".join(s.label for s in stats) + " |\n|---|" + "---|" * len(stats) + "\n"
    rows = [f"| {name} | " + " | ".join(_cell(s.values.get(key)) for s in stats) + " |" for name, key in ROWS]
    return head + "\n".join(rows) + "\n"


def csv_text(stats: Sequence[SplitStats]) -> str:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(["figure", *[s.label for s in stats]])
    for _, key in ROWS:
        out.writerow([key, *[s.values.get(key) for s in stats]])
    return buffer.getvalue()


def json_text(stats: Sequence[SplitStats]) -> str:
    def safe(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    data = [{**s.to_dict(), "values": {k: safe(v) for k, v in s.values.items()}} for s in stats]
    return json.dumps({"splits": data}, indent=1, sort_keys=True) + "\n"


def read_stats_json(path: str | Path) -> list[SplitStats]:
    """The splits of an earlier `stats.json` (a file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "stats.json"
    data = json.loads(path.read_text())
    return [SplitStats.from_dict({**s, "values": {k: (math.nan if v is None else v) for k, v in s["values"].items()}})
            for s in data["splits"]]


def plot_histograms(stats: SplitStats, top: int = 30):
    """A figure of three histograms: object classes (the `top` most common), predicates, node degrees."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    for ax, (title, counter) in zip(axes[:2], (("object classes", stats.classes), ("predicates", stats.predicates))):
        common = counter.most_common(top)
        ax.bar(range(len(common)), [c for _, c in common])
        ax.set_xticks(range(len(common)), [n for n, _ in common], rotation=75, fontsize=7)
        shown = f" ({len(common)} most common of {len(counter)})" if len(counter) > len(common) else ""
        ax.set_title(f"{title}{shown}")
    degrees = sorted(stats.degrees)
    axes[2].bar(degrees, [stats.degrees[d] for d in degrees])
    fence = stats.values.get("outlier_degree_above")
    if isinstance(fence, float) and math.isfinite(fence):
        axes[2].axvline(fence, color="red", linestyle="--", label=f"outliers above {fence:.1f}")
        axes[2].legend(fontsize=7)
    axes[2].set_title("node degree")
    axes[2].set_xlabel("triples touching the node")
    fig.suptitle(stats.label)
    fig.tight_layout()
    return fig

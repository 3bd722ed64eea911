"""Embedding maps of a pretrained encoder: graph and video vectors of held-out clips, projected to 2-D.

`embed_sets(model, vocab, sets)` embeds each (label, dataset, split) set's first clips with the encoder of an
encoder-stage checkpoint: every clip's graph vector (its frame graphs' vectors averaged, as retrieval does) and
its video vector. A dataset with another vocabulary is mapped into the encoder's by class and predicate name;
objects it does not know are left out (with the triples that touch them) and counted, and a clip with no known
object in any frame keeps only its video point. `pca_2d` projects all points of all sets together (one map);
`pair_distances` compares each matched (graph, video) pair with random pairs, in the full space (cosine) and in
the map; `write_maps` draws one PNG per view (modality, dataset, split, and optionally clips that hold a chosen
object class) and a small HTML page with the figures beside them.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sg2video.graphs import SceneGraph, Vocab


@dataclass
class EmbeddedSet:
    label: str  # "<config key>: <dataset>" e.g. "data: shapes"
    split: str
    graph: torch.Tensor  # (N, D) unit vectors of clips whose graphs the encoder could read
    video: torch.Tensor  # (M, D) unit vectors of every clip
    paired: torch.Tensor  # (N,) long: the video row of each graph row
    class_names: list[set[str]] = field(default_factory=list)  # per video row: object classes in the clip
    dropped_objects: int = 0
    objects: int = 0


def map_graph(graph: SceneGraph, names: Vocab, into: Vocab) -> tuple[SceneGraph | None, int]:
    """`graph` (classes of `names`) in the vocabulary `into`, by name; unknown objects and predicates (and the
    triples that touch them) left out. Returns (graph or None when no object is known, objects left out)."""
    obj_index = {name: i for i, name in enumerate(into.objects)}
    pred_index = {name: i for i, name in enumerate(into.predicates)}
    keep, new_ids = [], {}
    for i, cls in enumerate(graph.objs.tolist()):
        name = names.objects[cls]
        if name in obj_index:
            new_ids[i] = len(keep)
            keep.append(obj_index[name])
    dropped = graph.num_objects - len(keep)
    if not keep:
        return None, dropped
    triples = [[new_ids[s], pred_index[names.predicates[p]], new_ids[o]] for s, p, o in graph.triples.tolist()
               if s in new_ids and o in new_ids and names.predicates[p] in pred_index]
    return SceneGraph(torch.tensor(keep), torch.tensor(triples, dtype=torch.long).reshape(-1, 3)), dropped


@torch.inference_mode()
def embed_set(model, vocab: Vocab, label: str, split: str, dataset, num: int, batch_size: int = 32,
              device: str | torch.device = "cpu") -> EmbeddedSet:
    from sg2video.data.clips import collate_clips
    from sg2video.graphs import GraphBatch

    model.eval()
    graphs_out, videos_out, paired, classes = [], [], [], []
    dropped = objects = 0
    num = min(num, len(dataset))
    same_vocab = dataset.vocab.objects == vocab.objects and dataset.vocab.predicates == vocab.predicates
    for start in range(0, num, batch_size):
        items = dataset.__getitems__(list(range(start, min(num, start + batch_size))))
        batch = collate_clips(items).to(device)
        _, clip_vecs = model.embed_videos(batch.video)
        for row, item in enumerate(items):
            frames = item["graphs"]
            classes.append({dataset.vocab.objects[int(o)] for g in frames for o in g.objs.tolist()})
            objects += sum(g.num_objects for g in frames)
            mapped = []
            for g in frames:
                if same_vocab:
                    mapped.append(g.without_boxes())
                    continue
                new, lost = map_graph(g, dataset.vocab, vocab)
                dropped += lost
                mapped.append(new)
            index = start + row
            if all(g is not None for g in mapped) and mapped:
                vec = model.embed_clip_graphs(GraphBatch.pack(mapped).to(device), len(mapped))
                graphs_out.append(vec.cpu())
                paired.append(index)
        videos_out.append(clip_vecs.cpu())
    dim = videos_out[0].shape[1] if videos_out else 1
    graph = torch.cat(graphs_out) if graphs_out else torch.zeros(0, dim)
    return EmbeddedSet(label, split, graph, torch.cat(videos_out) if videos_out else torch.zeros(0, dim),
                       torch.tensor(paired, dtype=torch.long), classes, dropped, objects)


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, D) -> (N, 2) on the two principal axes of the centred points, and the variance share of each."""
    centred = points.double() - points.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = (s**2) / (s**2).sum().clamp(min=1e-12)
    return (centred @ vh[:2].T).float(), [float(v) for v in variance[:2]]


def pair_distances(graph: torch.Tensor, video: torch.Tensor, graph_2d: torch.Tensor, video_2d: torch.Tensor,
                   seed: int = 0) -> dict[str, float]:
    """Matched pairs (row i with row i) against random pairs (row i with a shuffled row): mean cosine distance in
    the encoder's space and mean Euclidean distance in the 2-D map, and the share of graphs whose own video is
    nearer than its random partner (in the map)."""
    n = graph.shape[0]
    if n < 2:
        return {"pairs": float(n)}
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    perm = torch.where(perm == torch.arange(n), (perm + 1) % n, perm)  # never a clip with itself
    cos = lambda a, b: 1 - (a * b).sum(-1)  # noqa: E731 - unit vectors
    matched_2d = (graph_2d - video_2d).norm(dim=-1)
    random_2d = (graph_2d - video_2d[perm]).norm(dim=-1)
    return {"pairs": float(n),
            "matched_cosine_distance": float(cos(graph, video).mean()),
            "random_cosine_distance": float(cos(graph, video[perm]).mean()),
            "matched_map_distance": float(matched_2d.mean()), "random_map_distance": float(random_2d.mean()),
            "matched_nearer_share": float((matched_2d < random_2d).float().mean())}


@dataclass
class MapResult:
    sets: list[EmbeddedSet]
    graph_2d: list[torch.Tensor]
    video_2d: list[torch.Tensor]
    variance: list[float]
    figures: dict[str, dict[str, float]]  # per set label/split: distances and retrieval


def build_map(sets: Sequence[EmbeddedSet], gallery: int = 100) -> MapResult:
    from sg2video.eval.retrieval import retrieval_accuracy

    every = torch.cat([torch.cat([s.graph, s.video]) for s in sets])
    projected, variance = pca_2d(every)
    graph_2d, video_2d, figures, at = [], [], {}, 0
    for s in sets:
        g, v = projected[at: at + len(s.graph)], projected[at + len(s.graph): at + len(s.graph) + len(s.video)]
        at += len(s.graph) + len(s.video)
        graph_2d.append(g)
        video_2d.append(v)
        matched_video, matched_video_2d = s.video[s.paired], v[s.paired]
        row = pair_distances(s.graph, matched_video, g, matched_video_2d)
        if len(s.graph) >= 2:
            row.update(retrieval_accuracy(s.graph, matched_video, gallery=gallery))
        row["objects_outside_vocabulary"] = float(s.dropped_objects) / max(1, s.objects)
        figures[f"{s.label} / {s.split}"] = row
    return MapResult(list(sets), graph_2d, video_2d, variance, figures)


def _scatter(result: MapResult, view: str, highlight: str | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"])
    groups: dict[str, list[tuple[torch.Tensor, str]]] = {}
    for s, g, v in zip(result.sets, result.graph_2d, result.video_2d):
        for points, modality, marker in ((g, "graph", "o"), (v, "video", "^")):
            if view == "modality":
                key = modality
            elif view == "dataset":
                key = s.label
            elif view == "split":
                key = s.split
            else:  # class: clips holding the class against the rest
                rows = s.paired.tolist() if modality == "graph" else list(range(len(points)))
                holds = torch.tensor([highlight in s.class_names[r] for r in rows], dtype=torch.bool)
                if len(points):
                    groups.setdefault(f"holds {highlight!r} ({modality})", []).append((points[holds], marker))
                    groups.setdefault(f"other clips ({modality})", []).append((points[~holds], marker))
                continue
            groups.setdefault(key, []).append((points, marker))
    for key, parts in groups.items():
        colour = next(colours, "gray")
        for points, marker in parts:
            if len(points):
                ax.scatter(points[:, 0], points[:, 1], s=10, alpha=0.6, c=colour, marker=marker,
                           label=key if points is parts[0][0] else None)
    ax.set_xlabel(f"PC 1 ({result.variance[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({result.variance[1]:.0%} of variance)" if len(result.variance) > 1 else "PC 2")
    ax.set_title(f"coloured by {view}" + ("  (o graph, ^ video)" if view != "modality" else ""))
    ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return fig


def write_maps(result: MapResult, out: Path, title: str, highlight: str | None = None) -> list[Path]:
    """One PNG per view + `figures.json` + `index.html` (the views and the figures table) into `out`."""
    import json

    from sg2video.eval.report import _png_uri, html_page
    from sg2video.video_io import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    views = ["modality", "dataset", "split"] + (["class"] if highlight else [])
    written, images = [], []
    for view in views:
        fig = _scatter(result, view, highlight)
        path = out / f"map_{view}.png"
        written.append(write_atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=80)))
        images.append(f'<figure><img src="{_png_uri(fig)}" alt="map by {view}"><figcaption>{view}</figcaption></figure>')
    safe = {k: {n: (None if isinstance(x, float) and not math.isfinite(x) else x) for n, x in v.items()}
            for k, v in result.figures.items()}
    written.append(write_atomic(out / "figures.json",
                                lambda tmp: tmp.write_text(json.dumps(safe, indent=1, sort_keys=True) + "\n")))
    keys = sorted({k for row in result.figures.values() for k in row})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    rows = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(
        f"<td>{row[k]:.3f}</td>" if isinstance(row.get(k), float) and math.isfinite(row[k]) else "<td>n/a</td>"
        for k in keys) + "</tr>" for name, row in result.figures.items())
    body = (f"<h1>{html.escape(title)}</h1><p class=\"note\">PCA of every graph and video vector together. "
            "Matched pairs nearer than random pairs, and retrieval above chance, mean the encoder aligns the two "
            f"modalities on that set.</p><table><tr><th>set</th>{head}</tr>{rows}</table>" + "".join(images))
    page = html_page(title, body)
    written.append(write_atomic(out / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8")))
    return written


def summary_lines(result: MapResult) -> list[str]:
    lines = []
    for name, row in result.figures.items():
        parts = [f"{name}: {int(row.get('pairs', 0))} graph/video pairs"]
        if "matched_map_distance" in row:
            parts.append(f"map distance matched {row['matched_map_distance']:.3f} vs random "
                         f"{row['random_map_distance']:.3f}")
        if "g2v_top1" in row:
            parts.append(f"g2v top-1 {row['g2v_top1']:.3f}, v2g top-1 {row['v2g_top1']:.3f}")
        if row.get("objects_outside_vocabulary"):
            parts.append(f"{row['objects_outside_vocabulary']:.0%} of objects outside the encoder's vocabulary")
        lines.append("; ".join(parts))
    return lines


__all__: Any = ["EmbeddedSet", "MapResult", "build_map", "embed_set", "map_graph", "pair_distances", "pca_2d",
                "summary_lines", "write_maps"]

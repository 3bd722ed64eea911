"""Pictures of scene graphs, for people: one graph, a clip's timeline, boxes drawn on frames.

Figures are built with `matplotlib.figure.Figure` (no pyplot, so no global state and no display
needed; PNGs are rendered by Agg) and written atomically. Nodes are coloured by the shapes-world
colour their name starts with ("red circle" -> red), other names are grey.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sg2video.data.shapes import COLOURS
from sg2video.graph_json import graphs_to_json
from sg2video.graphs import SceneGraph, Vocab
from sg2video.video_io import write_atomic

__all__ = ["draw_graph", "draw_timeline", "frames_with_boxes", "name_colour"]

_COLOUR_BY_NAME = dict(COLOURS)
_GREY = (160, 160, 160)
_MAX_PANELS = 12  # timeline panels drawn; the rest are counted in the title


def name_colour(name: str) -> tuple[int, int, int]:
    """RGB of the palette colour `name` starts with ("red circle" -> (255, 0, 0)); grey otherwise."""
    first = name.split(" ", 1)[0].lower() if name else ""
    return _COLOUR_BY_NAME.get(first, _GREY)


def _rgb01(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _text_colour(rgb: tuple[int, int, int]) -> str:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return "black" if luminance > 110 else "white"


def _draw_graph_on(ax: Axes, vocab: Vocab, graph: SceneGraph) -> None:
    """Nodes on a circle (index: name), one curved labelled arrow per (subject, object) pair."""
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.3, 1.3)
    num = graph.num_objects
    if num == 0:
        ax.text(0, 0, "(no objects)", ha="center", va="center", color="grey")
        return
    angles = np.pi / 2 - 2 * np.pi * np.arange(num) / num  # first node on top, clockwise
    xy = np.stack([np.cos(angles), np.sin(angles)], axis=1) if num > 1 else np.zeros((1, 2))
    node_font = 10 if num <= 8 else max(5, 10 - (num - 8) // 4)
    edge_font = max(4, node_font - 2)
    shrink = 2.2 * node_font  # points kept clear around a node's centre

    # several predicates on one ordered pair share an arrow: their names are joined
    labels: dict[tuple[int, int], list[str]] = defaultdict(list)
    for s, p, o in graph.triples.tolist():
        labels[(s, o)].append(vocab.predicates[p])
    for (s, o), names in labels.items():
        start, end = xy[s], xy[o]
        rad = 0.15  # arc3 bends to one side, so the arrows of (s, o) and (o, s) do not overlap
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops=dict(
                arrowstyle="-|>",
                color="0.35",
                lw=0.8,
                shrinkA=shrink,
                shrinkB=shrink,
                connectionstyle=f"arc3,rad={rad}",
            ),
        )
        # the quadratic Bezier of arc3 passes its middle at midpoint + rad/2 * (dy, -dx)
        d = end - start
        mid = (start + end) / 2 + rad / 2 * np.array([d[1], -d[0]])
        ax.text(
            mid[0], mid[1], ", ".join(names), ha="center", va="center", fontsize=edge_font,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
        )
    for i in range(num):
        name = vocab.objects[int(graph.objs[i])]
        rgb = name_colour(name)
        ax.text(
            xy[i, 0], xy[i, 1], f"{i}: {name}", ha="center", va="center", fontsize=node_font,
            color=_text_colour(rgb), zorder=3,
            bbox=dict(boxstyle="round,pad=0.3", fc=_rgb01(rgb), ec="black", lw=0.6),
        )


def _save(fig: Figure, path: str | Path) -> Path:
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.05, hspace=0.15)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _image_panel(ax: Axes, frame: np.ndarray, title: str) -> None:
    ax.imshow(frame, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_graph(
    vocab: Vocab,
    graph: SceneGraph,
    path: str | Path,
    title: str | None = None,
    frame: np.ndarray | None = None,
) -> Path:
    """PNG picture of one scene graph; `frame` (H, W, 3) uint8, when given, is shown beside it."""
    side = 5.0 if graph.num_objects <= 8 else min(12.0, 5.0 + 0.25 * graph.num_objects)
    panels = 1 if frame is None else 2
    fig = Figure(figsize=(side * panels, side))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if frame is not None:
        _image_panel(axes[0], frame, "frame")
    _draw_graph_on(axes[-1], vocab, graph)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def draw_timeline(
    vocab: Vocab,
    graphs: Sequence[SceneGraph],
    path: str | Path,
    title: str | None = None,
    frame: np.ndarray | None = None,
    frame_title: str = "frame 0",
) -> Path:
    """PNG with one graph panel per segment of frames whose relations stay the same.

    Segments are those of the clip's graph JSON (`graphs_to_json`), titled with their half-open frame
    range; at most 12 are drawn and the title says how many more there are. `frame` (H, W, 3) uint8,
    when given, is shown in a first panel.
    """
    assert graphs, "no frames"
    segments = [seg["frames"] for seg in graphs_to_json(vocab, graphs)["timeline"]]
    shown = segments[:_MAX_PANELS]
    panels = len(shown) + (frame is not None)
    cols = min(panels, 4)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.0 * cols, 4.0 * rows + 0.4))
    axes = list(fig.subplots(rows, cols, squeeze=False).reshape(-1))
    if frame is not None:
        _image_panel(axes.pop(0), frame, frame_title)
    for ax, (start, end) in zip(axes, shown):
        _draw_graph_on(ax, vocab, graphs[start])
        ax.set_title(f"frames [{start}, {end})", fontsize=9)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    heading = title or f"{len(graphs)} frames, {len(segments)} segment{'s' if len(segments) != 1 else ''}"
    if len(segments) > len(shown):
        heading += f" ({len(segments) - len(shown)} more segments not drawn)"
    fig.suptitle(heading)
    return _save(fig, path)


def frames_with_boxes(
    frames: np.ndarray,
    graph: SceneGraph | Sequence[SceneGraph],
    vocab: Vocab,
) -> np.ndarray:
    """Copy of uint8 (T, H, W, 3) `frames` with each object's box outlined.

    `graph` is one SceneGraph for every frame or one per frame. A box `(x0, y0, x1, y1)` covers pixel
    columns `round(x0 * W) .. round(x1 * W) - 1` (rows alike); its outline is drawn one pixel outside
    that range, so it never covers the object, in the object's colour at half intensity (grey for
    names without a palette colour). Graphs without boxes leave their frame unchanged.
    """
    out = np.array(frames, dtype=np.uint8, copy=True)
    assert out.ndim == 4 and out.shape[-1] == 3, f"frames must be (T, H, W, 3), got {out.shape}"
    T, H, W, _ = out.shape
    per_frame = [graph] * T if isinstance(graph, SceneGraph) else list(graph)
    assert len(per_frame) == T, f"{len(per_frame)} graphs for {T} frames"
    for t, g in enumerate(per_frame):
        if g.boxes is None:
            continue
        for obj, box, given in zip(g.objs.tolist(), g.boxes.tolist(), g.has_box.tolist()):
            if not given:
                continue
            colour = np.array(name_colour(vocab.objects[obj]), dtype=np.uint8) // 2
            left, top = round(box[0] * W) - 1, round(box[1] * H) - 1
            right, bottom = round(box[2] * W), round(box[3] * H)  # one past the box
            rows = slice(max(top, 0), min(bottom, H - 1) + 1)
            cols = slice(max(left, 0), min(right, W - 1) + 1)
            for x in (left, right):
                if 0 <= x < W:
                    out[t, rows, x] = colour
            for y in (top, bottom):
                if 0 <= y < H:
                    out[t, y, cols] = colour
    return out

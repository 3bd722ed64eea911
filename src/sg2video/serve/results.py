"""What the page shows of one generated sample, and the files it can download.

- the frames as one PNG sheet (a grid, `cols` frames a row, at the model's size): the page's player draws frame
  t of it on a canvas, so every frame is shown exactly once per loop (a GIF merges equal consecutive frames, and
  a <video> of a 4-frame MP4 cannot be stepped reliably), and the sampled layout is drawn over it;
- the sampled layout: every object's box in every frame (what the layout model drew where the graph gave none);
- GIF, MP4 (sg2video.video_io, as sample.py writes them) and the graph with those boxes (graph JSON);
- for the shapes world, the compliance checker's verdict for every relation of every segment and every object
  (sg2video.eval.compliance: the rules `sample.py`'s outputs are scored with).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from sg2video.graph_json import graphs_to_json, write_graph_json
from sg2video.graphs import SceneGraph, Vocab
from sg2video.video_io import write_gif, write_mp4

KINDS = {"png": "image/png", "gif": "image/gif", "mp4": "video/mp4", "json": "application/json"}
GIF_SIDE = 128  # GIF and MP4 are upscaled (nearest neighbour) to about this side, as sample.py does for its GIFs


def sheet_columns(frames: int) -> int:
    """Frames per row of the sheet: about square, so a long video stays inside a browser's image limits."""
    return max(1, min(frames, int(np.ceil(np.sqrt(frames)))))


def frame_sheet(video: np.ndarray) -> bytes:
    """uint8 (T, H, W, 3) -> PNG bytes of the frames in a grid of `sheet_columns(T)` columns, row by row."""
    from PIL import Image

    frames, height, width, _ = video.shape
    cols = sheet_columns(frames)
    rows = -(-frames // cols)
    grid = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
    for t, frame in enumerate(video):
        r, c = divmod(t, cols)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = frame
    out = io.BytesIO()
    Image.fromarray(grid).save(out, format="PNG")
    return out.getvalue()


def layout_boxes(drawn: Sequence[SceneGraph]) -> list[list[list[float] | None]]:
    """Every frame's box per object, [x0, y0, x1, y1] in [0, 1], or None where the generator drew without one."""
    frames = []
    for graph in drawn:
        if graph.boxes is None:
            frames.append([None] * graph.num_objects)
            continue
        frames.append([[round(float(v), 4) for v in box] if given else None
                       for box, given in zip(graph.boxes.tolist(), graph.has_box.tolist())])
    return frames


def write_sample_files(folder: Path, index: int, video: np.ndarray, vocab: Vocab, drawn: Sequence[SceneGraph],
                       fps: int) -> None:
    """sample_NNN.{png,gif,mp4,json} in the server's own folder for this request."""
    stem = folder / f"sample_{index:03d}"
    scale = max(1, GIF_SIDE // video.shape[1])
    (folder / f"sample_{index:03d}.png").write_bytes(frame_sheet(video))
    write_gif(f"{stem}.gif", video, fps=fps, scale=scale)
    write_mp4(f"{stem}.mp4", video, fps=fps, scale=scale)
    write_graph_json(f"{stem}.json", graphs_to_json(vocab, drawn, every_box=True))


# -- the shapes world's checker -------------------------------------------------------------------------


def has_checker(vocab: Vocab) -> bool:
    """Whether the compliance checker reads this vocabulary: every object "<colour> <shape>" of the shapes world and
    every predicate one of its rules."""
    from sg2video.data.shapes import COLOURS, SHAPES
    from sg2video.eval.compliance import PREDICATE_RULES

    colours = {name for name, _ in COLOURS}

    def shape_class(name: str) -> bool:
        colour, _, shape = name.rpartition(" ")
        return colour in colours and shape in SHAPES

    return all(shape_class(n) for n in vocab.objects) and all(p in PREDICATE_RULES for p in vocab.predicates)


def verdicts(video: np.ndarray, graphs: Sequence[SceneGraph], segments: Sequence[tuple[int, int]],
             vocab: Vocab) -> dict:
    """The checker on one video: for each segment's relations, in how many of the segment's frames each holds
    (both objects detected, the displacement on the predicate's side: compliance.check_video's rule); for each
    object, in how many frames it is detected with its shape. Detection runs once for the whole video."""
    from sg2video.data.shapes import SHAPES
    from sg2video.eval.compliance import detect_objects, graph_colours, predicate_holds

    det = detect_objects(video)
    colours = graph_colours(graphs, vocab)
    shapes = [SHAPES.index(vocab.objects[int(i)].rpartition(" ")[2]) for i in graphs[0].objs]
    found = det.detected[:, colours] & (det.shape[:, colours] == np.asarray(shapes))  # (T, K)
    relations = []
    for start, end in segments:
        rows = []
        for s, p, o in graphs[start].triples.tolist():
            both = det.detected[start:end, colours[s]] & det.detected[start:end, colours[o]]
            shift = np.nan_to_num(det.position[start:end, colours[o]] - det.position[start:end, colours[s]])
            held = both & predicate_holds(vocab.predicates[p], shift)
            rows.append({"held": int(held.sum()), "frames": end - start})
        relations.append(rows)
    objects = [{"held": int(found[:, k].sum()), "frames": int(video.shape[0])} for k in range(len(colours))]
    return {"relations": relations, "objects": objects}

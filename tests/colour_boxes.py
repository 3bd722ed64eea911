"""A third video generator, written as a real one would be: this one module (a `VideoGenerator` and the stage that
writes its checkpoint) plus one registry line. tests/test_registry.py registers it through the public API, and
copies it into a copy of the package (as sg2video/colour_boxes.py) with this line added to sg2video/generators.py:

    register_generator("colour_boxes", "colour_boxes", "sg2video.colour_boxes:ColourBoxGenerator",
                       "sg2video.colour_boxes:run_colour_boxes_stage")

It knows the shapes world only and learns nothing: each object is stamped in its colour and shape (the world's own
templates) at the centre of its box, so with the data's boxes it redraws the clip exactly. Its layout model is a ring
around the frame's centre, turned by the seed: every object with `layout=head`, those the graph gives no box
otherwise. Guidance 0 (the unconditional control) draws an empty frame.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from sg2video.data.shapes import PALETTE, SHAPES, object_radius, shapes_vocab, template_masks
from sg2video.errors import UserError
from sg2video.generators import VideoGenerator, video_length
from sg2video.graphs import SceneGraph, Vocab
from sg2video.layout import LAYOUT_SOURCES
from sg2video.rundir import stage_checkpoint
from sg2video.train.checkpoint import save_training_checkpoint

STAGE = "colour_boxes"


def run_colour_boxes_stage(cfg, run_dir: Path, info) -> Path:
    """Nothing to train: the checkpoint holds what `from_state` reads."""
    path = stage_checkpoint(run_dir, STAGE)
    if info.is_main:
        save_training_checkpoint(path.parent, {
            "stage": STAGE, "step": 0, "finished": True, "vocab": shapes_vocab().to_dict(),
            "clip_frames": int(cfg.data.frames), "image_size": int(cfg.data.size),
            "max_objects": int(cfg.data.max_objects)})
    return path


class ColourBoxGenerator(VideoGenerator):
    cond_mode = "stamp"  # each object stamped into its box
    reads_boxes = True  # not chunked: any length in one pass

    def __init__(self, vocab: Vocab, clip_frames: int, size: int, max_objects: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.vocab, self.clip_frames, self.size, self.max_objects = vocab, clip_frames, size, max_objects
        self.device = torch.device(device)
        self.radius = object_radius(size)

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> "ColourBoxGenerator":
        return cls(Vocab.from_dict(state["vocab"]), int(state["clip_frames"]), int(state["image_size"]),
                   state.get("max_objects"), device)

    def generate(self, graph_lists, sampler="ddim", steps=50, guidance=2.0, eta=0.0, seed=0, layout="sampled",
                 progress=None, return_graphs=False):
        frames = video_length(graph_lists)
        if layout not in LAYOUT_SOURCES:
            raise UserError(f"layout={layout!r} is not accepted (accepted: {', '.join(LAYOUT_SOURCES)})")
        drawn = [[self.with_boxes(graph, layout, seed) for graph in clip] for clip in graph_lists]
        videos = np.zeros((len(drawn), frames, self.size, self.size, 3), dtype=np.uint8)
        for b, clip in enumerate(drawn):
            for t, graph in enumerate(clip):
                if guidance > 0:
                    self.stamp(videos[b, t], graph)
        if progress is not None:
            progress(1, 1)
        videos = torch.from_numpy(videos)
        return (videos, drawn) if return_graphs else videos

    def with_boxes(self, graph: SceneGraph, layout: str, seed: int) -> SceneGraph:
        """The graph with every box filled: the graph's own (unless `layout=head`), else a place on the ring."""
        n, size, r = graph.num_objects, self.size, self.radius
        boxes = torch.zeros(n, 4)
        for i in range(n):
            if layout != "head" and bool(graph.has_box[i]):
                boxes[i] = graph.boxes[i]
                continue
            angle = 2 * math.pi * i / n + seed
            cx, cy = (round(size / 2 + 0.3 * size * f(angle)) for f in (math.cos, math.sin))
            boxes[i] = torch.tensor([cx - r, cy - r, cx + r + 1, cy + r + 1]) / size  # the world's boxes
        return graph.with_boxes(boxes)

    def stamp(self, frame: np.ndarray, graph: SceneGraph) -> None:
        """Each object's shape in its colour, centred in its box, into `frame` (H, W, 3)."""
        for cls, box in zip(graph.objs.tolist(), graph.boxes.tolist()):
            colour, shape = divmod(int(cls), len(SHAPES))
            cx, cy = (round((box[k] + box[k + 2]) / 2 * self.size - 0.5) for k in (0, 1))
            mask = template_masks(np.array([cx]), np.array([cy]), self.radius, self.size)[shape, 0]
            frame[mask] = PALETTE[colour]

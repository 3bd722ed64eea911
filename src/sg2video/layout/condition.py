"""What the layout model is conditioned on: a window of per-frame graphs, encoded by the frozen graph encoder.

`LayoutBatch` axes, documented once: B clips, K objects (padded to the largest clip), W frames of the window,
R triples per frame (padded), C the encoder's `cond_dim`. A clip's frames share their objects (the dataset item
contract), so objects are per clip and triples per frame.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

from sg2video.encoder.graph_encoder import GraphEncoder, rank_in_group
from sg2video.graphs import GraphBatch, SceneGraph
from sg2video.layout.boxes import to_model_space


@dataclass
class LayoutBatch:
    classes: torch.Tensor  # (B, K) long object classes
    obj_mask: torch.Tensor  # (B, K) bool, True = a real object
    obj_tokens: torch.Tensor  # (B, K, W, C) the encoder's token of each object in each frame (0 past its cap)
    triples: torch.Tensor  # (B, W, R, 3) long (subject, predicate, object); ends index the clip's objects
    triple_mask: torch.Tensor  # (B, W, R) bool, True = a real triple
    triple_tokens: torch.Tensor  # (B, W, R, C) the encoder's token of each triple (0 past its cap)
    boxes: torch.Tensor  # (B, K, W, 4) model-space boxes (layout.boxes), zeros where has_box is False
    has_box: torch.Tensor  # (B, K, W) bool: the graph gives this box

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, K, W)."""
        return tuple(self.has_box.shape)  # type: ignore[return-value]

    def map(self, fn) -> "LayoutBatch":
        return LayoutBatch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device) -> "LayoutBatch":
        return self.map(lambda v: v.to(device))

    def select(self, index: torch.Tensor) -> "LayoutBatch":
        """The clips at `index` (B',) long."""
        return self.map(lambda v: v[index])

    def repeat_interleave(self, times: int) -> "LayoutBatch":
        """Each clip `times` times in a row (candidates of one clip side by side)."""
        return self.map(lambda v: v.repeat_interleave(times, dim=0))

    def repeat_batch(self, times: int) -> "LayoutBatch":
        """The whole batch `times` times (classifier-free guidance's doubled batch)."""
        return self.map(lambda v: v.repeat(times, *([1] * (v.dim() - 1))))


def _encode_distinct(encoder: GraphEncoder, graphs: list[SceneGraph], device) -> torch.Tensor:
    """The encoder's tokens (G, L, C) for every graph, computing each run of identical consecutive graphs once (a
    clip's relations stay the same for many frames; the encoder reads objects and triples, not boxes)."""
    source, distinct = [], []
    for graph in graphs:
        if not distinct or not graph.same_relations(distinct[-1]):
            distinct.append(graph)
        source.append(len(distinct) - 1)
    tokens = encoder(GraphBatch.pack(distinct).to(device)).tokens
    return tokens[torch.tensor(source, device=device)]


@torch.no_grad()
def encode_layout_batch(encoder: GraphEncoder | None, clips: Sequence[Sequence[SceneGraph]],
                        device: torch.device | str = "cpu") -> LayoutBatch:
    """B clips' per-frame graphs (W frames each) -> LayoutBatch on `device`. Without an encoder the tokens are
    (B, K, W, 1) and (B, W, R, 1) zeros (what the relation scorer needs is the graph and its boxes alone)."""
    frames = {len(c) for c in clips}
    assert len(frames) == 1, f"every clip of a layout window needs the same frame count, got {sorted(frames)}"
    W, B = frames.pop(), len(clips)
    flat = [g for clip in clips for g in clip]
    graphs = GraphBatch.pack(flat).to(device)
    if encoder is not None:
        tokens = _encode_distinct(encoder, flat, device)
    else:
        tokens = torch.zeros(graphs.num_graphs, 0, 1, device=device)
    G, L, C = tokens.shape
    K = max(1, max(clip[0].num_objects for clip in clips))
    R = max(1, int(graphs.triples_per_graph().max()) if graphs.triples.numel() else 1)

    obj_rank = rank_in_group(graphs.obj_to_graph, G)
    clip_of_obj, frame_of_obj = graphs.obj_to_graph // W, graphs.obj_to_graph % W
    obj_slot = graphs.triples_per_graph()[graphs.obj_to_graph] + obj_rank
    in_cap = obj_slot < L
    obj_tokens = tokens.new_zeros(B, K, W, C)
    obj_tokens[clip_of_obj[in_cap], obj_rank[in_cap], frame_of_obj[in_cap]] = tokens[
        graphs.obj_to_graph[in_cap], obj_slot[in_cap]]
    boxes = tokens.new_zeros(B, K, W, 4)
    has_box = torch.zeros(B, K, W, dtype=torch.bool, device=device)
    boxes[clip_of_obj, obj_rank, frame_of_obj] = to_model_space(graphs.boxes)
    has_box[clip_of_obj, obj_rank, frame_of_obj] = graphs.has_box
    boxes = boxes * has_box[..., None]

    classes = torch.zeros(B, K, dtype=torch.long, device=device)
    obj_mask = torch.zeros(B, K, dtype=torch.bool, device=device)
    first = frame_of_obj == 0
    classes[clip_of_obj[first], obj_rank[first]] = graphs.objs[first]
    obj_mask[clip_of_obj[first], obj_rank[first]] = True

    # triples: subject / object re-indexed from the packing to the clip's object order
    tri_graph = graphs.triple_to_graph
    tri_rank = rank_in_group(tri_graph, G)
    obj_start = torch.cumsum(graphs.objects_per_graph(), 0) - graphs.objects_per_graph()
    local = graphs.triples.clone()
    local[:, 0] -= obj_start[tri_graph]
    local[:, 2] -= obj_start[tri_graph]
    triples = torch.zeros(B, W, R, 3, dtype=torch.long, device=device)
    triple_mask = torch.zeros(B, W, R, dtype=torch.bool, device=device)
    triples[tri_graph // W, tri_graph % W, tri_rank] = local
    triple_mask[tri_graph // W, tri_graph % W, tri_rank] = True
    triple_tokens = tokens.new_zeros(B, W, R, C)
    tri_in_cap = tri_rank < L
    triple_tokens[(tri_graph // W)[tri_in_cap], (tri_graph % W)[tri_in_cap], tri_rank[tri_in_cap]] = tokens[
        tri_graph[tri_in_cap], tri_rank[tri_in_cap]]
    return LayoutBatch(classes, obj_mask, obj_tokens, triples, triple_mask, triple_tokens, boxes, has_box)

"""The graph-to-video generator: a frozen graph encoder, the trainable denoiser, and (optionally) a frame
autoencoder, with what turns packed frame graphs into the UNet's per-frame conditioning.

`GraphCondition` is the frozen encoder's output arranged per frame (B, T, ...). The trainable
`Denoiser` turns it into the UNet's `Conditioning` (adding a learned class embedding to each object's
layout vector, so the layout maps always say which class goes in which box) and runs the UNet.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from einops import rearrange
from torch import nn

from sg2video.encoder.graph_encoder import GraphEncoder, rank_in_group
from sg2video.graphs import GraphBatch
from sg2video.unet.conditioning import Conditioning
from sg2video.unet.unet3d import UNet3D, build_unet


@dataclass
class GraphCondition:
    """Frozen-encoder outputs per frame. B clips, T frames, L tokens, K objects, C cond width."""

    tokens: torch.Tensor  # (B, T, L, C) local tokens (triples, then objects), padded
    token_mask: torch.Tensor  # (B, T, L) bool
    global_vec: torch.Tensor  # (B, T, C)
    obj_classes: torch.Tensor  # (B, T, K) long
    obj_tokens: torch.Tensor  # (B, T, K, C) each object's token
    boxes: torch.Tensor  # (B, T, K, 4) layout boxes (given or predicted)
    obj_mask: torch.Tensor  # (B, T, K) bool
    still: torch.Tensor | None = None  # (B, T) bool: frames of image items (co-training), kept apart in time

    def map(self, fn) -> "GraphCondition":
        return GraphCondition(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                                 for f in fields(self)})

    def repeat_batch(self, times: int) -> "GraphCondition":
        return self.map(lambda v: v.repeat(times, *([1] * (v.dim() - 1))))

    def frames(self, start: int, end: int) -> "GraphCondition":
        return self.map(lambda v: v[:, start:end])

    def to(self, device) -> "GraphCondition":
        return self.map(lambda v: v.to(device))

    @staticmethod
    def cat_frames(parts: list["GraphCondition"]) -> "GraphCondition":
        """Concatenate along T, padding L and K to the largest."""
        out = {}
        for f in fields(GraphCondition):
            values = [getattr(p, f.name) for p in parts]
            if any(v is None for v in values):
                if f.name != "still":
                    raise ValueError(f"cannot concatenate a GraphCondition without {f.name}")
                batch, lengths = parts[0].global_vec.shape[0], [p.global_vec.shape[1] for p in parts]
                values = [v if v is not None else torch.zeros(batch, n, dtype=torch.bool, device=p.global_vec.device)
                          for v, n, p in zip(values, lengths, parts)]
                if not any(v.any() for v in values):
                    out[f.name] = None
                    continue
            if values[0].dim() >= 3:
                width = max(v.shape[2] for v in values)
                values = [_pad_dim(v, 2, width) for v in values]
            out[f.name] = torch.cat(values, dim=1)
        return GraphCondition(**out)


def _pad_dim(value: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if value.shape[dim] == size:
        return value
    shape = list(value.shape)
    shape[dim] = size - value.shape[dim]
    return torch.cat([value, value.new_zeros(shape)], dim=dim)


@torch.no_grad()
def encode_condition(encoder: GraphEncoder, graphs: GraphBatch, batch: int, frames: int,
                     box_source: str = "graph") -> GraphCondition:
    """Packed frame graphs (b-major, B*T of them) -> per-frame GraphCondition.

    box_source: `graph` uses each object's given box and the box head's where it has none;
    `predicted` always uses the box head's.
    """
    assert graphs.num_graphs == batch * frames, "B*T frame graphs expected"
    enc = encoder(graphs)
    G = graphs.num_graphs
    # each object's token sits after its graph's triple tokens (see GraphEncoding); objects past the
    # token cap have none: they get a zero token (their class embedding still marks the layout)
    obj_rank = rank_in_group(graphs.obj_to_graph, G)
    obj_slot = graphs.triples_per_graph()[graphs.obj_to_graph] + obj_rank
    L = enc.tokens.shape[1]
    in_cap = obj_slot < L
    obj_tok = enc.tokens.new_zeros(graphs.objs.shape[0], enc.tokens.shape[2])
    obj_tok[in_cap] = enc.tokens[graphs.obj_to_graph[in_cap], obj_slot[in_cap]]
    K = int(graphs.objects_per_graph().max()) if graphs.objs.numel() else 1
    K = max(K, 1)
    classes = graphs.objs.new_zeros(G, K)
    tokens_k = enc.tokens.new_zeros(G, K, enc.tokens.shape[2])
    boxes_k = enc.tokens.new_zeros(G, K, 4)
    mask_k = torch.zeros(G, K, dtype=torch.bool, device=graphs.device)
    use_given = graphs.has_box if box_source == "graph" else torch.zeros_like(graphs.has_box)
    boxes = torch.where(use_given[:, None], graphs.boxes, enc.box_pred)
    classes[graphs.obj_to_graph, obj_rank] = graphs.objs
    tokens_k[graphs.obj_to_graph, obj_rank] = obj_tok
    boxes_k[graphs.obj_to_graph, obj_rank] = boxes
    mask_k[graphs.obj_to_graph, obj_rank] = True

    def per_frame(value: torch.Tensor) -> torch.Tensor:
        return rearrange(value, "(b t) ... -> b t ...", b=batch, t=frames)

    return GraphCondition(
        tokens=per_frame(enc.tokens), token_mask=per_frame(enc.token_mask), global_vec=per_frame(enc.global_vec),
        obj_classes=per_frame(classes), obj_tokens=per_frame(tokens_k), boxes=per_frame(boxes_k),
        obj_mask=per_frame(mask_k),
    )


class Denoiser(nn.Module):
    """The trainable part: the UNet plus a learned class embedding for each object's vector.

    layout: the embedding is added to each object's layout vector (the maps say which class goes in which box).
    crossattn with `class_tokens`: each object's token plus its class embedding is one more key, after the
    encoder's tokens, so every object of the graph has a key that names its class directly.
    concat with `concat_slots` > 0: the same object vectors fill the slots after the global vector.
    """

    def __init__(self, unet: UNet3D, num_classes: int, cond_dim: int, class_tokens: bool = True) -> None:
        super().__init__()
        self.unet = unet
        self.cond_mode = unet.cond_mode
        self.class_tokens = bool(class_tokens) and self.cond_mode == "crossattn"
        self.slots = int(getattr(unet, "concat_slots", 0))
        wants = self.cond_mode == "layout" or self.class_tokens or (self.slots > 0 and bool(class_tokens))
        self.class_embed = nn.Embedding(num_classes, cond_dim) if wants else None

    def _objects(self, cond: GraphCondition) -> torch.Tensor:
        """(B, T, K, C): each object's token, plus its class embedding when there is one."""
        if self.class_embed is None:
            return cond.obj_tokens
        return cond.obj_tokens + self.class_embed(cond.obj_classes)

    def conditioning(self, cond: GraphCondition | None) -> Conditioning | None:
        if cond is None or self.cond_mode == "none":
            return None
        if self.cond_mode == "layout":
            return Conditioning(layout_boxes=cond.boxes, layout_embed=self._objects(cond), layout_mask=cond.obj_mask)
        tokens, token_mask, slots = cond.tokens, cond.token_mask, None
        if self.class_tokens:
            tokens = torch.cat((tokens, self._objects(cond).to(tokens.dtype)), dim=2)
            token_mask = torch.cat((token_mask, cond.obj_mask), dim=2)
        if self.slots:
            objects = self._objects(cond) * cond.obj_mask[..., None]
            slots = _pad_dim(objects[:, :, : self.slots], 2, self.slots)
        return Conditioning(tokens=tokens, token_mask=token_mask, global_vec=cond.global_vec, slots=slots)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: GraphCondition | None = None,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        still = cond.still if cond is not None else None
        return self.unet(x, t, self.conditioning(cond), drop_cond, still=still)


def repeat_condition(cond: Any, times: int) -> Any:
    return None if cond is None else cond.repeat_batch(times)


__all__ = ["GraphCondition", "Denoiser", "encode_condition", "build_unet", "repeat_condition"]

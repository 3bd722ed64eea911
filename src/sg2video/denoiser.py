"""The graph-to-video generator: a frozen graph encoder, the trainable denoiser, and (optionally) a frame
autoencoder, with what turns packed frame graphs into the UNet's per-frame conditioning.

`encode_condition` arranges the frozen encoder's output per frame as a `Conditioning` (the one condition type,
sg2video.unet.conditioning). The trainable `Denoiser` completes it for its mode (a learned class embedding on
each object's layout vector, class keys for crossattn, slots for concat) and runs the UNet.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from einops import rearrange
from torch import nn

from sg2video.encoder.graph_encoder import GraphEncoder, rank_in_group
from sg2video.graphs import GraphBatch
from sg2video.unet.conditioning import Conditioning, _pad_dim
from sg2video.unet.unet3d import UNet3D, build_unet


def encode_condition(encoder: GraphEncoder, graphs: GraphBatch, batch: int, frames: int,
                     box_source: str = "graph", grad: bool = False) -> Conditioning:
    """Packed frame graphs (b-major, B*T of them) -> per-frame Conditioning (the encoder's fields).

    box_source: `graph` uses each object's given box and the box head's where it has none;
    `predicted` always uses the box head's. grad: keep the graph for backpropagation into the encoder (a model
    that trains its encoder jointly, e.g. model=sg2im with model.train_encoder); by default the encoder is frozen.
    """
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return _encode_condition(encoder, graphs, batch, frames, box_source)


def _encode_condition(encoder: GraphEncoder, graphs: GraphBatch, batch: int, frames: int,
                      box_source: str) -> Conditioning:
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

    return Conditioning(
        tokens=per_frame(enc.tokens), token_mask=per_frame(enc.token_mask), global_vec=per_frame(enc.global_vec),
        obj_classes=per_frame(classes), obj_tokens=per_frame(tokens_k), layout_boxes=per_frame(boxes_k),
        layout_mask=per_frame(mask_k),
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

    def _objects(self, cond: Conditioning) -> torch.Tensor:
        """(B, T, K, C): each object's token, plus its class embedding when there is one."""
        if self.class_embed is None:
            return cond.obj_tokens
        return cond.obj_tokens + self.class_embed(cond.obj_classes)

    def conditioning(self, cond: Conditioning | None) -> Conditioning | None:
        """The encoder's condition completed for this mode (a new Conditioning; the input is not changed)."""
        if cond is None or self.cond_mode == "none":
            return None
        if self.cond_mode == "layout":
            return replace(cond, layout_embed=self._objects(cond))
        tokens, token_mask, slots = cond.tokens, cond.token_mask, None
        if self.class_tokens:
            tokens = torch.cat((tokens, self._objects(cond).to(tokens.dtype)), dim=2)
            token_mask = torch.cat((token_mask, cond.layout_mask), dim=2)
        if self.slots:
            objects = self._objects(cond) * cond.layout_mask[..., None]
            slots = _pad_dim(objects[:, :, : self.slots], 2, self.slots)
        return replace(cond, tokens=tokens, token_mask=token_mask, slots=slots)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning | None = None,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        still = cond.still if cond is not None else None
        return self.unet(x, t, self.conditioning(cond), drop_cond, still=still)


def repeat_condition(cond: Any, times: int) -> Any:
    return None if cond is None else cond.repeat_batch(times)


__all__ = ["Conditioning", "Denoiser", "encode_condition", "build_unet", "repeat_condition"]

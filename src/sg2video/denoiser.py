"""The graph-to-video generator: a frozen graph encoder, the trainable denoiser, and (optionally) a frame
autoencoder, with what turns packed frame graphs into the UNet's per-frame conditioning.

`encode_condition` arranges the frozen encoder's output per frame as a `Conditioning` (the one condition type,
sg2video.unet.conditioning). The trainable `Denoiser` completes it for its mode (a learned class embedding on
each object's vector, object keys grounded in their boxes for crossattn, slots for adm) and runs the UNet.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from einops import rearrange
from torch import nn

from sg2video.encoder.graph_encoder import GraphEncoder, rank_in_group
from sg2video.graphs import GraphBatch
from sg2video.layout import LAYOUT_SOURCES
from sg2video.unet.conditioning import ATTN_MODES, MAP_MODES, BoxGrounding, Conditioning, _pad_dim, reads_boxes
from sg2video.unet.unet3d import UNet3D, build_unet


def encode_condition(encoder: GraphEncoder, graphs: GraphBatch, batch: int, frames: int,
                     layout: str = "given", grad: bool = False) -> Conditioning:
    """Packed frame graphs (b-major, B*T of them) -> per-frame Conditioning (the encoder's fields).

    layout (a name of `LAYOUT_SOURCES`): `head` takes every box from the encoder's box head; the others keep each
    object's box in the graph (given, or drawn by the layout model) and use the box head's where it has none. grad: keep the graph for backpropagation into the encoder (a model
    that trains its encoder jointly, e.g. model=sg2im with model.train_encoder); by default the encoder is frozen.
    """
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return _encode_condition(encoder, graphs, batch, frames, layout)


def _encode_condition(encoder: GraphEncoder, graphs: GraphBatch, batch: int, frames: int,
                      layout: str) -> Conditioning:
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
    assert layout in LAYOUT_SOURCES, layout
    use_given = torch.zeros_like(graphs.has_box) if layout == "head" else graphs.has_box
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
    """The trainable part: the UNet plus what completes the encoder's condition for its mode.

    - A learned class embedding on each object's vector (`_objects`).
    - concat, hybrid: those vectors are what the maps paint into each object's box (`layout_embed`).
    - crossattn, hybrid: each object is one more key after the encoder's tokens (its token + class embedding with
      `class_tokens`), so every object of the graph has a key that names its class; grounded (the UNet's
      `grounding`), the key also carries the object's box in that frame (`BoxGrounding`, GLIGEN) and the
      condition says each key's box (`token_boxes`, for the attention's region bias).
    - adm with `adm_slots` > 0: the same object vectors fill the slots after the global vector.
    """

    def __init__(self, unet: UNet3D, num_classes: int, cond_dim: int, class_tokens: bool = True) -> None:
        super().__init__()
        self.unet = unet
        self.cond_mode = unet.cond_mode
        attends = self.cond_mode in ATTN_MODES
        self.object_keys = attends and (bool(class_tokens) or unet.grounding)
        self.slots = int(getattr(unet, "adm_slots", 0))
        wants = self.cond_mode in MAP_MODES or (attends and bool(class_tokens)) or (self.slots > 0 and bool(class_tokens))
        self.class_embed = nn.Embedding(num_classes, cond_dim) if wants else None
        self.grounding = BoxGrounding(cond_dim) if unet.grounding else None

    @property
    def reads_boxes(self) -> bool:
        """Whether this model's samples depend on boxes (the layout stage's, or given)."""
        return reads_boxes(self.cond_mode, self.grounding is not None)

    def _objects(self, cond: Conditioning) -> torch.Tensor:
        """(B, T, K, C): each object's token, plus its class embedding when there is one."""
        if self.class_embed is None:
            return cond.obj_tokens
        return cond.obj_tokens + self.class_embed(cond.obj_classes)

    def conditioning(self, cond: Conditioning | None) -> Conditioning | None:
        """The encoder's condition completed for this mode (a new Conditioning; the input is not changed)."""
        if cond is None or self.cond_mode == "none":
            return None
        fields = {}
        if self.cond_mode in MAP_MODES:
            fields["layout_embed"] = self._objects(cond)
        if self.object_keys:
            objects, boxes = self._objects(cond), cond.layout_boxes
            if self.grounding is not None:
                objects = self.grounding(objects, boxes)
                present = cond.layout_mask[..., None].to(boxes.dtype)
                fields["token_boxes"] = torch.cat((boxes.new_zeros(*cond.tokens.shape[:3], 4), boxes * present), dim=2)
            fields["tokens"] = torch.cat((cond.tokens, objects.to(cond.tokens.dtype)), dim=2)
            fields["token_mask"] = torch.cat((cond.token_mask, cond.layout_mask), dim=2)
        if self.slots:
            objects = self._objects(cond) * cond.layout_mask[..., None]
            fields["slots"] = _pad_dim(objects[:, :, : self.slots], 2, self.slots)
        return replace(cond, **fields)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning | None = None,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        still = cond.still if cond is not None else None
        return self.unet(x, t, self.conditioning(cond), drop_cond, still=still)


def repeat_condition(cond: Any, times: int) -> Any:
    return None if cond is None else cond.repeat_batch(times)


__all__ = ["Conditioning", "Denoiser", "encode_condition", "build_unet", "repeat_condition"]

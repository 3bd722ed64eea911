"""The layout denoiser: a transformer over objects x frames that denoises box trajectories given a scene graph.

One token per (object, frame): its noisy model-space box (layout.boxes), its diffusion step (0 for a given box:
a prefix frame or a box the graph states), its class, the frozen encoder's token of the object in that frame, and
the frame's position in the window. Each block:
1. **frame attention**: the objects of one frame attend to each other, relation-aware (Shaw et al. 2018): the key
   and value of object j as seen by object i carry the edge vector of the pair (i, j) in that frame, built from
   the predicates of the triples between them (a subject-role and an object-role embedding per predicate) and the
   encoder's triple tokens. So "i left of j" reaches exactly the two objects it names, whatever their order, and
   a pair the graph leaves unrelated gets a learned "no relation" edge;
2. **temporal attention**: each object attends to itself in the other frames of the window (smooth motion, and a
   new segment continuing from the prefix frames);
3. an MLP. Pre-norm, residual.
The output is the clean box (x0 prediction). Classifier-free guidance drops a clip's relations: no edges and no
encoder tokens, only which objects there are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sg2video.layout.boxes import from_model_space
from sg2video.layout.condition import LayoutBatch
from sg2video.layout.scorer import RelationScorer


def sinusoid(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(...) numbers -> (..., dim) sin/cos features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class EdgeAttention(nn.Module):
    """Self-attention among the K objects of a frame with per-pair edge vectors on keys and values."""

    def __init__(self, dim: int, heads: int, edge_dim: int) -> None:
        super().__init__()
        assert dim % heads == 0, f"heads ({heads}) must divide the width ({dim})"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.edge_kv = nn.Linear(edge_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, edges: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (N, K, D); edges (N, K, K, E) edge (i, j) seen from i; key_mask (N, K) bool -> (N, K, D)."""
        q, k, v = rearrange(self.qkv(x), "n k (three h d) -> three n h k d", three=3, h=self.heads)
        ek, ev = rearrange(self.edge_kv(edges), "n i j (two h d) -> two n h i j d", two=2, h=self.heads)
        scale = q.shape[-1] ** -0.5
        scores = (torch.einsum("nhid,nhjd->nhij", q, k) + torch.einsum("nhid,nhijd->nhij", q, ek)) * scale
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attn = scores.softmax(dim=-1)
        out = torch.einsum("nhij,nhjd->nhid", attn, v) + torch.einsum("nhij,nhijd->nhid", attn, ev)
        return self.out(rearrange(out, "n h k d -> n k (h d)"))


class TemporalAttention(nn.Module):
    """Self-attention of one object over the frames of the window."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, W, D) -> (N, W, D)."""
        q, k, v = rearrange(self.qkv(x), "n w (three h d) -> three n h w d", three=3, h=self.heads)
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v), "n h w d -> n w (h d)"))


class LayoutBlock(nn.Module):
    """Frame attention, temporal attention, MLP; each pre-norm with a shift, scale and gate from the token's
    diffusion step (adaLN-Zero, as DiT: the gates start at 0, so a block starts as the identity)."""

    def __init__(self, dim: int, heads: int, edge_dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False) for _ in range(3))
        self.frame_attn = EdgeAttention(dim, heads, edge_dim)
        self.time_attn = TemporalAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, h: torch.Tensor, step_emb: torch.Tensor, given: torch.Tensor, edges: torch.Tensor,
                obj_mask: torch.Tensor) -> torch.Tensor:
        """h (B, K, W, D); step_emb (B, 2, D) embeddings of each clip's noisy and given tokens; given (B, K, W, 1)
        bool; edges (B W, K, K, E); obj_mask (B, K)."""
        B, K, W, _ = h.shape
        per_clip = self.modulation(step_emb)[:, None, None]  # (B, 1, 1, 2, 9D)
        mods = torch.where(given, per_clip[..., 1, :], per_clip[..., 0, :]).chunk(9, dim=-1)

        def modulated(i: int) -> torch.Tensor:
            shift, scale = mods[3 * i], mods[3 * i + 1]
            return self.norms[i](h) * (1 + scale) + shift

        per_frame = rearrange(modulated(0), "b k w d -> (b w) k d")
        frame_mask = obj_mask.repeat_interleave(W, dim=0)
        h = h + mods[2] * rearrange(self.frame_attn(per_frame, edges, frame_mask), "(b w) k d -> b k w d", b=B)
        per_object = rearrange(modulated(1), "b k w d -> (b k) w d")
        h = h + mods[5] * rearrange(self.time_attn(per_object), "(b k) w d -> b k w d", b=B)
        return h + mods[8] * self.mlp(modulated(2))


class LayoutDenoiser(nn.Module):
    """(noisy boxes, steps, LayoutBatch) -> predicted clean boxes; see the module docstring."""

    def __init__(self, num_classes: int, num_predicates: int, cond_dim: int, dim: int = 128, layers: int = 4,
                 heads: int = 4, edge_dim: int = 32) -> None:
        super().__init__()
        self.dim, self.edge_dim = dim, edge_dim
        self.box_in = nn.Linear(4, dim)
        self.given_embed = nn.Embedding(2, dim)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_embed = nn.Embedding(num_classes, dim)
        self.obj_token_proj = nn.Linear(cond_dim, dim)
        self.subject_edge = nn.Embedding(num_predicates, edge_dim)  # the pair seen from the triple's subject
        self.object_edge = nn.Embedding(num_predicates, edge_dim)  # ... and from its object
        self.triple_proj_subject = nn.Linear(cond_dim, edge_dim)
        self.triple_proj_object = nn.Linear(cond_dim, edge_dim)
        self.no_edge = nn.Parameter(torch.zeros(edge_dim))
        self.blocks = nn.ModuleList(LayoutBlock(dim, heads, edge_dim) for _ in range(layers))
        self.norm_out = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 4)

    def edges(self, cond: LayoutBatch, keep: torch.Tensor) -> torch.Tensor:
        """(B W, K, K, E) edge vectors: the sum over the frame's triples between each ordered pair."""
        B, K, W = cond.shape
        D = self.edge_dim
        mask = cond.triple_mask & keep[:, None, None]  # (B, W, R)
        s, p, o = cond.triples.unbind(-1)  # (B, W, R)
        frame = torch.arange(B * W, device=s.device).view(B, W, 1).expand_as(s)
        from_subject = self.subject_edge(p) + self.triple_proj_subject(cond.triple_tokens)
        from_object = self.object_edge(p) + self.triple_proj_object(cond.triple_tokens)
        forward, backward = ((frame * K + s) * K + o)[mask], ((frame * K + o) * K + s)[mask]
        edges = from_subject.new_zeros(B * W * K * K, D)
        edges.index_add_(0, forward, from_subject[mask]).index_add_(0, backward, from_object[mask])
        related = torch.zeros(B * W * K * K, dtype=torch.bool, device=s.device)
        related[forward] = True
        related[backward] = True
        edges = torch.where(related[:, None], edges, self.no_edge.to(edges.dtype))
        return edges.view(B * W, K, K, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: LayoutBatch,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, K, W, 4) noisy model-space boxes; t (B, K, W) long steps (0 = given); drop_cond (B,) bool."""
        B, K, W = cond.shape
        keep = torch.ones(B, dtype=torch.bool, device=x.device) if drop_cond is None else ~drop_cond.to(x.device)
        frame_pos = sinusoid(torch.arange(W, device=x.device), self.dim)  # (W, D)
        # a clip's noisy tokens share one step; given tokens have 0: embed the two per clip, then pick per token
        clip_step = t.flatten(1).max(dim=1).values  # (B,)
        steps = torch.stack([clip_step, torch.zeros_like(clip_step)], dim=1)  # (B, 2): noisy, given
        step_emb = self.time_mlp(sinusoid(steps, self.dim)) + self.given_embed.weight  # (B, 2, D)
        given = (t == 0)[..., None]
        token_step = torch.where(given, step_emb[:, None, None, 1], step_emb[:, None, None, 0])  # (B, K, W, D)
        h = (self.box_in(x) + token_step + self.class_embed(cond.classes)[:, :, None] + frame_pos
             + self.obj_token_proj(cond.obj_tokens) * keep[:, None, None, None].to(x.dtype))
        edges = self.edges(cond, keep)
        for block in self.blocks:
            h = block(h, step_emb, given, edges, cond.obj_mask)
        return self.out(self.norm_out(h))


class LayoutModule(nn.Module):
    """What the layout stage trains and keeps: the denoiser and the relation scorer (one optimizer, one state)."""

    def __init__(self, denoiser: LayoutDenoiser, scorer: RelationScorer) -> None:
        super().__init__()
        self.denoiser, self.scorer = denoiser, scorer

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: LayoutBatch, drop_cond: torch.Tensor | None,
                full: LayoutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's prediction for the (relation-dropped) condition, and the scorer's loss on the full
        graphs and their boxes: one call, so DDP sees both parts."""
        predicted = self.denoiser(x_t, t, cond, drop_cond)
        scorer_loss = self.scorer.loss(from_model_space(full.boxes), full.classes, full.triples, full.triple_mask,
                                       full.has_box)
        return predicted, scorer_loss


def build_layout_module(layout_cfg, num_classes: int, num_predicates: int, cond_dim: int) -> LayoutModule:
    denoiser = LayoutDenoiser(num_classes, num_predicates, cond_dim, dim=int(layout_cfg.dim),
                              layers=int(layout_cfg.layers), heads=int(layout_cfg.heads),
                              edge_dim=int(layout_cfg.edge_dim))
    return LayoutModule(denoiser, RelationScorer(num_classes, num_predicates))

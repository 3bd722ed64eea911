"""Training the layout model: the denoising loss over box trajectories and the relation scorer's loss, on the
training data's own per-frame graphs and boxes.

Per clip of a batch (random draws from torch's global generator, which the training loop seeds and restores):
- a window length: the batch is cut to a random length from a quarter of the window to all of it;
- relation dropout: with probability `relation_dropout`, each pair of objects loses its triples in every frame,
  before the frozen encoder sees the graph, so that graphs a person writes (a few relations, not every pair)
  are in the training distribution;
- given boxes: with `prefix_prob` the first 1 .. W-1 frames are given (a window continuing a timeline), and with
  `given_prob` each object is given in every frame with probability 1/2 (a graph JSON with some boxes);
  given entries are clean (step 0) and left out of the loss;
- classifier-free guidance: with `cond_dropout` the clip's relations and encoder tokens are dropped.
One step t in [1, timesteps] per clip; the loss is the MSE of the predicted clean boxes (x0) over the entries
that are neither given nor missing in the data, plus the scorer's cross-entropy on the full graphs.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from sg2video.diffusion import GaussianDiffusion
from sg2video.encoder.graph_encoder import GraphEncoder
from sg2video.graphs import SceneGraph
from sg2video.layout.condition import LayoutBatch, encode_layout_batch
from sg2video.layout.model import LayoutModule


def collate_graphs(items: list[dict]) -> list[list[SceneGraph]]:
    """Dataset items -> their per-frame graph lists (the layout stage needs no pixels)."""
    return [item["graphs"] for item in items]


def drop_relations(clips: Sequence[Sequence[SceneGraph]], probability: float) -> list[list[SceneGraph]]:
    """Each clip, with `probability`, loses the triples of a random half of its object pairs in every frame."""
    out = []
    for clip in clips:
        if probability <= 0 or float(torch.rand(())) >= probability:
            out.append(list(clip))
            continue
        K = clip[0].num_objects
        dropped = torch.rand(K, K) < 0.5
        dropped = dropped | dropped.T  # a pair, whichever way round its triples point
        pruned = []
        for g in clip:
            keep = ~dropped[g.triples[:, 0], g.triples[:, 2]] if g.num_triples else torch.zeros(0, dtype=torch.bool)
            pruned.append(SceneGraph(g.objs, g.triples[keep], g.boxes, g.box_mask))
        out.append(pruned)
    return out


def shortest_window(window: int) -> int:
    """The shortest window the layout model trains on (and lays out without padding): a quarter of its own."""
    return max(1, window // 4)


def crop_window(clips: list[list[SceneGraph]]) -> list[list[SceneGraph]]:
    """The batch cut to one random length in [shortest_window(W), W] from a random start: the model learns every
    window length it is asked for (a 4-frame clip, a timeline's last window), and short steps are cheap."""
    W = len(clips[0])
    length = int(torch.randint(shortest_window(W), W + 1, ()))
    start = int(torch.randint(0, W - length + 1, ()))
    return [clip[start : start + length] for clip in clips]


def given_mask(cond: LayoutBatch, prefix_prob: float, given_prob: float) -> torch.Tensor:
    """(B, K, W) bool: the entries given to the model as clean boxes in this training batch."""
    B, K, W = cond.shape
    device = cond.has_box.device
    frames = torch.arange(W, device=device)
    prefix_len = torch.randint(1, max(2, W), (B,), device=device)
    with_prefix = (torch.rand(B, device=device) < prefix_prob) & (W > 1)
    given = (frames[None, :] < prefix_len[:, None]) & with_prefix[:, None]  # (B, W)
    given = given[:, None, :].expand(B, K, W)
    objects = (torch.rand(B, K, device=device) < 0.5) & (torch.rand(B, 1, device=device) < given_prob)
    objects &= ~(objects | ~cond.obj_mask).all(dim=1, keepdim=True)  # never every object of a clip
    return (given | objects[:, :, None]) & cond.has_box & cond.obj_mask[:, :, None]


class LayoutTask:
    """The loss of one batch of clips (what `train.loop.fit` calls)."""

    def __init__(self, module: LayoutModule, encoder: GraphEncoder, diffusion: GaussianDiffusion, cfg) -> None:
        self.model = module
        self.encoder = encoder
        self.diffusion = diffusion
        self.relation_dropout = float(cfg.relation_dropout)
        self.prefix_prob, self.given_prob = float(cfg.prefix_prob), float(cfg.given_prob)
        self.cond_dropout = float(cfg.cond_dropout)

    def loss(self, model, clips: list[list[SceneGraph]], step: int) -> dict[str, torch.Tensor]:
        module = getattr(model, "module", model)  # DDP wraps it
        device = next(module.parameters()).device
        clips = crop_window(clips)
        full = encode_layout_batch(None, clips, device)  # the data's graphs and boxes, for the scorer
        cond = encode_layout_batch(self.encoder, drop_relations(clips, self.relation_dropout), device)
        B, K, W = cond.shape
        x0 = cond.boxes
        given = given_mask(cond, self.prefix_prob, self.given_prob)
        steps = torch.randint(1, self.diffusion.timesteps + 1, (B,), device=device)
        t = torch.where(given, 0, steps[:, None, None])
        table = self.diffusion.schedule
        sqrt_ab = table.sqrt_alphas_cumprod.to(device=device, dtype=x0.dtype)[t][..., None]
        sqrt_1m = table.sqrt_one_minus_alphas_cumprod.to(device=device, dtype=x0.dtype)[t][..., None]
        noise = torch.randn_like(x0)
        x_t = torch.where(given[..., None], x0, sqrt_ab * x0 + sqrt_1m * noise)
        target = {"x0": x0, "eps": noise, "v": sqrt_ab * noise - sqrt_1m * x0}[self.diffusion.parameterization]
        drop = torch.rand(B, device=device) < self.cond_dropout
        predicted, scorer_loss = model(x_t, t, cond, drop, full)
        learn = (~given & cond.has_box & cond.obj_mask[:, :, None]).to(x0.dtype)
        error = F.mse_loss(predicted, target, reduction="none").mean(dim=-1)
        box_loss = (error * learn).sum() / learn.sum().clamp(min=1)
        return {"loss": box_loss + scorer_loss, "box_loss": box_loss.detach(), "scorer_loss": scorer_loss.detach()}

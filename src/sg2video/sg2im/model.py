"""The sg2im generator (Johnson et al. 2018), per frame, extended to clips: graph -> object vectors -> boxes and
soft masks -> scene layout -> cascaded refinement network (CRN) -> frames.

- Object vectors: each object's token from the graph encoder (frozen, or trained with the rest when
  `model.train_encoder`), projected, plus a learned class embedding.
- Box head (MLP, boxes regressed as x0, y0, x1, y1) and mask head (an MLP to 4 x 4, then 2x upsampling convs to
  `mask_size`, a sigmoid), as in the paper. Training paints the data's boxes (teacher forcing, as sg2im does);
  sampling paints given, sampled (the layout stage) or predicted boxes.
- The layout gets `noise_dim` channels of Gaussian noise (sg2im's layout noise), drawn once per clip so that a
  clip's frames share it.
- CRN: one module per resolution, doubling from size / 2^(n-1) to the frame size; each takes the layout
  (average-pooled to its scale) and the previous module's output (nearest-upsampled), two 3x3 convs with
  normalisation and leaky ReLU.
- Temporal consistency: every CRN module ends with a residual temporal convolution (kernel 3 across frames,
  zero-initialised, so training starts from sg2im's per-frame network). Chosen over feeding the previous frame
  back in: no exposure bias (training never sees its own frames, sampling would), and a timeline of any length is
  made in one pass with the same receptive field, with no chunk seams; the motion itself comes from the layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sg2video.denoiser import encode_condition
from sg2video.encoder.graph_encoder import GraphEncoder, rank_in_group
from sg2video.graphs import GraphBatch
from sg2video.sg2im.layout import splat_layout


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


@dataclass
class Objects:
    """A clip batch's objects, padded per frame: B clips, T frames, K objects."""

    classes: torch.Tensor  # (B, T, K) long
    vectors: torch.Tensor  # (B, T, K, D) the generator's object vectors
    boxes: torch.Tensor  # (B, T, K, 4) the graph's boxes (the encoder's box head where it has none)
    has_box: torch.Tensor  # (B, T, K) bool: the graph gives this object's box
    valid: torch.Tensor  # (B, T, K) bool: a real object, not padding


def padded_has_box(graphs: GraphBatch, batch: int, frames: int, k: int) -> torch.Tensor:
    out = torch.zeros(graphs.num_graphs, k, dtype=torch.bool, device=graphs.device)
    out[graphs.obj_to_graph, rank_in_group(graphs.obj_to_graph, graphs.num_graphs)] = graphs.has_box
    return out.reshape(batch, frames, k)


class MaskHead(nn.Module):
    """Object vector -> soft mask (mask_size x mask_size) in [0, 1]."""

    def __init__(self, dim: int, mask_size: int, groups: int) -> None:
        super().__init__()
        ups = (mask_size // 4).bit_length() - 1
        assert mask_size >= 4 and 4 * 2**ups == mask_size, "mask_size: 4 times a power of two"
        self.width = dim
        self.start = nn.Linear(dim, dim * 16)
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim, 3, padding=1),
                       _norm(dim, groups), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(dim, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        lead = vectors.shape[:-1]
        x = self.start(vectors.reshape(-1, vectors.shape[-1])).reshape(-1, self.width, 4, 4)
        x = self.net(x)
        return torch.sigmoid(x).reshape(*lead, x.shape[-2], x.shape[-1])


class BoxHead(nn.Module):
    """Object vector -> box (x0, y0, x1, y1), regressed (sg2im's box_net)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.net(vectors)


def usable_boxes(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Regressed boxes made drawable: corners in order, inside the frame, at least one pixel wide."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    lo_x, hi_x = torch.minimum(x0, x1).clamp(0, 1), torch.maximum(x0, x1).clamp(0, 1)
    lo_y, hi_y = torch.minimum(y0, y1).clamp(0, 1), torch.maximum(y0, y1).clamp(0, 1)
    pixel = 1.0 / size
    hi_x = torch.maximum(hi_x, lo_x + pixel)
    hi_y = torch.maximum(hi_y, lo_y + pixel)
    return torch.stack([lo_x, lo_y, hi_x, hi_y], dim=-1)


class CRNModule(nn.Module):
    """One refinement module: [layout at this scale, previous output upsampled] -> two 3x3 convs -> temporal conv."""

    def __init__(self, layout_dim: int, in_dim: int, out_dim: int, groups: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(layout_dim + in_dim, out_dim, 3, padding=1), _norm(out_dim, groups), nn.LeakyReLU(0.2),
            nn.Conv2d(out_dim, out_dim, 3, padding=1), _norm(out_dim, groups), nn.LeakyReLU(0.2))
        self.temporal = nn.Conv1d(out_dim, out_dim, 3, padding=1)
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)

    def forward(self, layout: torch.Tensor, prev: torch.Tensor | None, frames: int) -> torch.Tensor:
        """layout (B*T, Dl, h, w); prev (B*T, Cin, h/2, w/2) or None; -> (B*T, Cout, h, w)."""
        x = layout if prev is None else torch.cat([layout, F.interpolate(prev, scale_factor=2, mode="nearest")], 1)
        x = self.convs(x)
        n, c, h, w = x.shape
        seq = x.reshape(n // frames, frames, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, frames)
        mixed = self.temporal(seq).reshape(n // frames, h, w, c, frames).permute(0, 4, 3, 1, 2).reshape(n, c, h, w)
        return x + mixed


class CRN(nn.Module):
    """Cascaded refinement network: modules at doubling resolutions ending at `size`, then to RGB in [-1, 1]."""

    def __init__(self, layout_dim: int, dims: list[int], size: int, groups: int) -> None:
        super().__init__()
        self.size = size
        self.first = size // 2 ** (len(dims) - 1)
        assert self.first >= 1 and self.first * 2 ** (len(dims) - 1) == size, "size / 2^(len(dims)-1) must be whole"
        self.blocks = nn.ModuleList(
            CRNModule(layout_dim, dims[i - 1] if i else 0, dims[i], groups) for i in range(len(dims)))
        self.out = nn.Sequential(nn.Conv2d(dims[-1], dims[-1], 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(dims[-1], 3, 1))

    def forward(self, layout: torch.Tensor, frames: int) -> torch.Tensor:
        """layout (B*T, Dl, size, size) -> frames (B*T, 3, size, size) in [-1, 1]."""
        x = None
        for i, block in enumerate(self.blocks):
            scale = self.first * 2**i
            x = block(F.adaptive_avg_pool2d(layout, scale), x, frames)
        return torch.tanh(self.out(x))


class Sg2imGenerator(nn.Module):
    """Graphs -> frames, sg2im's way (see the module docstring)."""

    def __init__(self, encoder: GraphEncoder, num_classes: int, cond_dim: int, size: int, embed_dim: int = 64,
                 mask_size: int = 16, crn_dims: list[int] | None = None, noise_dim: int = 32,
                 box_hidden: int = 128, norm_groups: int = 8, train_encoder: bool = False) -> None:
        super().__init__()
        self.encoder, self.train_encoder = encoder, bool(train_encoder)
        self.encoder.requires_grad_(self.train_encoder)
        self.size, self.noise_dim = int(size), int(noise_dim)
        self.project = nn.Linear(cond_dim, embed_dim)
        self.class_embed = nn.Embedding(num_classes, embed_dim)
        self.box_head = BoxHead(embed_dim, box_hidden)
        self.mask_head = MaskHead(embed_dim, mask_size, norm_groups)
        self.crn = CRN(embed_dim + noise_dim, list(crn_dims or [128, 64, 32, 16]), self.size, norm_groups)

    def train(self, mode: bool = True) -> "Sg2imGenerator":
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()  # frozen: always in inference mode
        return self

    def objects(self, graphs: GraphBatch, batch: int, frames: int) -> Objects:
        cond = encode_condition(self.encoder, graphs, batch, frames, "given", grad=self.train_encoder)
        vectors = self.project(cond.obj_tokens) + self.class_embed(cond.obj_classes)
        k = cond.obj_classes.shape[-1]
        return Objects(cond.obj_classes, vectors, cond.layout_boxes, padded_has_box(graphs, batch, frames, k),
                       cond.layout_mask)

    def noise(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """sg2im's layout noise, one draw per clip: (B, noise_dim, size, size)."""
        return torch.randn(batch, self.noise_dim, self.size, self.size, device=device, generator=generator)

    def render(self, vectors: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
        """Object vectors (B, T, K, D), masks (B, T, K, m, m), boxes (B, T, K, 4), valid (B, T, K) and noise
        (B, Dn, S, S) -> video (B, 3, T, S, S) in [-1, 1]."""
        batch, frames = vectors.shape[:2]
        layout = splat_layout(vectors, masks, boxes, valid, self.size, self.size)  # (B, T, D, S, S)
        layout = torch.cat([layout, noise[:, None].expand(-1, frames, -1, -1, -1)], dim=2)
        out = self.crn(layout.flatten(0, 1), frames)  # (B*T, 3, S, S)
        return out.reshape(batch, frames, 3, self.size, self.size).transpose(1, 2)

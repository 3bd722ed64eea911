"""sg2im's discriminators and the adversarial objective, as one module the shared training loop can run.

- Image discriminator: a patch discriminator on every frame (4x4 stride-2 convs, a 1x1 conv to one logit per
  patch), as sg2im's `C4-64-2,C4-128-2,C4-256-2` at CPU widths.
- Object discriminator: object crops (at the data's boxes, `crop_size` square) through a conv stack, average
  pooled, to a real/fake logit and an auxiliary classifier over the object classes (sg2im's AC discriminator).

`Sg2imPair.forward` returns every loss term of one batch. The generator's and the discriminators' terms are
summed into one loss whose gradients never cross: the generator's adversarial terms score its frames with the
discriminators' weights detached (`torch.func.functional_call`), and the discriminators score the frames
detached from the generator. One backward pass then gives each side exactly the gradient of its own loss, on
the same batch and the same weights, which is what sg2im's alternating steps compute (its discriminator step
scores the frames made before the generator's update). So one AdamW over both (the loop's optimizer; Adam is
per-parameter, so two optimizers with the same settings would update identically, except that gradient
clipping, `train.grad_clip`, sees both sides' norm together) trains the pair, and resume, DDP, EMA and the NaN
guard are the loop's own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sg2video.graphs import GraphBatch
from sg2video.sg2im.layout import border_colour, crop_boxes, foreground_masks
from sg2video.sg2im.model import Sg2imGenerator

# sg2im's defaults (train.py): generator terms; the GAN terms of the generator are also scaled by `gan`
PAPER_WEIGHTS = {"l1": 1.0, "box": 10.0, "mask": 0.0, "gan": 0.01, "img": 1.0, "obj": 1.0, "ac": 0.1}


def _conv_stack(in_ch: int, widths: list[int], groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Conv2d(in_ch, width, 4, stride=2, padding=1))
        if i:
            layers.append(nn.GroupNorm(min(groups, width), width))
        layers.append(nn.LeakyReLU(0.2))
        in_ch = width
    return nn.Sequential(*layers)


class PatchDiscriminator(nn.Module):
    def __init__(self, widths: list[int], groups: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv_stack(3, widths, groups), nn.Conv2d(widths[-1], 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) -> patch logits (N, 1, h, w)."""
        return self.net(frames)


class ObjectDiscriminator(nn.Module):
    def __init__(self, num_classes: int, widths: list[int], groups: int = 8) -> None:
        super().__init__()
        self.features = _conv_stack(3, widths, groups)
        self.real = nn.Linear(widths[-1], 1)
        self.classify = nn.Linear(widths[-1], num_classes)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """crops (N, 3, c, c) -> (real/fake logits (N,), class logits (N, classes))."""
        h = self.features(crops).mean(dim=(2, 3))
        return self.real(h)[:, 0], self.classify(h)


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _detached(module: nn.Module, *args):
    """`module(*args)` with its parameters detached: gradients reach the inputs, never the module."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args)


class Sg2imPair(nn.Module):
    """The generator and its two discriminators; `forward(video, graphs)` -> the loss terms of one batch."""

    def __init__(self, generator: Sg2imGenerator, num_classes: int, img_widths: list[int],
                 obj_widths: list[int], crop_size: int = 16, weights: dict | None = None, groups: int = 8) -> None:
        super().__init__()
        self.generator = generator
        self.img_d = PatchDiscriminator(img_widths, groups)
        self.obj_d = ObjectDiscriminator(num_classes, obj_widths, groups)
        self.crop_size = int(crop_size)
        self.weights = {**PAPER_WEIGHTS, **(weights or {})}

    def forward(self, video: torch.Tensor, graphs: GraphBatch) -> dict[str, torch.Tensor]:
        """video (B, 3, T, H, W) in [-1, 1]; graphs: its B*T frame graphs (b-major). Every term is a scalar;
        `loss` is what the loop minimises."""
        g, w = self.generator, self.weights
        batch, frames = video.shape[0], video.shape[2]
        objs = g.objects(graphs, batch, frames)
        box_pred = g.box_head(objs.vectors)
        masks = g.mask_head(objs.vectors)
        # teacher forcing, as sg2im trains: the data's boxes are painted, the predicted ones only regressed
        fake = g.render(objs.vectors, masks, objs.boxes, objs.valid, g.noise(batch, video.device))

        supervised = objs.valid & objs.has_box  # (B, T, K)
        frame_of = torch.arange(batch * frames, device=video.device).reshape(batch, frames, 1).expand_as(supervised)
        frame_index, boxes, classes = frame_of[supervised], objs.boxes[supervised], objs.classes[supervised]
        real_frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        fake_frames = fake.transpose(1, 2).flatten(0, 1)
        real_crops = crop_boxes(real_frames, boxes, frame_index, self.crop_size)
        fake_crops = crop_boxes(fake_frames, boxes, frame_index, self.crop_size)
        mask_size = masks.shape[-1]
        mask_target = foreground_masks(crop_boxes(real_frames, boxes, frame_index, mask_size),
                                       border_colour(real_frames)[frame_index])

        terms: dict[str, torch.Tensor] = {}
        terms["l1"] = (fake - video).abs().mean()
        terms["box"] = F.mse_loss(box_pred[supervised], boxes) if boxes.numel() else box_pred.sum() * 0
        terms["mask"] = (F.binary_cross_entropy(masks[supervised].clamp(1e-6, 1 - 1e-6), mask_target)
                         if boxes.numel() else masks.sum() * 0)
        terms["g_img"] = _bce(_detached(self.img_d, fake_frames), True)
        if boxes.numel():
            real_logit, class_logits = _detached(self.obj_d, fake_crops)
            terms["g_obj"] = _bce(real_logit, True)
            terms["g_ac"] = F.cross_entropy(class_logits, classes)
        else:
            terms["g_obj"] = terms["g_ac"] = fake.sum() * 0
        generator_loss = (w["l1"] * terms["l1"] + w["box"] * terms["box"] + w["mask"] * terms["mask"]
                          + w["gan"] * (w["img"] * terms["g_img"] + w["obj"] * terms["g_obj"]) + w["ac"] * terms["g_ac"])

        fake_frames_d, fake_crops_d = fake_frames.detach(), fake_crops.detach()
        terms["d_img"] = _bce(self.img_d(real_frames), True) + _bce(self.img_d(fake_frames_d), False)
        real_out, fake_out = self.obj_d(real_crops), self.obj_d(fake_crops_d)
        if boxes.numel():
            terms["d_obj"] = _bce(real_out[0], True) + _bce(fake_out[0], False)
            terms["d_ac"] = F.cross_entropy(real_out[1], classes) + F.cross_entropy(fake_out[1], classes)
        else:
            zero = sum(p.sum() for p in self.obj_d.parameters()) * 0
            terms["d_obj"] = terms["d_ac"] = zero
        terms["loss"] = generator_loss + terms["d_img"] + terms["d_obj"] + terms["d_ac"]
        terms["generator_loss"] = generator_loss.detach()
        return terms

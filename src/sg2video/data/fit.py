"""Fitting frames of any aspect ratio into `size x size`, and moving boxes with them.

Three modes (`resize` in the data configs):
- `crop`: scale so the shorter side is `size`, cut the centre square (what falls outside is lost);
- `pad`: scale so the longer side is `size`, centre it on black (nothing is lost);
- `stretch`: scale each side to `size` independently (sg2im's behaviour; distorts shapes).

Boxes are `(x0, y0, x1, y1)` normalised to the source frame. `FitGeometry.boxes` maps them into the
output frame with the exact integer scaling and offsets the pixels get, clips them to [0, 1], and says
which survive: a box whose clipped area is zero (it lay wholly outside the crop) has vanished.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sg2video.errors import ConfigError

RESIZE_MODES = ("crop", "pad", "stretch")


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ConfigError(f"data.resize={mode!r} is not a resize mode (accepted: {', '.join(RESIZE_MODES)})")
    return mode


@dataclass(frozen=True)
class FitGeometry:
    """How a `width x height` frame becomes `size x size`: scaled to `scaled_w x scaled_h` pixels,
    then shifted by `(shift_x, shift_y)` pixels (negative: cropped away, positive: padding)."""

    width: int
    height: int
    size: int
    mode: str
    scaled_w: int
    scaled_h: int
    shift_x: int
    shift_y: int

    @classmethod
    def make(cls, width: int, height: int, size: int, mode: str) -> "FitGeometry":
        check_resize_mode(mode)
        assert width > 0 and height > 0 and size > 0, "frame and output sides must be positive"
        if mode == "stretch":
            return cls(width, height, size, mode, size, size, 0, 0)
        if mode == "crop":
            scale = size / min(width, height)
            sw, sh = max(size, round(width * scale)), max(size, round(height * scale))
            return cls(width, height, size, mode, sw, sh, -((sw - size) // 2), -((sh - size) // 2))
        scale = size / max(width, height)
        sw, sh = min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale)))
        return cls(width, height, size, mode, sw, sh, (size - sw) // 2, (size - sh) // 2)

    def frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) source frames -> uint8 (T, 3, size, size)."""
        assert frames.ndim == 4 and frames.shape[1:] == (self.height, self.width, 3), (
            f"expected frames (T, {self.height}, {self.width}, 3), got {frames.shape}"
        )
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else frames.copy()  # torch wants writable
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        if (self.scaled_h, self.scaled_w) != (self.height, self.width):
            video = F.interpolate(video, size=(self.scaled_h, self.scaled_w), mode="bilinear",
                                  align_corners=False, antialias=True)
        video = video.round_().clamp_(0, 255).to(torch.uint8)
        out = torch.zeros(video.shape[0], 3, self.size, self.size, dtype=torch.uint8)
        # source rectangle of the scaled frame and its place in the output
        x0, y0 = max(0, -self.shift_x), max(0, -self.shift_y)
        ox, oy = max(0, self.shift_x), max(0, self.shift_y)
        w = min(self.scaled_w - x0, self.size - ox)
        h = min(self.scaled_h - y0, self.size - oy)
        out[:, :, oy : oy + h, ox : ox + w] = video[:, :, y0 : y0 + h, x0 : x0 + w]
        return out

    def boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised source boxes (N, 4) -> normalised output boxes (N, 4) clipped to [0, 1], and a
        bool (N,) mask of the boxes that keep a positive area in the output."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scaled_w, self.scaled_h, self.scaled_w, self.scaled_h], dtype=np.float64)
        shift = np.array([self.shift_x, self.shift_y, self.shift_x, self.shift_y], dtype=np.float64)
        out = np.clip((boxes * scale + shift) / self.size, 0.0, 1.0)
        kept = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out.astype(np.float32), kept


def xywh_to_norm_xyxy(xywh: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel boxes (N, 4) `x, y, w, h` -> `(x0, y0, x1, y1)` normalised by the frame size, in [0, 1]."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return np.clip(xyxy / np.array([width, height, width, height], dtype=np.float64), 0.0, 1.0)

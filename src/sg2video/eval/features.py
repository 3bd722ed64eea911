"""Feature extractors for the fidelity metrics (sg2video.eval.fidelity), and the video inputs they take.

Each extractor has a `name` (written next to every number it produced) and gives frame features (N*T, D) and
video features (N, D) of uint8 videos (N, T, H, W, 3): `PixelStatsFeatures` (no training, a baseline),
`EncoderFeatures` (the project's own video encoder), `LocalInceptionFeatures` (torchvision Inception-v3 with a
local state dict: FID / KID) and `LocalI3DFeatures` (cd-fvd's I3D with a local state dict: FVD; video features
only). Nothing is ever downloaded.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sg2video.errors import UserError
from sg2video.video_io import as_thwc_uint8


VideoInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Inputs


_as_thwc = as_thwc_uint8


def _clips(videos: VideoInput) -> list[np.ndarray]:
    """The clips of `videos` as uint8 (T, H, W, 3) arrays (shapes may differ between clips)."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim != 5:
            raise ValueError(f"videos must be (N, T, H, W, 3) or (N, T, 3, H, W), got shape {tuple(videos.shape)}")
        return [_as_thwc(clip) for clip in videos]
    return [_as_thwc(clip) for clip in videos]


def as_videos(videos: VideoInput) -> np.ndarray:
    """uint8 (N, T, H, W, 3) from an array / tensor (N, T, H, W, 3) or (N, T, 3, H, W), or a list of clips."""
    clips = _clips(videos)
    if not clips:
        raise ValueError("no videos")
    shapes = {clip.shape for clip in clips}
    if len(shapes) > 1:
        raise ValueError(f"videos of one set must share their shape, got {sorted(shapes)}")
    return np.stack(clips)


def _float01(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)


def _temporal_summary(frame_features: torch.Tensor, num_videos: int) -> torch.Tensor:
    """Per-video features from per-frame ones (N*T, D): their mean over time and mean absolute change
    between consecutive frames (zero for one-frame clips), concatenated: (N, 2D)."""
    per_video = rearrange(frame_features, "(n t) d -> n t d", n=num_videos)
    change = per_video.diff(dim=1).abs().mean(dim=1) if per_video.shape[1] > 1 else torch.zeros_like(per_video[:, 0])
    return torch.cat([per_video.mean(dim=1), change], dim=1)


# ----------------------------------------------------------------------------------------------
# Feature extractors


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the fidelity metrics need from a feature extractor.

    `frame_features`: uint8 (N, T, H, W, 3) -> (N*T, D) float, frames in video-major order.
    `video_features`: uint8 (N, T, H, W, 3) -> (N, D') float.
    An extractor may also offer `features(videos) -> (frame_features, video_features)` computing both in
    one pass; `fidelity_metrics` uses it when present.
    """

    name: str

    def frame_features(self, videos: np.ndarray) -> torch.Tensor: ...

    def video_features(self, videos: np.ndarray) -> torch.Tensor: ...


class _BothAtOnce(abc.ABC):
    """Base for extractors whose `features` computes frame and video features in one pass."""

    name: str

    @abc.abstractmethod
    def features(self, videos: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame features (N*T, D), video features (N, D'))."""

    def frame_features(self, videos: VideoInput) -> torch.Tensor:
        return self.features(videos)[0]

    def video_features(self, videos: VideoInput) -> torch.Tensor:
        return self.features(videos)[1]


class PixelStatsFeatures(_BothAtOnce):
    """A deterministic baseline without weights.

    Frame features (3 g^2 + 3 b): the frame average-pooled to a g x g grid (layout and colour) and each
    channel's histogram in b bins (the colour distribution, as fractions of the frame's pixels), all in [0, 1].
    Video features: their mean over time and their mean absolute change between frames (motion).
    """

    def __init__(self, grid: int = 4, bins: int = 8) -> None:
        assert grid >= 1 and bins >= 2, "grid >= 1 and bins >= 2"
        self.grid, self.bins = grid, bins
        self.name = f"pixel-stats(grid={grid},bins={bins})"

    def features(self, videos: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        videos = as_videos(videos)
        N, T, H, W, _ = videos.shape
        frames = videos.reshape(N * T, H, W, 3)
        pooled = F.adaptive_avg_pool2d(_float01(frames), self.grid).flatten(1)  # (F, 3 g^2)
        bin_of = torch.from_numpy(frames.astype(np.int64) * self.bins // 256)  # (F, H, W, 3)
        channel_offset = torch.arange(3) * self.bins
        flat = (bin_of + channel_offset).reshape(N * T, -1)  # (F, H*W*3): bin ids, one range per channel
        counts = torch.zeros(N * T, 3 * self.bins).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
        frame_feats = torch.cat([pooled, counts / (H * W)], dim=1).double()
        return frame_feats, _temporal_summary(frame_feats, N)


EmbedOutput = tuple[torch.Tensor, torch.Tensor]


class EncoderFeatures(_BothAtOnce):
    """The project's own video encoder as the feature network.

    `embed`: a module or callable mapping video (B, 3, T, H, W) float in [-1, 1] to frame vectors (B, T, D)
    and a clip vector (B, D), as a tuple or as an object with `.frame_vecs` and `.clip_vec` (the
    `VideoEncoder`'s `VideoEncoding`). Frames are resized to `image_size` when given (default: the
    encoder's own input size when it can be read from `embed.vit.patch_embed.img_size`). `name` goes into the
    metrics, e.g. "sg2video-video-encoder@outputs/.../checkpoints/encoder/last.pt".
    """

    def __init__(
        self,
        embed: nn.Module | Callable[[torch.Tensor], EmbedOutput],
        name: str = "sg2video-video-encoder",
        image_size: int | None = None,
        batch_size: int = 16,
        device: torch.device | str | None = None,
    ) -> None:
        self.embed = embed
        self.name = name
        self.image_size = image_size if image_size is not None else _encoder_image_size(embed)
        self.batch_size = batch_size
        if device is None:
            params = list(embed.parameters()) if isinstance(embed, nn.Module) else []
            device = params[0].device if params else "cpu"
        self.device = torch.device(device)

    def _embed(self, video: torch.Tensor) -> EmbedOutput:
        out = self.embed(video)
        if hasattr(out, "frame_vecs") and hasattr(out, "clip_vec"):
            return out.frame_vecs, out.clip_vec
        frame_vecs, clip_vec = out
        return frame_vecs, clip_vec

    @torch.inference_mode()
    def features(self, videos: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        videos = as_videos(videos)
        N, T = videos.shape[:2]
        was_training = isinstance(self.embed, nn.Module) and self.embed.training
        if was_training:
            self.embed.eval()
        try:
            frame_parts, clip_parts = [], []
            for start in range(0, N, self.batch_size):
                chunk = videos[start : start + self.batch_size]
                frames = _float01(chunk.reshape(-1, *chunk.shape[2:])).to(self.device)
                if self.image_size is not None and frames.shape[-1] != self.image_size:
                    frames = _resize(frames, self.image_size)
                video = rearrange(frames * 2.0 - 1.0, "(b t) c h w -> b c t h w", t=T)
                frame_vecs, clip_vec = self._embed(video)
                assert frame_vecs.shape[:2] == (len(chunk), T), f"frame vectors must be (B, T, D): {frame_vecs.shape}"
                frame_parts.append(frame_vecs.reshape(len(chunk) * T, -1).double().cpu())
                clip_parts.append(clip_vec.reshape(len(chunk), -1).double().cpu())
        finally:
            if was_training:
                self.embed.train()
        return torch.cat(frame_parts), torch.cat(clip_parts)


def _encoder_image_size(embed: object) -> int | None:
    size = getattr(getattr(getattr(embed, "vit", None), "patch_embed", None), "img_size", None)
    if isinstance(size, (tuple, list)) and size:
        return int(size[0])
    return int(size) if isinstance(size, int) else None


class LocalInceptionFeatures(_BothAtOnce):
    """torchvision's Inception-v3 (architecture only, `weights=None`) with a local state dict.

    `weights_file`: a torchvision `inception_v3` state dict (.pth / .pt, loadable with weights_only=True;
    with or without the auxiliary classifier). Frames are resized to 299 x 299 and scaled to [-1, 1] (what
    torchvision's `transform_input` makes of ImageNet-normalised input). Frame features: the 2048-d pooled
    features; video features: their mean over time and mean absolute change between frames.
    A missing or unfitting file is a UserError naming `eval.fid_weights`; nothing is downloaded.
    """

    input_size = 299

    def __init__(self, weights_file: str | Path, batch_size: int = 16, device: torch.device | str = "cpu") -> None:
        from torchvision.models.inception import Inception3

        path = Path(weights_file)
        where = f"eval.fid_weights={str(weights_file)!r}"
        if not path.is_file():
            raise UserError(f"{where}: no such file (expected a local inception_v3 state dict; nothing is downloaded)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's file
            raise UserError(f"{where}: cannot load it as a state dict ({err.__class__.__name__})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{where}: not a state dict (expected a mapping of parameter names to tensors)")
        aux = any(key.startswith("AuxLogits.") for key in state)
        model = Inception3(aux_logits=aux, transform_input=False, init_weights=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
            raise UserError(f"{where}: does not fit torchvision's inception_v3 ({detail[:200]})") from None
        model.fc = nn.Identity()  # keep the 2048-d pool features
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"inception:{path.name}"

    @torch.inference_mode()
    def features(self, videos: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        videos = as_videos(videos)
        N, T = videos.shape[:2]
        frames = videos.reshape(N * T, *videos.shape[2:])
        parts = []
        for start in range(0, len(frames), self.batch_size):
            batch = _float01(frames[start : start + self.batch_size]).to(self.device)
            batch = _resize(batch, self.input_size)
            parts.append(self.model(batch * 2.0 - 1.0).double().cpu())
        frame_feats = torch.cat(parts)
        return frame_feats, _temporal_summary(frame_feats, N)


class LocalI3DFeatures:
    """FVD's I3D (cd-fvd's `InceptionI3d`, 400 Kinetics classes) with a local state dict; nothing is downloaded.

    `weights_file`: a state dict of that network (e.g. the `i3d_pretrained_400.pt` cd-fvd and TATS use). Videos
    are resized to 224 x 224, scaled to [-1, 1] (cd-fvd's preprocessing) and, when shorter than `min_frames`,
    looped in time to that length (I3D's temporal pooling needs at least 9 frames; FVD is usually taken on 16).
    Features: the 400 logits, as FVD defines them. A missing or unfitting file is a UserError naming
    `eval.fvd_weights`.
    """

    min_frames = 16

    def __init__(self, weights_file: str | Path, batch_size: int = 4, device: torch.device | str = "cpu") -> None:
        from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

        path = Path(weights_file)
        where = f"eval.fvd_weights={str(weights_file)!r}"
        if not path.is_file():
            raise UserError(f"{where}: no such file (expected a local I3D state dict; nothing is downloaded)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's file
            raise UserError(f"{where}: cannot load it as a state dict ({err.__class__.__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{where}: not a state dict (expected a mapping of parameter names to tensors)")
        model = InceptionI3d(400, in_channels=3)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
            raise UserError(f"{where}: does not fit cd-fvd's InceptionI3d ({detail[:200]})") from None
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"i3d:{path.name}"

    @torch.inference_mode()
    def video_features(self, videos: VideoInput) -> torch.Tensor:
        from cdfvd.third_party.i3d.utils import preprocess_i3d

        videos = as_videos(videos)
        frames = videos.shape[1]
        if frames < self.min_frames:
            videos = videos[:, np.arange(self.min_frames) % frames]
        parts = []
        for start in range(0, len(videos), self.batch_size):
            batch = preprocess_i3d(videos[start : start + self.batch_size]).to(self.device)
            parts.append(self.model(batch).double().cpu())
        return torch.cat(parts)



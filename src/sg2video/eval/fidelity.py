"""Fidelity of generated videos against real ones: FID and KID per frame, a video-level Frechet distance.

The metrics are only as good as the features they compare, so the feature extractor is pluggable and its
`name` is written next to the numbers (`features` in the metrics):
- `LocalInceptionFeatures(weights_file)`: torchvision's Inception-v3 with a local state dict (`eval.fid_weights`);
  nothing is ever downloaded. Frame features are the 2048-d pool features.
- `EncoderFeatures(embed)`: the project's own trained video encoder (frame vectors and a clip vector).
- `PixelStatsFeatures()`: downsampled pixels and colour histograms; deterministic, needs no training. A baseline
  for tests and for runs that have nothing better; only comparable with itself.
- `LocalI3DFeatures(weights_file)`: the I3D network of the maintained `cd-fvd` package (its `InceptionI3d`, the
  Kinetics-400 I3D that FVD is defined with) with a local state dict (`eval.fvd_weights`): `fvd_metrics`.
The names say which features were used: `fid_frame` / `kid_frame_*` only with Inception features, otherwise
`fd_frame` / `kd_frame_*` (a Frechet / kernel distance in the named features); `fvd` only with I3D features,
`fd_video` for the video-level distance of the frame extractor's own video features. Numbers from different
extractors (or different encoder checkpoints) are not comparable.

Frame metrics use torchmetrics (`FrechetInceptionDistance`, `KernelInceptionDistance`) on features computed
once per set and handed to torchmetrics through an identity "feature network"; the video-level distance
(`fd_video`, FVD-like: the Frechet distance of per-video features) uses `frechet_distance`, which takes the
matrix square root by symmetric eigen-decomposition (stable for the rank-deficient covariances of a few dozen
videos). Frechet distances are biased by the sample size: compare runs at the same number of videos.

Videos at the edges are uint8 (N, T, H, W, 3) (numpy or torch; (N, T, 3, H, W) and lists of clips are accepted).
"""
from __future__ import annotations

import abc

import math
import warnings
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from sg2video.errors import UserError
from sg2video.video_io import as_thwc_uint8

__all__ = [
    "FeatureExtractor",
    "PixelStatsFeatures",
    "EncoderFeatures",
    "LocalInceptionFeatures",
    "LocalI3DFeatures",
    "as_videos",
    "fidelity_metrics",
    "fvd_metrics",
    "frechet_distance",
    "temporal_consistency",
    "temporal_metrics",
]

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


def fvd_metrics(real_videos: VideoInput, fake_videos: VideoInput, extractor: LocalI3DFeatures) -> dict:
    """FVD: the Frechet distance of I3D logits of fake vs real videos (`fvd`), with the features' name and the
    frame count the videos had (`fvd_frames`; shorter clips are looped to 16 frames)."""
    real, fake = as_videos(real_videos), as_videos(fake_videos)
    return {"fvd": frechet_distance(extractor.video_features(real), extractor.video_features(fake)),
            "fvd_features": extractor.name, "fvd_frames": int(real.shape[1])}


# ----------------------------------------------------------------------------------------------
# Distances


class _GivenFeatures(nn.Module):
    """Identity "feature network" for torchmetrics: features are computed beforehand, once per set."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        assert features.ndim == 2 and features.shape[1] == self.num_features, f"features {tuple(features.shape)}"
        return features


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 are rounding: clamped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D), (N_b, D); NaN under 2 rows.

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), in float64; the last trace
    equals tr((S_a S_b)^1/2) but stays symmetric, so eigenvalues are real and the result is stable.
    """
    a, b = features_a.double(), features_b.double()
    assert a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1], f"features {tuple(a.shape)} vs {tuple(b.shape)}"
    if len(a) < 2 or len(b) < 2:
        return math.nan
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    value = (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(0.0, float(value))


def _torchmetrics_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    if len(real) < 2 or len(fake) < 2:
        return math.nan
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]), normalize=True, sync_on_compute=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(0.0, float(metric.compute()))  # tiny negatives are rounding of a zero distance


def _torchmetrics_kid(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, seed: int
) -> tuple[float, float]:
    with warnings.catch_warnings():  # it warns that it keeps every feature: these are a few thousand rows
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_GivenFeatures(real.shape[1]), subsets=subsets, subset_size=subset_size, normalize=True,
            sync_on_compute=False,  # eval runs on rank 0 alone
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # subsets are drawn with the global RNG: make them repeatable
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def is_inception(extractor: object) -> bool:
    """Whether FID / KID may carry their names: the extractor is Inception-v3 (`LocalInceptionFeatures`)."""
    return str(getattr(extractor, "name", "")).startswith("inception:")


def _extract(extractor: FeatureExtractor, videos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    both = getattr(extractor, "features", None)
    if callable(both):
        frame_feats, video_feats = both(videos)
    else:
        frame_feats, video_feats = extractor.frame_features(videos), extractor.video_features(videos)
    N, T = videos.shape[:2]
    assert frame_feats.ndim == 2 and len(frame_feats) == N * T, f"frame features must be (N*T, D): {frame_feats.shape}"
    assert video_feats.ndim == 2 and len(video_feats) == N, f"video features must be (N, D): {video_feats.shape}"
    return frame_feats.double().cpu(), video_feats.double().cpu()


def fidelity_metrics(
    real_videos: VideoInput,
    fake_videos: VideoInput,
    extractor: FeatureExtractor,
    kid_subset_size: int = 100,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """FID and KID over all frames, and the Frechet distance of per-video features, of fake vs real videos.

    Returns `fid_frame`, `kid_frame_mean`, `kid_frame_std` with Inception features (`fd_frame`, `kd_frame_mean`,
    `kd_frame_std` with any other), `fd_video` (floats; NaN where a set has fewer than 2 frames / videos),
    `kid_subset_size` (the one used: at most the smaller set's frame count) and `features` (the extractor's
    name). KID subsets are drawn with a fixed `seed`, so a call is repeatable.
    """
    real, fake = as_videos(real_videos), as_videos(fake_videos)
    real_frames, real_video = _extract(extractor, real)
    fake_frames, fake_video = _extract(extractor, fake)
    subset = min(kid_subset_size, len(real_frames), len(fake_frames))
    kid_mean, kid_std = math.nan, math.nan
    if subset >= 2:
        kid_mean, kid_std = _torchmetrics_kid(real_frames, fake_frames, subset, kid_subsets, seed)
    fid, kid = ("fid", "kid") if is_inception(extractor) else ("fd", "kd")
    return {
        f"{fid}_frame": _torchmetrics_fid(real_frames, fake_frames),
        f"{kid}_frame_mean": kid_mean,
        f"{kid}_frame_std": kid_std,
        "fd_video": frechet_distance(real_video, fake_video),
        "kid_subset_size": subset,
        "features": extractor.name,
    }


# ----------------------------------------------------------------------------------------------
# Temporal consistency


def temporal_consistency(videos: VideoInput) -> float:
    """Mean absolute change between consecutive frames, in [0, 1] (pixel values / 255), over all videos.

    0 for static videos; it grows with motion and with flicker. NaN when no video has two frames.
    """
    total, count = 0.0, 0
    for clip in _clips(videos):
        if len(clip) < 2:
            continue
        change = np.abs(np.diff(clip.astype(np.int16), axis=0))
        total += float(change.sum(dtype=np.int64)) / 255.0
        count += change.size
    return total / count if count else math.nan


def temporal_metrics(real_videos: VideoInput, fake_videos: VideoInput) -> dict[str, float]:
    """`temporal_change` of the generated videos, `temporal_change_gt` of the real ones, and their ratio
    `temporal_change_ratio` (1: as much change as the ground truth; above: flicker or too fast; below: too
    static; NaN when the ground truth does not change)."""
    fake, real = temporal_consistency(fake_videos), temporal_consistency(real_videos)
    ratio = fake / real if real and not math.isnan(real) else math.nan
    return {"temporal_change": fake, "temporal_change_gt": real, "temporal_change_ratio": ratio}

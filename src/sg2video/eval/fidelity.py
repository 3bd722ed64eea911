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

import math
import warnings

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from sg2video.eval.features import (
    EncoderFeatures,
    FeatureExtractor,
    LocalI3DFeatures,
    LocalInceptionFeatures,
    PixelStatsFeatures,
    VideoInput,
    _clips,
    as_videos,
)

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

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), in float64. With few rows (the
    usual case for videos: N_a N_b < D^2) the last trace is the sum of the singular values of A B^T, A and B the
    centred rows, over sqrt((N_a - 1)(N_b - 1)): the nonzero eigenvalues of S_a S_b are those of (A B^T)(A B^T)^T
    over that product, so no D x D matrix is formed. Otherwise it goes through the symmetric square root of S_a,
    so eigenvalues stay real and the result is stable.
    """
    a, b = features_a.double(), features_b.double()
    assert a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1], f"features {tuple(a.shape)} vs {tuple(b.shape)}"
    if len(a) < 2 or len(b) < 2:
        return math.nan
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    traces = centred_a.square().sum() / scale_a + centred_b.square().sum() / scale_b
    if len(a) * len(b) < a.shape[1] ** 2:
        cross = torch.linalg.svdvals(centred_a @ centred_b.T).sum() / math.sqrt(scale_a * scale_b)
    else:
        cov_a, cov_b = centred_a.T @ centred_a / scale_a, centred_b.T @ centred_b / scale_b
        root_a = _sqrtm_psd(cov_a)
        inner = root_a @ cov_b @ root_a
        cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    value = (a.mean(0) - b.mean(0)).square().sum() + traces - 2 * cross
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

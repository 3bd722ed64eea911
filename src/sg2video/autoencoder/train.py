"""Training the frame autoencoder with the shared loop, and loading it back from its checkpoint alone.

`train_autoencoder` runs `sg2video.train.loop.fit` as stage "autoencoder" on a dataset of clips (any
dataset following sg2video.data.clips' item contract), then fits the latent scale factor on a batch of
training clips and re-saves the final checkpoint with it. The checkpoint holds `autoencoder_config`
(the model's constructor arguments as a plain dict) beside the weights, so `load_autoencoder(path)`
needs nothing else.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch

from sg2video.logs import say
from sg2video.autoencoder.model import FrameAutoencoder
from sg2video.data.clips import video_to_model
from sg2video.errors import ConfigError
from sg2video.train import checkpoint as ckpt
from sg2video.train.distributed import DistInfo, barrier
from sg2video.train.loop import FitResult, LoopConfig, fit

STAGE = "autoencoder"
# config key -> FrameAutoencoder argument (the config says `channels`, the constructor `base_channels`)
_MODEL_KEYS = {
    "channels": "base_channels",
    "channel_mults": "channel_mults",
    "latent_channels": "latent_channels",
    "downsample": "downsample",
    "num_res_blocks": "num_res_blocks",
    "kl_weight": "kl_weight",
    "l1_weight": "l1_weight",
    "l2_weight": "l2_weight",
    "foreground_weight": "foreground_weight",
}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def build_autoencoder(cfg: Any, in_channels: int = 3) -> FrameAutoencoder:
    """A FrameAutoencoder from the `autoencoder` config group (a DictConfig or a plain dict)."""
    kwargs = {arg: _get(cfg, key) for key, arg in _MODEL_KEYS.items() if _get(cfg, key) is not None}
    if "channel_mults" in kwargs:
        kwargs["channel_mults"] = [int(m) for m in kwargs["channel_mults"]]
    return FrameAutoencoder(in_channels=in_channels, **kwargs)


def autoencoder_loop_config(cfg: Any, **overrides) -> LoopConfig:
    """LoopConfig from `autoencoder.train` alone (callers that merge `train`'s shared keys build their own)."""
    train = _get(cfg, "train")
    return LoopConfig.from_cfg(train if train is not None else {}, **overrides)


class FrameSampler:
    """Collate for autoencoder training: `frames_per_clip` random frames of each clip, as (B, 3, k, H, W)
    in [-1, 1]. The autoencoder is per frame, so a few frames from many clips beat all frames of a few
    (neighbouring frames are near copies). The choice is seeded by the clips' indices, so a resumed run
    draws the same frames."""

    def __init__(self, frames_per_clip: int = 0, seed: int = 0) -> None:
        self.frames_per_clip = frames_per_clip  # 0: every frame
        self.seed = seed

    def __call__(self, items: list[dict]) -> torch.Tensor:
        video = video_to_model(torch.stack([item["video"] for item in items]))  # (B, 3, T, H, W)
        T = video.shape[2]
        k = self.frames_per_clip
        if k <= 0 or k >= T:
            return video
        keys = ",".join(str(item.get("source", {}).get("index", i)) for i, item in enumerate(items))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(keys.encode()))
        picks = torch.stack([torch.randperm(T, generator=gen)[:k].sort().values for _ in items])  # (B, k)
        return torch.stack([clip[:, idx] for clip, idx in zip(video, picks)])


class AutoencoderTask:
    """The loop's task: minimise the autoencoder's L1 + L2 + KL loss on a batch of videos."""

    def __init__(self, model: FrameAutoencoder) -> None:
        self.model = model

    def loss(self, model: torch.nn.Module, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        # `model` may be the DDP wrapper: call it (so gradients sync), score with the plain module
        return self.model.loss_terms(batch, model(batch))


@torch.no_grad()
def fit_scale_on(model: FrameAutoencoder, dataset, num_clips: int = 32, batch_size: int = 8) -> float:
    """Fit `model.scale_factor` on the posterior means of the dataset's first `num_clips` clips."""
    model.eval()
    device = model.scale_factor.device
    items = [dataset[i] for i in range(min(num_clips, len(dataset)))]
    latents = [
        model.encode(video_to_model(torch.stack([it["video"] for it in items[i:i + batch_size]])).to(device))
        for i in range(0, len(items), batch_size)
    ]
    return model.fit_scale_factor(torch.cat(latents))


def train_autoencoder(
    cfg_autoencoder: Any,
    dataset,
    run_dir: str | Path,
    loop_cfg: LoopConfig | None = None,
    dist_info: DistInfo | None = None,
    progress: bool = True,
    log=say,
) -> FitResult:
    """Train (or resume) the autoencoder in `run_dir/checkpoints/autoencoder/`.

    When finished, the kept weights (`result.ema_model` if the loop kept an EMA copy, else `result.model`)
    have their scale factor fitted, in eval mode, and `last.pt` is the finished checkpoint holding them.
    """
    info = dist_info or DistInfo()
    loop_cfg = loop_cfg or autoencoder_loop_config(cfg_autoencoder)
    train = _get(cfg_autoencoder, "train") or {}
    frames_per_clip = int(_get(train, "frames_per_clip", 0) or 0)
    scale_clips = int(_get(train, "scale_clips", 32) or 32)
    if frames_per_clip < 0:
        raise ConfigError(f"autoencoder.train.frames_per_clip={frames_per_clip} must be >= 0 (0: every frame)")
    torch.manual_seed(loop_cfg.seed)  # the same seed gives the same initial weights
    model = build_autoencoder(cfg_autoencoder)
    extra = {"autoencoder_config": dict(model.config), "scale_factor": float(model.scale_factor)}
    result = fit(AutoencoderTask(model), dataset, FrameSampler(frames_per_clip, loop_cfg.seed), loop_cfg, run_dir,
                 STAGE, dist_info=info, checkpoint_extra=extra, progress=progress, log=log)
    if not result.finished:
        return result
    path = Path(run_dir) / "checkpoints" / STAGE / "last.pt"
    # the weights to keep: the EMA copy when the loop kept one
    final, key = (result.ema_model, "ema") if result.ema_model is not None else (result.model, "model")
    if info.is_main:
        state = ckpt.load_checkpoint(path, map_location=info.device)
        if state.get("scale_fitted"):
            final.load_state_dict(state[key])  # finished before: the saved weights already hold the factor
        else:
            factor = fit_scale_on(final, dataset, scale_clips)
            state.update({key: final.state_dict(), "scale_factor": factor, "scale_fitted": True})
            ckpt.atomic_save(state, path)
            log(f"[{STAGE}] latent scale factor {factor:.4f} (fitted on {min(scale_clips, len(dataset))} clips)")
    barrier(info)
    if info.enabled and not info.is_main:
        final.load_state_dict(ckpt.load_checkpoint(path, map_location=info.device)[key])
    final.eval()
    return result


def load_autoencoder(path: str | Path, map_location: str | torch.device = "cpu") -> FrameAutoencoder:
    """The trained autoencoder (eval mode, scale factor included) from its checkpoint alone."""
    state = ckpt.load_checkpoint(path, map_location)
    if "autoencoder_config" not in state:
        raise ckpt.CheckpointError(f"{path}: not an autoencoder checkpoint (no 'autoencoder_config')")
    model = FrameAutoencoder.from_config(state["autoencoder_config"])
    model.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    return model.to(map_location).eval()

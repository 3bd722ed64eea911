"""Stage `autoencoder` (latent diffusion, `diffusion.space=latent`): train the per-frame autoencoder, then
report its reconstruction quality on held-out clips (PSNR; compliance of decoded ground truth on shapes)."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from sg2video.autoencoder.model import FrameAutoencoder
from sg2video.autoencoder.train import load_autoencoder, train_autoencoder
from sg2video.data.clips import collate_clips
from sg2video.eval.worlds import checker_for
from sg2video.logs import say
from sg2video.rundir import stage_checkpoint, update_metrics
from sg2video.stages.common import datasets, stage_loop_config
from sg2video.train.distributed import DistInfo


@torch.no_grad()
def reconstruction_metrics(model: FrameAutoencoder, dataset, num: int, device) -> dict:
    from sg2video.autoencoder.model import psnr

    items = [dataset[i] for i in range(min(num, len(dataset)))]
    batch = collate_clips(items).to(device)
    recon = model.decode(model.encode(batch.video)).clamp(-1, 1)
    metrics = {"psnr": float(psnr(batch.video, recon)), "clips": len(items)}
    checker = checker_for(dataset.vocab)
    if checker is not None:  # a built-in world: does the decoded ground truth still pass its checker?
        frames = ((recon.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        scores = checker.score_videos(list(frames), [it["graphs"] for it in items])
        metrics.update({f"decoded_gt/{k}": float(v) for k, v in scores.items() if isinstance(v, (int, float))})
    return metrics


def run_autoencoder_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Path:
    data = datasets(cfg, ("train", "val"))
    loop_cfg = stage_loop_config(cfg, cfg.autoencoder.train)
    train_autoencoder(cfg.autoencoder, data["train"], run_dir, loop_cfg, info)
    path = stage_checkpoint(run_dir, "autoencoder")
    if info.is_main:
        model = load_autoencoder(path, info.device)
        metrics = reconstruction_metrics(model, data["val"], 64, info.device)
        update_metrics(run_dir, "autoencoder", metrics)
        line = f"[autoencoder] held-out reconstruction PSNR {metrics['psnr']:.1f} dB"
        if "decoded_gt/object_accuracy" in metrics:  # the ceiling the latent space puts on every generated video
            line += (f"; decoded ground truth passes the checker at {metrics['decoded_gt/object_accuracy']:.3f} / "
                     f"{metrics['decoded_gt/relation_accuracy']:.3f} (objects / relations)")
        say(line)
    return path

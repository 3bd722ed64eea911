"""Stage `encoder`: SGDiff-style pretraining of the scene-graph encoder, then retrieval on held-out clips."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from sg2video.config import to_dict
from sg2video.data.clips import collate_clips
from sg2video.encoder.pretrain import EncoderPretrainer, build_pretrainer, loss_weights
from sg2video.eval.retrieval import evaluate_retrieval
from sg2video.graphs import Vocab
from sg2video.logs import say
from sg2video.rundir import stage_checkpoint, update_metrics
from sg2video.stages.common import datasets, report_skipped, stage_loop_config, tb_writer, write_scalars
from sg2video.train.checkpoint import load_checkpoint
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import Hook, fit


class EncoderTask:
    def __init__(self, model: EncoderPretrainer, weights: dict[str, float]) -> None:
        self.model = model
        self.weights = weights
        # a term with weight 0 is not computed, so its head gets no gradient (DDP must be told)
        self.find_unused_parameters = any(w == 0 for w in weights.values())

    def loss(self, model, batch, step):
        return model(batch, self.weights)


def retrieval(model: EncoderPretrainer, dataset, cfg: DictConfig, device) -> dict[str, float]:
    with torch.inference_mode():
        return evaluate_retrieval(model, dataset, num=int(cfg.encoder.train.eval_clips),
                                  gallery=int(cfg.eval.retrieval_gallery), device=device)


def run_encoder_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Path:
    data = datasets(cfg, ("train", "val"))
    vocab: Vocab = data["train"].vocab
    torch.manual_seed(int(cfg.train.seed))  # the initial weights are a function of train.seed
    model = build_pretrainer(cfg.encoder, vocab, int(cfg.data.size))
    loop_cfg = stage_loop_config(cfg, cfg.encoder.train)

    def evaluate(step, net, ema, writer):
        metrics = retrieval(net, data["val"], cfg, info.device)
        write_scalars(writer, "encoder/retrieval", metrics, step)

    every = int(cfg.encoder.train.eval_every)
    result = fit(
        EncoderTask(model, loss_weights(cfg.encoder)),
        data["train"],
        collate_clips,
        loop_cfg,
        run_dir,
        "encoder",
        info,
        checkpoint_extra={"config": to_dict(cfg), "vocab": vocab.to_dict(), "encoder_config": to_dict(cfg.encoder),
                          "image_size": int(cfg.data.size)},
        hooks=[Hook(every, evaluate)] if every > 0 else [],
    )
    if info.is_main:
        report_skipped("encoder", data["train"], run_dir)
        metrics = retrieval(result.model, data["val"], cfg, info.device)
        writer = tb_writer(run_dir)  # the curves' last point, also with eval_every=0 (the only one then)
        write_scalars(writer, "encoder/retrieval", metrics, result.step)
        writer.close()
        metrics["steps"] = result.step
        update_metrics(run_dir, "encoder", metrics)
        say(f"[encoder] retrieval on held-out clips: graph->video top-1 {metrics['g2v_top1']:.3f} "
              f"top-5 {metrics['g2v_top5']:.3f}, video->graph top-1 {metrics['v2g_top1']:.3f}")
    return stage_checkpoint(run_dir, "encoder")


def load_pretrainer(path: str | Path, map_location="cpu") -> tuple[EncoderPretrainer, Vocab, dict]:
    """The pretrained encoder from an encoder-stage checkpoint alone (no config file needed)."""
    state = load_checkpoint(path, map_location)
    vocab = Vocab.from_dict(state["vocab"])
    from omegaconf import OmegaConf

    enc_cfg = OmegaConf.create(state["encoder_config"])
    model = build_pretrainer(enc_cfg, vocab, int(state["image_size"]))
    model.load_state_dict(state["model"])
    return model.eval(), vocab, state

"""Stage `eval`: sample held-out graphs with the trained pipeline, measure, and report.

People write graphs without boxes, so the headline is measured on the held-out graphs with their boxes removed:
a layout-conditioned model draws its boxes as `layout` says (sampled by the layout model by default; the box
head for `layout=head`; `layout=given` falls back to the box head too, having nothing else). Measurements, in the
order the stage runs them (each a function below; all into `metrics.json["eval"]` and TensorBoard):
- headline compliance (a built-in world's exact checker, sg2video.eval.worlds): object / relation / colour
  accuracy, extra objects, per predicate and (household) `relation_family/<family>` for attention, spatial,
  depth and contact, of the box-free samples (top-level keys, and what the sweeper gets); `identity/...` (shapes):
  whether each object keeps its colour and shape from frame to frame (kept, pop rate, shape change rate);
- `eval_graphs_in_training`: how many of these graphs occur verbatim (object order aside) in train clips
  0..`eval.training_clips`-1; with `data.holdout=compositional`, the same compliance for graphs holding an unseen
  combination (`unseen/...`) and for the others (`seen/...`) apart, and relation accuracy over held-out triples
  alone (`heldout_triples/...`) and over triples joining a held-out pair (`heldout_pairs/...`);
- `given_boxes/...`: the same graphs with the data's boxes (a layout-conditioned model only: what it does when
  handed the layout); `box_head/...`: boxes from the encoder's box head (the sg2im baseline) when the layout
  model is the default;
- `control_uncond/...`: the same model with its condition dropped (guidance 0): conditioning must beat it;
- `control_norel/...`: the relation control: the same model and objects, the graph's relations removed (a
  layout model draws a layout for the objects alone), scored against the original relations: what drawing the
  right objects in plausible but arbitrary places scores (relations ~0.35 under the checker's rules);
  `control_norel/relation_margin` is the model's relation accuracy on the same graphs minus the control's;
- `diversity/...`: several samples of one graph: how far apart the same object lands, and the pixel difference;
- `long/...`: held-out clips of `eval.long_frames` frames, box-free, made chunk by chunk: compliance per
  timeline segment, and `long/teleport_rate`, the share of frame-to-frame object moves longer than any the
  world's own objects can make;
- `manipulation_*`: SGDiff's check, box-free: one relation or object changed, regenerated with the same seed;
- SG score (retrieval of the samples against their graphs) and fidelity (FID/KID per frame, video FD).
Then `report.html`: config, metrics, loss curves, and samples beside their graphs and ground truth.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from sg2video.data import build_dataset
from sg2video.eval.worlds import WorldChecker, checker_for
from sg2video.generators import VideoGenerator, generator_for_model, load_video_generator
from sg2video.logs import say
from sg2video.rundir import read_metrics, stage_checkpoint, update_metrics
from sg2video.stages import eval_measures as m
from sg2video.stages.common import required_checkpoint, tb_writer, write_scalars
from sg2video.stages.eval_measures import write_samples  # noqa: F401 - callers import it from here too
from sg2video.train.distributed import DistInfo


@dataclass
class EvalContext:
    """What every measurement may read: the trained video_gen, the held-out items and their graphs (as
    given, and box-free as people write them), and how the stage samples. `checker` is the world's exact checker
    (None: no built-in world, so no compliance); `is_shapes` marks the measures only the shapes world has."""

    cfg: DictConfig
    video_gen: VideoGenerator
    items: list[dict]
    graph_lists: list
    free: list
    few: list  # the first eval.control_samples box-free graphs (the control and the box head use them)
    guidance: float
    layout: str
    checker: WorldChecker | None
    encoder_ckpt: Path
    device: torch.device
    videos: torch.Tensor | None = None  # the headline samples, made by the first measurement
    drawn_from: list = field(default_factory=list)

    @property
    def is_shapes(self) -> bool:
        return self.checker is not None and self.checker.name == "shapes"

    def compliance(self, videos: torch.Tensor, graph_lists) -> dict:
        return m.compliance_metrics(videos, graph_lists, self.checker)


def headline(ctx: EvalContext) -> dict:
    """Box-free samples of the held-out graphs: compliance and identity (top-level keys, what sweeps read)."""
    t0 = time.time()
    ctx.videos, ctx.drawn_from = m.generate_for_graphs(ctx.video_gen, ctx.free, ctx.cfg, ctx.guidance, ctx.layout,
                                                       return_graphs=True)
    out = {"seconds_per_video": (time.time() - t0) / max(1, len(ctx.free))}
    if ctx.checker is not None:
        out.update(ctx.compliance(ctx.videos, ctx.graph_lists))
    if ctx.is_shapes:
        out.update({f"identity/{k}": v for k, v in m.identity_of(ctx.videos, ctx.graph_lists).items()})
    return out


def combinations(ctx: EvalContext) -> dict:
    """How many eval graphs training shows verbatim and, under the compositional split, seen and unseen apart."""
    if ctx.checker is None:
        return {}
    found = m.graphs_in_training(ctx.cfg.data, ctx.graph_lists, int(ctx.cfg.eval.training_clips))
    out = {}
    if found is not None:
        out = {"eval_graphs_in_training": int(sum(found)),
               "training_clips_checked": min(int(ctx.cfg.eval.training_clips), int(ctx.cfg.data.train_size))}
    if ctx.is_shapes and str(ctx.cfg.data.get("holdout", "none")) == "compositional":
        out.update(m.holdout_metrics(ctx.videos, ctx.graph_lists, found))
    return out


def given_boxes(ctx: EvalContext) -> dict:
    """A layout-reading model handed the data's boxes; and the encoder's box head (the sg2im layout)."""
    if not (ctx.checker is not None and ctx.video_gen.reads_boxes):
        return {}
    given = m.generate_for_graphs(ctx.video_gen, ctx.graph_lists, ctx.cfg, ctx.guidance, "given")
    out = {f"given_boxes/{k}": v for k, v in m._headline_keys(ctx.compliance(given, ctx.graph_lists)).items()}
    if ctx.layout == "sampled":
        head = m.generate_for_graphs(ctx.video_gen, ctx.few, ctx.cfg, ctx.guidance, "head")
        out.update({f"box_head/{k}": v for k, v in
                    m._headline_keys(ctx.compliance(head, ctx.graph_lists[: len(ctx.few)])).items()})
    return out


def control(ctx: EvalContext) -> dict:
    """The same model with its condition dropped (guidance 0): what conditioning must beat."""
    if ctx.checker is None:
        return {}
    videos = m.generate_for_graphs(ctx.video_gen, ctx.few, ctx.cfg, guidance=0.0, layout=ctx.layout)
    return {f"control_uncond/{k}": v for k, v in
            m._headline_keys(ctx.compliance(videos, ctx.graph_lists[: len(ctx.few)])).items()}


def relation_control(ctx: EvalContext) -> dict:
    """The same model and objects with the relations removed before the layout is drawn (a model that reads no
    boxes gets the relation-free graph itself), scored against the original relations; same seeds as the
    headline. The margin compares the model with it on the same graphs."""
    if ctx.checker is None:
        return {}
    graphs = ctx.graph_lists[: len(ctx.few)]
    videos = m.generate_for_graphs(ctx.video_gen, m.relation_free(ctx.few), ctx.cfg, ctx.guidance, ctx.layout)
    out = {f"control_norel/{k}": v for k, v in m._headline_keys(ctx.compliance(videos, graphs)).items()}
    model = m._headline_keys(ctx.compliance(ctx.videos[: len(ctx.few)], graphs))
    out["control_norel/relation_margin"] = model["relation_accuracy"] - out["control_norel/relation_accuracy"]
    for key in (k for k in model if k.startswith("relation_family/")):  # per family: e.g. depth above chance
        out[f"control_norel/margin_{key.split('/', 1)[1]}"] = model[key] - out.get(f"control_norel/{key}", math.nan)
    return out


def diversity(ctx: EvalContext) -> dict:
    graphs = int(ctx.cfg.eval.get("diversity_graphs", 0) or 0)
    if not (ctx.is_shapes and graphs > 0):
        return {}
    return {f"diversity/{k}": v for k, v in m.diversity_metrics(
        ctx.video_gen, ctx.free[:graphs], ctx.cfg, ctx.guidance, ctx.layout, int(ctx.cfg.eval.diversity_samples)).items()}


def long_videos(ctx: EvalContext) -> dict:
    """Held-out clips of eval.long_frames frames, box-free, chunk by chunk: per segment, teleports."""
    frames = int(ctx.cfg.eval.get("long_frames", 0) or 0)
    if not (ctx.checker is not None and frames > ctx.video_gen.clip_frames and ctx.video_gen.makes_long_videos
            and int(ctx.cfg.eval.long_samples) > 0):
        return {}
    long_items = m._long_clips(ctx.cfg, frames, int(ctx.cfg.eval.long_samples))
    graphs = [it["graphs"] for it in long_items]
    t0 = time.time()
    videos = m.generate_for_graphs(ctx.video_gen, m.box_free(graphs), ctx.cfg, ctx.guidance, ctx.layout)
    out = {"long/seconds_per_video": (time.time() - t0) / len(long_items), "long/frames": frames}
    out.update({f"long/{k}": v for k, v in m._headline_keys(ctx.compliance(videos, graphs)).items()})
    out.update({f"long/{k}": v for k, v in m.segment_metrics(videos, graphs, ctx.checker).items()})
    if ctx.is_shapes:
        out.update({f"long/{k}": v for k, v in m.teleport_metrics(videos, graphs).items()})
    return out


def manipulation(ctx: EvalContext) -> dict:
    count = int(ctx.cfg.eval.get("manipulation_samples", 0) or 0)
    if not (ctx.is_shapes and count > 0):
        return {}
    return m.manipulation_metrics(ctx.video_gen, ctx.free[:count], ctx.cfg, ctx.guidance, ctx.layout)


def sg_score(ctx: EvalContext) -> dict:
    if not (ctx.encoder_ckpt.exists() and len(ctx.items) >= 2):
        return {}
    return m.sg_score(ctx.encoder_ckpt, ctx.videos, ctx.items, int(ctx.cfg.eval.retrieval_gallery), ctx.device)


def fidelity(ctx: EvalContext) -> dict:
    if not (ctx.encoder_ckpt.exists() and len(ctx.items) >= 2):
        return {}
    return {f"fidelity/{k}": v for k, v in m.fidelity(ctx.cfg, ctx.encoder_ckpt, ctx.videos, ctx.items, ctx.device).items()}


# The measurements, in the order the stage runs them (the first makes the samples the later ones score).
MEASUREMENTS: list[tuple[str, Callable[[EvalContext], dict]]] = [
    ("held-out graphs without boxes", headline), ("seen and unseen combinations", combinations),
    ("with given boxes, box head", given_boxes), ("unconditional control", control),
    ("relation control", relation_control), ("diversity", diversity), ("long videos", long_videos),
    ("manipulation", manipulation), ("SG score", sg_score), ("fidelity", fidelity),
]


def eval_split(cfg: DictConfig) -> str:
    """The split the eval stage draws its graphs from (`eval.split`; test in configs older than the key)."""
    return str(OmegaConf.select(cfg, "eval.split", default="test"))


def eval_context(cfg: DictConfig, run_dir: Path, device) -> EvalContext:
    stage = generator_for_model(str(cfg.model.name)).stage  # the stage that trained the run's generator
    video_gen = load_video_generator(required_checkpoint(run_dir, stage), device)
    apply_layout_settings(video_gen, cfg)
    dataset = build_dataset(cfg.data, eval_split(cfg))
    num = min(int(cfg.eval.num_samples), len(dataset))
    items = dataset.__getitems__(list(range(num)))
    graph_lists = [it["graphs"] for it in items]
    free = m.box_free(graph_lists)
    return EvalContext(cfg, video_gen, items, graph_lists, free, free[: min(num, int(cfg.eval.control_samples))],
                       float(cfg.eval.guidance), m.eval_layout(cfg), checker_for(dataset.vocab),
                       stage_checkpoint(run_dir, "encoder"), device)


def apply_layout_settings(video_gen: VideoGenerator, cfg: DictConfig) -> dict:
    """The config's layout sampling settings (`layout.candidates`, `layout.repair_steps`, ...: SAMPLING_KEYS) over
    the ones the checkpoint's layout model was trained with, so `stage=eval layout.repair_steps=0` measures a
    setting on a finished run; returns the ones that changed."""
    from sg2video.layout.sampler import SAMPLING_KEYS
    from sg2video.stages.layout import layout_settings

    layout = getattr(video_gen, "layout", None)
    if layout is None or str(cfg.layout.name) != "sampled":
        return {}
    wanted = layout_settings(cfg)  # the window resolved for the dataset, as the layout stage trained it
    changed = {k: wanted[k] for k in SAMPLING_KEYS if k in wanted and wanted[k] != layout.cfg.get(k)}
    layout.update(changed)
    return changed


def run_eval_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> float | None:
    if not info.is_main:
        return None
    from tqdm.auto import tqdm

    from sg2video.logs import progress_enabled

    ctx = eval_context(cfg, run_dir, info.device)
    metrics: dict = {"num_samples": len(ctx.items), "sampler": str(cfg.eval.sampler),
                     "steps": int(cfg.eval.sample_steps), "guidance": ctx.guidance,
                     "cond": ctx.video_gen.cond_mode, "reads_boxes": bool(ctx.video_gen.reads_boxes),
                     "generator": str(cfg.model.name), "layout": ctx.layout, "graphs": "without boxes"}
    with tqdm(total=len(MEASUREMENTS), desc="eval", unit="measurement", disable=not progress_enabled()) as bar:
        for name, measure in MEASUREMENTS:
            metrics.update(measure(ctx))
            bar.set_postfix_str(name, refresh=False)
            bar.update(1)
    samples = write_samples(run_dir, ctx.video_gen.vocab, ctx.videos, ctx.items, int(cfg.eval.save_samples),
                            ctx.drawn_from)
    update_metrics(run_dir, "eval", metrics)
    writer = tb_writer(run_dir)
    write_scalars(writer, "eval", metrics, 0)
    writer.close()
    _report(cfg, run_dir, samples)
    if ctx.checker is not None:
        say(headline_line(cfg, metrics))
    return metrics.get("relation_accuracy")


def headline_line(cfg: DictConfig, metrics: dict) -> str:
    how = f"model.cond={metrics['cond']}, " + (f"layout={metrics['layout']}" if metrics.get("reads_boxes") else "no layout")
    line = (f"[eval] {metrics['num_samples']} held-out graphs without boxes ({how}): object accuracy "
            f"{metrics['object_accuracy']:.3f}, relation accuracy {metrics['relation_accuracy']:.3f}, colour accuracy "
            f"{metrics['colour_accuracy']:.3f} (unconditional control: {metrics['control_uncond/object_accuracy']:.3f} / "
            f"{metrics['control_uncond/relation_accuracy']:.3f}{_relation_control_text(metrics)})")
    if "identity/kept" in metrics:
        line += f"; objects kept through the clip {metrics['identity/kept']:.3f}"
    families = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("relation_family/")}
    if families:
        line += "; relations per family: " + ", ".join(f"{name} {value:.3f}" for name, value in families.items())
    if "unseen/object_accuracy" in metrics:
        line += (f"; unseen combinations ({metrics['unseen/graphs']} graphs) {metrics['unseen/object_accuracy']:.3f} / "
                 f"{metrics['unseen/relation_accuracy']:.3f}, seen ({metrics['seen/graphs']}) "
                 f"{metrics['seen/object_accuracy']:.3f} / {metrics['seen/relation_accuracy']:.3f}, held-out triples "
                 f"{metrics['heldout_triples/relation_accuracy']:.3f}")
    if "eval_graphs_in_training" in metrics:
        line += (f"; {metrics['eval_graphs_in_training']} of {metrics['num_samples']} graphs occur in the first "
                 f"{metrics['training_clips_checked']} train clips")
    if "given_boxes/object_accuracy" in metrics:
        line += (f"; with the data's boxes {metrics['given_boxes/object_accuracy']:.3f} / "
                 f"{metrics['given_boxes/relation_accuracy']:.3f}")
    return line


def _relation_control_text(metrics: dict) -> str:
    if "control_norel/relation_accuracy" not in metrics:
        return ""
    return (f"; relation control: {metrics['control_norel/object_accuracy']:.3f} / "
            f"{metrics['control_norel/relation_accuracy']:.3f}, relations "
            f"{metrics['control_norel/relation_margin']:+.3f} above it")


def _report(cfg: DictConfig, run_dir: Path, samples: list[dict]) -> Path:
    from sg2video.config import to_dict
    from sg2video.eval.report import summarize_config, write_report

    title = (f"sg2video run: {cfg.data.name}, encoder {cfg.encoder.name}, model {cfg.model.name}, cond {cfg.model.cond}, "
             f"layout {cfg.layout.name}")
    return write_report(run_dir, title, summarize_config(to_dict(cfg)), read_metrics(run_dir), samples=samples)

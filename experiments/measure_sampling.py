"""Sampler and long-video figures for a trained shapes model, scored with the compliance checker.

    python experiments/measure_sampling.py RUN_DIR_OR_CKPT [--num 16] [--samplers ddim:50,ddpm:1000]
                                           [--control] [--timeline experiments/graphs/relation_swap.json]
                                           [--json OUT] [--out DIR]

1. The same held-out graphs drawn with each sampler (same seeds): seconds per video, object and relation accuracy.
2. A timeline (default: a red circle that crosses from the left of a blue square to its right at frame 16, a green
   triangle above both; 32 frames, so several chunks for a short-clip model) drawn `--timeline-num` times, scored
   per segment (runs of frames with the same relations), conditioned and unconditioned (guidance 0), also on
   the changing relation alone.
Prints Markdown tables; `--json` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sg2video.data import build_dataset  # noqa: E402
from sg2video.eval.compliance import check_video, score_videos  # noqa: E402
from sg2video.graph_json import load_graph_json  # noqa: E402
from sg2video.graphs import SceneGraph, iter_triples_named, relation_segments  # noqa: E402
from sg2video.sampling import VideoGenerator  # noqa: E402
from sg2video.train.checkpoint import load_checkpoint  # noqa: E402
from sg2video.video_io import write_gif, write_npy  # noqa: E402

DEFAULT_TIMELINE = Path(__file__).resolve().parent / "graphs" / "relation_swap.json"


def resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "diffusion" / "last.pt"
    if not p.is_file():
        print(f"error: {path}: no diffusion checkpoint there (give a run dir or checkpoints/diffusion/last.pt)",
              file=sys.stderr)
        sys.exit(2)
    return p


def generate(generator: VideoGenerator, graph_lists: list, sampler: str, steps: int, guidance: float,
             batch: int, seed: int) -> tuple[torch.Tensor, float]:
    out, start_time = [], time.perf_counter()
    for start in range(0, len(graph_lists), batch):
        out.append(generator.generate(graph_lists[start : start + batch], sampler=sampler, steps=steps,
                                      guidance=guidance, seed=seed + start))
    return torch.cat(out), time.perf_counter() - start_time


def sampler_table(generator: VideoGenerator, graph_lists: list, samplers: list[tuple[str, int]], guidance: float,
                  batch: int, control: bool = False) -> list[dict]:
    """One row per sampler (and with `control`, the first sampler again at guidance 0: the condition dropped)."""
    rows = []
    runs = [(sampler, steps, guidance) for sampler, steps in samplers]
    if control and samplers:
        runs.append((samplers[0][0], samplers[0][1], 0.0))
    for sampler, steps, scale in runs:
        videos, seconds = generate(generator, graph_lists, sampler, steps, scale, batch, seed=0)
        scores = score_videos([v.numpy() for v in videos], graph_lists)
        rows.append({"sampler": sampler, "steps": steps, "guidance": scale, "seconds_per_video": seconds / len(graph_lists),
                     "object_accuracy": scores["object_accuracy"], "relation_accuracy": scores["relation_accuracy"],
                     "colour_accuracy": scores["colour_accuracy"]})
        print(f"  {sampler}-{steps} guidance {scale}: {seconds:.1f} s for {len(graph_lists)} videos, object "
              f"{scores['object_accuracy']:.3f} relation {scores['relation_accuracy']:.3f} colour "
              f"{scores['colour_accuracy']:.3f}", flush=True)
    return rows


def changing_only(graphs: list) -> list:
    """The graphs with only the triples that do not hold in every frame (the relation that changes)."""
    everywhere = set.intersection(*[set(map(tuple, g.triples.tolist())) for g in graphs])
    out = []
    for g in graphs:
        keep = torch.tensor([tuple(t) not in everywhere for t in g.triples.tolist()], dtype=torch.bool)
        out.append(SceneGraph(g.objs, g.triples[keep] if len(keep) else g.triples, g.boxes))
    return out


def timeline_table(generator: VideoGenerator, graphs: list, num: int, guidance: float,
                   batch: int) -> tuple[list[dict], torch.Tensor]:
    """Per-segment rows, conditioned and unconditioned, and the conditioned videos."""
    rows, kept = [], None
    changing = changing_only(graphs)
    for label, scale in (("conditioned", guidance), ("unconditioned", 0.0)):
        videos, seconds = generate(generator, [graphs] * num, "ddim", 50, scale, batch, seed=100)
        results = [check_video(v.numpy(), graphs) for v in videos]
        changed = [check_video(v.numpy(), changing) for v in videos]
        kept = videos if kept is None else kept
        for start, end in relation_segments(graphs):
            parts = [r.over_frames(start, end) for r in results]
            moved = [r.over_frames(start, end)["relation_accuracy"] for r in changed]
            rows.append({"model": label, "frames": f"{start}-{end - 1}",
                         "relations": "; ".join(" ".join(t) for t in iter_triples_named(generator.vocab, graphs[start])),
                         "object_accuracy": float(np.mean([p["object_accuracy"] for p in parts])),
                         "relation_accuracy": float(np.mean([p["relation_accuracy"] for p in parts])),
                         "changing_relation_accuracy": float(np.nanmean(moved)) if moved else float("nan"),
                         "seconds_per_video": seconds / num})
    return rows, kept


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory or diffusion checkpoint")
    parser.add_argument("--num", type=int, default=16, help="held-out graphs for the sampler comparison")
    parser.add_argument("--samplers", default="ddim:50,ddpm:1000", help="comma list of sampler:steps")
    parser.add_argument("--guidance", type=float, default=None, help="default: the run's diffusion.guidance")
    parser.add_argument("--control", action="store_true", help="also the first sampler at guidance 0 (no condition)")
    parser.add_argument("--timeline", default=str(DEFAULT_TIMELINE), help="graph JSON ('' to skip)")
    parser.add_argument("--timeline-num", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--out", default=None, help="also write the conditioned timeline videos (gif, npy) here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(args.run)
    state = load_checkpoint(ckpt, "cpu")
    cfg = OmegaConf.create(state["config"])
    generator = VideoGenerator.from_state(state, "cpu")
    guidance = float(cfg.diffusion.guidance if args.guidance is None else args.guidance)
    samplers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers.split(",") if s]
    print(f"{ckpt}: cond={cfg.model.cond}, clip {generator.clip_frames} frames, prefix {generator.prefix_frames}, "
          f"guidance {guidance}, torch threads {torch.get_num_threads()}")

    items = build_dataset(cfg.data, "test").__getitems__(list(range(args.num)))
    graph_lists = [it["graphs"] for it in items]
    print(f"samplers on {len(graph_lists)} held-out graphs:", flush=True)
    sampler_rows = sampler_table(generator, graph_lists, samplers, guidance, args.batch, args.control)
    print(markdown(sampler_rows, ["sampler", "steps", "guidance", "seconds_per_video", "object_accuracy",
                                  "relation_accuracy", "colour_accuracy"]))

    timeline_rows = []
    if args.timeline:
        spec = load_graph_json(args.timeline, generator.vocab, generator.max_objects)
        graphs = spec.frame_graphs(int(spec.length))
        print(f"\ntimeline {args.timeline} ({len(graphs)} frames) x {args.timeline_num}:", flush=True)
        timeline_rows, videos = timeline_table(generator, graphs, args.timeline_num, guidance, args.batch)
        print(markdown(timeline_rows, ["model", "frames", "relations", "object_accuracy", "relation_accuracy",
                                       "changing_relation_accuracy", "seconds_per_video"]))
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for i, video in enumerate(videos.numpy()):
                write_gif(out / f"timeline_{i:03d}.gif", video, scale=4)
                write_npy(out / f"timeline_{i:03d}.npy", video)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(ckpt), "guidance": guidance,
                                               "samplers": sampler_rows, "timeline": timeline_rows}, indent=1))


if __name__ == "__main__":
    main()

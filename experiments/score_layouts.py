"""Graphs written by hand, laid out by a checkpoint's layout model alone (no pixels): does each layout satisfy the
graph by the checker's rule, do objects overlap, and how far apart do samples of one graph land?

    python experiments/score_layouts.py CKPT [--graphs experiments/graphs/hard] [--num 4] [--seed 0]
        [--frames N] [layout.KEY=VALUE ...]

CKPT: a run directory or a generator checkpoint that carries a layout model (layout=sampled). `layout.*` overrides
change the sampler's settings for this measurement (candidates, rounds, scorer_guidance, ...), so a setting can be
compared on the same model in seconds; the figures are the layout's upper bound for what `sample.py` can reach.
A pair of objects "touches" when their boxes, shrunk to the drawn shapes' extent, are closer than one pixel.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--graphs", type=Path, default=REPO / "experiments" / "graphs" / "hard")
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=None, help="frames of a static graph (default: the clip's)")
    parser.add_argument("--val", type=int, default=0, metavar="N",
                        help="also the layout stage's own measures on the first N val clips (needs a run directory)")
    args, overrides = parser.parse_known_args()
    from omegaconf import OmegaConf

    from sg2video.errors import ConfigError
    from sg2video.eval.compliance import predicate_holds
    from sg2video.graph_json import load_graph_json
    from sg2video.layout.boxes import centres

    sampler, vocab, clip_frames = load_sampler(args.ckpt)
    settings = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("layout.") or not value:
            sys.exit(f"{item!r}: expected layout.KEY=VALUE")
        settings[key[len("layout."):]] = _parse(value)
    try:
        sampler.update(settings)
    except ConfigError as err:
        sys.exit(str(err))
    rows = {}
    for path in sorted(args.graphs.glob("*.json")):
        spec = load_graph_json(path, vocab)
        graphs = spec.frame_graphs(None if not spec.is_static else (args.frames or clip_frames))
        generator = torch.Generator().manual_seed(args.seed)
        boxes = sampler.sample_boxes([graphs] * args.num, generator).cpu()  # (S, K, T, 4)
        c = centres(boxes)
        held, total = 0, 0
        per_sample = []
        for s in range(args.num):
            ok = []
            for t, g in enumerate(graphs):
                for subj, pred, obj in g.triples.tolist():
                    d = (c[s, obj, t] - c[s, subj, t]).numpy()
                    ok.append(bool(predicate_holds(vocab.predicates[pred], d)))
            per_sample.append(float(np.mean(ok)) if ok else float("nan"))
            held += sum(ok)
            total += len(ok)
        k = graphs[0].num_objects
        size = (boxes[..., 2:] - boxes[..., :2]).mean().item()
        gap = (c[:, :k, None] - c[:, None, :k]).abs().amax(-1)  # (S, K, K, T) Chebyshev centre distance
        off = ~torch.eye(k, dtype=torch.bool)[None, :, :, None].expand_as(gap)
        touching = float((gap[off] < size).float().mean())
        spread = (c[:, None, :k] - c[None, :, :k]).norm(dim=-1)  # (S, S, K, T)
        pairs = ~torch.eye(args.num, dtype=torch.bool)
        rows[path.stem] = {"relations": held / max(total, 1), "worst_sample": min(per_sample), "touching": touching,
                           "spread": float(spread[pairs].mean())}
        print(f"{path.stem:24s} relations {rows[path.stem]['relations']:.3f} (worst sample "
              f"{rows[path.stem]['worst_sample']:.2f})  touching {touching:.3f}  spread {rows[path.stem]['spread']:.3f}",
              flush=True)
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("relations", "touching", "spread")}
        print("mean", json.dumps({k: round(v, 3) for k, v in mean.items()}))
    if args.val:  # the figures the layout stage reports, on val clips of the run's own data config
        from sg2video.eval.layouts import evaluate_layouts
        from sg2video.stages.layout import layout_dataset

        cfg = OmegaConf.load(args.ckpt / ".hydra" / "config.yaml")
        val = layout_dataset(cfg, "val", int(sampler.window))
        clips = [item["graphs"] for item in val.__getitems__(list(range(min(args.val, len(val)))))]
        metrics = evaluate_layouts(sampler, clips, vocab, seed=args.seed)
        keys = ("relation_accuracy", "scorer_agreement", "teleport_rate", "overlap_rate", "diversity")
        print("val", json.dumps({k: round(float(metrics[k]), 3) for k in keys}))


def load_sampler(path: Path):
    """(LayoutSampler, vocab, clip frames) of a generator checkpoint, or of a run directory: its generator's when it
    has one, else its layout stage's (a run still training its generator can be measured)."""
    from sg2video.generators import load_video_generator
    from sg2video.sampling import LayoutSampler
    from sg2video.stages.encoder import load_pretrainer
    from sg2video.stages.layout import load_layout_state

    generators = [path / "checkpoints" / s / "last.pt" for s in ("diffusion", "sg2im")] if path.is_dir() else [path]
    for ckpt in generators:
        if ckpt.exists():
            gen = load_video_generator(ckpt, "cpu")
            if gen.layout is None:
                sys.exit(f"{ckpt}: no layout model in this checkpoint")
            return gen.layout, gen.vocab, gen.clip_frames
    layout, encoder = path / "checkpoints" / "layout" / "last.pt", path / "checkpoints" / "encoder" / "last.pt"
    if not (layout.exists() and encoder.exists()):
        sys.exit(f"{path}: neither a generator checkpoint nor a run directory with a layout stage")
    pretrainer, vocab, state = load_pretrainer(encoder)
    sampler = LayoutSampler.from_state(load_layout_state(layout), pretrainer.graph_encoder.eval(), vocab,
                                       int(state["encoder_config"]["cond_dim"]))
    return sampler, vocab, 4


def _parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


if __name__ == "__main__":
    main()

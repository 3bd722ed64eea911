"""Throughput of the graph encoder and of encoder pretraining, with the real `encoder` configs.

    .venv/bin/python experiments/bench/bench_encoder.py --threads 1
    .venv/bin/python experiments/bench/bench_encoder.py --device cuda --variants gcn gcn_deep onehot

Prints graphs/s of `GraphEncoder` forward passes (no grad) over packed batches of `--graphs` shapes
frame graphs (2-4 objects, 1-6 triples each), the cost of packing them, and train steps/s of
`EncoderPretrainer` (forward + backward + AdamW) at `--batch` clips of `--frames` frames.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sg2video.data.clips import collate_clips
from sg2video.data.shapes import ShapesDataset
from sg2video.encoder.pretrain import build_pretrainer, loss_weights
from sg2video.graphs import GraphBatch

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call: one warm-up call, then the mean of `repeats` calls."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["gcn", "gcn_deep", "onehot"], help="conf/encoder files")
    parser.add_argument("--graphs", type=int, default=4096, help="graphs per packed batch")
    parser.add_argument("--batch", type=int, default=32, help="clips per pretraining step")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    dataset = ShapesDataset("train", length=1_000_000, size=args.size, frames=args.frames)
    clips_needed = -(-args.graphs // args.frames)
    graphs = [g for item in dataset.__getitems__(list(range(clips_needed))) for g in item["graphs"]][: args.graphs]
    pack_s = timed(lambda: GraphBatch.pack(graphs), args.repeats, torch.device("cpu"))
    packed = GraphBatch.pack(graphs).to(device)
    train_batch = collate_clips(dataset.__getitems__(list(range(args.batch)))).to(device)
    print(
        f"device={device} threads={torch.get_num_threads()} graphs={args.graphs} "
        f"(objects {packed.objs.numel()}, triples {packed.triples.shape[0]}) batch={args.batch}x{args.frames}x{args.size}px"
    )
    print(f"pack {args.graphs} graphs: {pack_s * 1e3:.1f} ms ({args.graphs / pack_s:,.0f} graphs/s)")

    with initialize_config_dir(config_dir=os.path.abspath(CONF_DIR), version_base="1.3"):
        for variant in args.variants:
            cfg = compose(overrides=[f"+encoder={variant}"]).encoder
            model = build_pretrainer(cfg, dataset.vocab, img_size=args.size).to(device)
            encoder = model.graph_encoder.eval()

            def encode() -> None:
                with torch.no_grad():
                    encoder(packed)

            encode_s = timed(encode, args.repeats, device)
            model.train()
            optimiser = torch.optim.AdamW(model.parameters(), lr=float(OmegaConf.select(cfg, "train.lr", default=3e-4)))
            weights = loss_weights(cfg)

            def train_step() -> None:
                out = model(train_batch, weights)
                optimiser.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimiser.step()

            step_s = timed(train_step, args.repeats, device)
            print(
                f"{variant:10s} layers={cfg.layers} pooling={cfg.pooling} use_gcn={cfg.use_gcn}: "
                f"encode {args.graphs / encode_s:,.0f} graphs/s ({encode_s * 1e3:.1f} ms/batch); "
                f"pretrain {1 / step_s:.2f} steps/s ({step_s * 1e3:.0f} ms/step)"
            )


if __name__ == "__main__":
    main()

"""The README's picture of what a run makes: graphs written by hand (no boxes), each beside its generated frames.

    python experiments/readme_picture.py RUN_DIR [--graphs FILE ...] [--out docs/img/default_run.png]
        [--seed 0] [--frames 8]

Each graph goes through `python src/sample.py ckpt=RUN_DIR graph=FILE num=1 seed=S` (a subprocess, the user's
command); the picture shows its relations as text (a timeline per segment) and up to `--frames` of the sample's
frames, spread over the video, enlarged without smoothing so the pixels stay honest. The checker's verdict per
relation (sg2video.eval.samples) is printed beside each row, so the picture never shows a failure as a success.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRAPHS = [REPO / "experiments" / "graphs" / "handwritten" / name for name in
          ("static_3_chain.json", "static_4_three_relations.json", "timeline_32_2obj.json")]


def relation_lines(graph: dict) -> list[str]:
    names = graph["objects"]

    def name(end) -> str:
        return names[end] if isinstance(end, int) else end

    segments = graph.get("timeline") or [{"frames": None, "relations": graph.get("relations", [])}]
    lines = []
    for seg in segments:
        span = f"frames {seg['frames'][0]}-{seg['frames'][1] - 1}: " if seg["frames"] else ""
        lines.extend(f"{span}{name(s)} {p} {name(o)}" for s, p, o in seg["relations"])
    return lines


def sample(ckpt: Path, graph: Path, seed: int, out: Path) -> np.ndarray:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, str(REPO / "src" / "sample.py"), f"ckpt={ckpt}", f"graph={graph}", "num=1",
           f"seed={seed}", f"out={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sample.py failed on {graph.name}: {proc.stderr.strip().splitlines()[-1:]}")
    return np.load(out / "sample_000.npy")


def verdict(graph: Path, out: Path) -> str:
    from sg2video.eval.samples import score_sample_dir

    figures = score_sample_dir(out, graph)
    return f"checker: objects {figures['object_accuracy']:.2f}, relations {figures['relation_accuracy']:.2f}"


def checkpoint(run_dir: Path) -> Path:
    found = [run_dir / "checkpoints" / stage / "last.pt" for stage in ("diffusion", "sg2im")]
    found = [path for path in found if path.exists()]
    if not found:
        sys.exit(f"{run_dir}: no checkpoints/diffusion/last.pt or checkpoints/sg2im/last.pt (a finished run is needed)")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--graphs", type=Path, nargs="+", default=GRAPHS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "default_run.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8, help="frames shown per graph, spread over the video")
    args = parser.parse_args()

    from matplotlib.figure import Figure

    from sg2video.video_io import write_atomic

    ckpt = checkpoint(args.run_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, graph in enumerate(args.graphs):
            video = sample(ckpt, graph, args.seed, Path(tmp) / str(k))
            picks = np.unique(np.linspace(0, len(video) - 1, min(args.frames, len(video))).round().astype(int))
            rows.append((json.loads(graph.read_text()), video, picks, verdict(graph, Path(tmp) / str(k))))
            print(f"{graph.name}: {len(video)} frames, {rows[-1][3]}")

    cols = max(len(picks) for _, _, picks, _ in rows)
    fig = Figure(figsize=(3.6 + 1.1 * cols, 1.35 * len(rows)), dpi=110)
    grid = fig.add_gridspec(len(rows), cols + 1, width_ratios=[3.6] + [1.1] * cols, wspace=0.05, hspace=0.35)
    for r, (graph, video, picks, checked) in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.set_axis_off()
        lines = relation_lines(graph)
        text = "\n".join(lines[:6] + ([f"... {len(lines) - 6} more"] if len(lines) > 6 else []))
        ax.text(0, 1, text, va="top", ha="left", fontsize=7.5, family="monospace", transform=ax.transAxes)
        ax.text(0, 0, checked, va="bottom", ha="left", fontsize=7, color="0.35", transform=ax.transAxes)
        for c, t in enumerate(picks):
            ax = fig.add_subplot(grid[r, c + 1])
            ax.imshow(video[t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {t}", fontsize=6.5, pad=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Graphs written by hand, without boxes, through `src/sample.py` as a newcomer runs it, scored by the checker.

    python experiments/score_handwritten.py RUN_DIR [--graphs experiments/graphs/handwritten] [--num 4]
        [--seed 0] [--out DIR] [sample.py overrides ...]

For every graph JSON in `--graphs`: `python src/sample.py ckpt=RUN_DIR/checkpoints/diffusion/last.pt (or sg2im/) graph=FILE
num=N seed=S out=OUT/<name>` (a subprocess, exactly the user's command), then the videos it wrote are scored
against the file (sg2video.eval.samples: object / relation accuracy, worst timeline segment, teleports, spread of
the samples). Prints a Markdown table and writes it with the figures as JSON into OUT (default
RUN_DIR/handwritten).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [("object acc.", "object_accuracy"), ("relation acc.", "relation_accuracy"),
           ("worst segment rel.", "worst_segment_relation_accuracy"), ("teleports", "teleport_rate"),
           ("spread of 4", "position_spread"), ("pixel diff.", "pixel_difference"), ("frames", "frames"),
           ("seconds", "seconds")]


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _family_keys(rows: dict[str, dict]) -> list[str]:
    """The household world's per-family figures (`family/<name>`), in the order they first appear."""
    return list(dict.fromkeys(k for figures in rows.values() for k in figures if k.startswith("family/")))


def table(rows: dict[str, dict]) -> str:
    columns = COLUMNS[:2] + [(key.split("/", 1)[1], key) for key in _family_keys(rows)] + COLUMNS[2:]
    lines = ["| graph | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(figures.get(key, math.nan)) for _, key in columns) + " |")
    return "\n".join(lines)


def summary(rows: dict[str, dict]) -> dict[str, float]:
    def mean(key: str, names) -> float:
        values = [rows[n][key] for n in names if not math.isnan(rows[n].get(key, math.nan))]
        return sum(values) / len(values) if values else math.nan

    static = [n for n in rows if rows[n]["segments"] == 1]
    timelines = [n for n in rows if rows[n]["segments"] > 1]
    return {
        "static/object_accuracy": mean("object_accuracy", static),
        "static/relation_accuracy": mean("relation_accuracy", static),
        "timelines/object_accuracy": mean("object_accuracy", timelines),
        "timelines/relation_accuracy": mean("relation_accuracy", timelines),
        "timelines/worst_segment": min((rows[n]["worst_segment_relation_accuracy"] for n in timelines), default=math.nan),
        "teleport_rate": mean("teleport_rate", list(rows)),
        "position_spread": mean("position_spread", list(rows)),
        **{key: mean(key, list(rows)) for key in _family_keys(rows)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--graphs", type=Path, default=REPO / "experiments" / "graphs" / "handwritten")
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args, extra = parser.parse_known_args()
    sys.path.insert(0, str(REPO / "src"))
    from sg2video.eval.samples import score_sample_dir

    found = [args.run_dir / "checkpoints" / stage / "last.pt" for stage in ("diffusion", "sg2im")]
    found = [path for path in found if path.exists()]
    if not found:
        parser.error(f"{args.run_dir}: no checkpoints/diffusion/last.pt or checkpoints/sg2im/last.pt "
                     "(a finished run directory is needed)")
    ckpt = found[0]
    out = args.out or args.run_dir / "handwritten"
    graphs = sorted(args.graphs.glob("*.json"))
    if not graphs:
        parser.error(f"{args.graphs}: no graph JSON files")
    rows: dict[str, dict] = {}
    for graph in graphs:
        target = out / graph.stem
        start = time.time()
        proc = subprocess.run([sys.executable, str(REPO / "src" / "sample.py"), f"ckpt={ckpt}", f"graph={graph}",
                               f"num={args.num}", f"seed={args.seed}", f"out={target}", *extra],
                              capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if proc.returncode != 0:
            sys.exit(f"sample.py failed on {graph.name}: {proc.stderr.strip().splitlines()[-1]}")
        rows[graph.stem] = {**score_sample_dir(target, graph), "seconds": round(time.time() - start, 1)}
        print(f"{graph.stem}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[graph.stem].items()})}",
              flush=True)
    text = table(rows)
    overall = summary(rows)
    print(text)
    print(json.dumps({k: round(v, 3) for k, v in overall.items()}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"graphs": rows, "summary": overall}, indent=2) + "\n")


if __name__ == "__main__":
    main()

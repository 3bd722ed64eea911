"""Re-score the saved samples of shapes runs with the current compliance checker, without generating anything.

    python experiments/rescore_samples.py DIR [DIR ...]

DIR is a run directory or a sweep directory (its numbered jobs). Each run's `samples/sample_NNN.npy` is scored
against `sample_NNN.json` (the graph it was drawn for): object, relation and colour accuracy over those
samples (the eval stage saves `eval.save_samples` of them, 8 by default). Useful after the checker gains a
metric, e.g. colour accuracy for runs evaluated before it existed. Prints one Markdown row per run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from sg2video.data.shapes import shapes_vocab
from sg2video.eval.compliance import score_videos
from sg2video.graph_json import load_graph_json


def runs_in(path: Path) -> list[Path]:
    if (path / "samples").is_dir():
        return [path]
    jobs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "samples").is_dir()]
    return sorted(jobs, key=lambda p: int(p.name))


def score_run(run: Path) -> dict | None:
    vocab = shapes_vocab()
    videos, graphs = [], []
    for npy in sorted((run / "samples").glob("sample_[0-9][0-9][0-9].npy")):
        video = np.load(npy)
        videos.append(video)
        graphs.append(load_graph_json(npy.with_suffix(".json"), vocab).frame_graphs(video.shape[0]))
    return score_videos(videos, graphs) if videos else None


def overrides(run: Path) -> str:
    path = run / ".hydra" / "overrides.yaml"
    return " ".join(yaml.safe_load(path.read_text()) or []) if path.exists() else ""


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for directory in args.dirs:
        if not directory.is_dir():
            fail(f"{directory}: not a directory (give a run directory or a sweep directory)")
    print("| run | overrides | samples | object acc. | relation acc. | colour acc. |")
    print("|---|---|---|---|---|---|")
    found = 0
    for directory in args.dirs:
        for run in runs_in(directory):
            scores = score_run(run)
            if scores is None:
                continue
            found += 1
            print(f"| {run} | {overrides(run)} | {scores['num_videos']} | {scores['object_accuracy']:.3f} | "
                  f"{scores['relation_accuracy']:.3f} | {scores['colour_accuracy']:.3f} |")
    if not found:
        fail("no saved samples (samples/sample_NNN.npy) under " + ", ".join(map(str, args.dirs)))


if __name__ == "__main__":
    main()

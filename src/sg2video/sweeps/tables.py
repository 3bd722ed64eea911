"""The sweep report's tables: results.md / results.csv (mean, std and n over seeds per arm) and curves.md."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from sg2video.rundir import read_curve
from sg2video.sweeps.reading import SEED_KEY, Arm, Stat, Summary
from sg2video.video_io import write_atomic


# -- tables ----------------------------------------------------------------------------------------


def _num(value: float, digits: int = 10) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}g}"


def _fixed(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def _cell(stat: Stat) -> str:
    if stat.n == 0:
        return "n/a"
    if stat.n == 1:
        return f"{stat.mean:.3f} (n=1)"
    return f"{stat.mean:.3f} ± {stat.std:.3f} (n={stat.n})"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def write_csv(summary: Summary, path: Path) -> None:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    header = ["arm", *summary.keys, "runs", "failed"]
    for name, section, key in summary.columns:
        header += [f"{section}/{key} mean", f"{section}/{key} std", f"{section}/{key} n"]
    out.writerow(header)
    for arm in summary.arms:
        row: list[Any] = [arm.label(summary.keys), *arm.values, len(arm.jobs), len(arm.jobs) - len(arm.ok)]
        for stat in summary.stats(arm):
            row += [_num(stat.mean), _num(stat.std), stat.n]
        out.writerow(row)
    write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))


def markdown(summary: Summary) -> str:
    lines = [f"# Sweep {summary.sweep_name}", ""]
    swept = ", ".join(f"`{k}`" for k in summary.keys) or "nothing (repeats of one configuration)"
    lines.append(f"Swept: {swept}; seeds (`{SEED_KEY}`) are the repeats of an arm. "
                 "Cells: mean ± sample std over seeds (n runs).")
    if summary.common:
        lines.append("Common overrides: " + ", ".join(f"`{k}={v}`" for k, v in summary.common.items()) + ".")
    lines += _column_notes(summary)
    lines.append("")
    header = ["arm", "runs", *(name for name, _, _ in summary.columns)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for arm in summary.arms:
        runs = f"{len(arm.ok)}/{len(arm.jobs)}"
        cells = [_md_escape(arm.label(summary.keys)), runs, *(_cell(s) for s in summary.stats(arm))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Runs", "", "| job | arm | seed | status |", "|---|---|---|---|"]
    for arm in summary.arms:
        for job in arm.jobs:
            status = "ok" if job.failure is None else f"FAILED: {job.failure}"
            lines.append(f"| {job.num} | {_md_escape(arm.label(summary.keys))} | {job.seed} | {status} |")
    failed = [job for job in summary.jobs if job.failure is not None]
    if failed:
        lines += ["", f"{len(failed)} of {len(summary.jobs)} jobs failed: "
                  + ", ".join(f"{job.num} ({job.failure})" for job in failed) + "."]
    return "\n".join(lines) + "\n"


# what a reader needs to read a column, said once under the title when the table has the column
COLUMN_NOTES = {
    "control_norel/relation_accuracy": "Relation control: the same model and objects, laid out with the graph's "
    "relations removed and scored against them (right objects in arbitrary places: ~0.35); \"above the relation "
    "control\" is the model's relation accuracy minus the control's on the same graphs, per run.",
    "unseen/relation_accuracy": "Unseen / seen: held-out graphs with / without a combination the compositional "
    "split keeps out of training (`data.holdout=compositional`).",
}


def _column_notes(summary: Summary) -> list[str]:
    shown = {key for _, _, key in summary.columns}
    return [note for key, note in COLUMN_NOTES.items() if key in shown]


# -- training curves (eval.curve_every) -------------------------------------------------------------

CURVE_KEYS = (("objects", "object_accuracy"), ("relations", "relation_accuracy"), ("kept", "identity/kept"))


def curve_points(arm: Arm) -> dict[int, dict[str, list[float]]]:
    """step -> {key: [one value per seed that has a point there]} for an arm's finished jobs (CPU minutes too)."""
    out: dict[int, dict[str, list[float]]] = {}
    for job in arm.ok:
        for point in read_curve(job.path):
            row = out.setdefault(int(point["step"]), {})
            for _, key in CURVE_KEYS:
                value = point.get(key)
                row.setdefault(key, []).append(float(value) if isinstance(value, (int, float)) else math.nan)
            row.setdefault("cpu_minutes", []).append(float(point.get("train_cpu_seconds") or math.nan) / 60)
    return dict(sorted(out.items()))


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan, len(finite)


def curves_markdown(summary: Summary) -> str | None:
    rows = []
    for arm in summary.arms:
        for step, row in curve_points(arm).items():
            cells = []
            for _, key in CURVE_KEYS:
                mean, std, n = _mean_std(row[key])
                cells.append("n/a" if n == 0 else f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else ""))
            cpu, _, n = _mean_std(row["cpu_minutes"])
            rows.append(f"| {_md_escape(arm.label(summary.keys))} | {step} | {' | '.join(cells)} | {_fixed(cpu)} | {n} |")
    if not rows:
        return None
    head = ("| arm | step | objects | relations | kept through the clip | train CPU min | seeds |\n"
            "|---|---|---|---|---|---|---|")
    return (f"# Training curves: {summary.sweep_name}\n\nHeld-out graphs without boxes, scored by the shapes "
            "checker at every `eval.curve_every` steps (EMA weights); mean ± std over seeds.\n\n" + head + "\n"
            + "\n".join(rows) + "\n")



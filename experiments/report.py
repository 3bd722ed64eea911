"""Compare the runs of a sweep: `python experiments/report.py <sweep dir> [--out DIR]`.

Reads every job directory of a Hydra multirun (`<sweep dir>/<job number>/` with `.hydra/overrides.yaml`,
`metrics.json`, `tb/`, `samples/`), groups the jobs into arms by the overrides that differ between jobs
(`train.seed` excluded: seeds are the repeats of an arm), and writes into DIR (default: the sweep dir):

- `results.md`, `results.csv`: one row per arm, mean, std and n over its seeds of each metric (eval
  object / relation accuracy, the unconditional control, long timelines, encoder retrieval top-1 / top-5
  in both directions, SG score and fidelity; a metric no job has is left out). Both are a pure function of the
  sweep directory (no dates, no absolute paths), so committed tables regenerate byte for byte.
- `metrics.png`: each metric against the swept value, mean +- std over seeds, single runs as dots.
- `losses.png`: training losses from TensorBoard, one line per arm (mean over its seeds).
- `curves.md`, `curves.png` (jobs run with `eval.curve_every`): box-free held-out object / relation accuracy and
  objects kept through the clip against diffusion steps and against training CPU time, per arm, mean over seeds.
- `comparison.html`: one self-contained page (images as data URIs) with the table, the plots, and the
  best and worst sample of each arm, scored one by one with the shapes compliance checker.

A job without metrics.json (or without the sections its stage writes) is listed as failed and left out
of the means; it never stops the report.
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from sg2video.eval.report import _png_uri, _sample_card, html_page, read_scalars
from sg2video.rundir import read_curve, read_failure
from sg2video.video_io import write_atomic

SEED_KEY = "train.seed"
# overrides that say where a job writes or runs, not what it is: never an arm's identity
PLACEMENT_KEYS = ("cache_dir", "run_dir", "device")
# (column, metrics.json section, key), the eval stage's and encoder stage's names; a column is shown when at
# least one job has the value (fidelity needs eval.num_samples >= 2, long timelines model.prefix_frames > 0)
METRICS = (
    ("object acc", "eval", "object_accuracy"),
    ("relation acc", "eval", "relation_accuracy"),
    ("uncond object acc", "eval", "control_uncond/object_accuracy"),
    ("uncond relation acc", "eval", "control_uncond/relation_accuracy"),
    ("colour acc", "eval", "colour_accuracy"),
    ("uncond colour acc", "eval", "control_uncond/colour_accuracy"),
    ("predicted-layout relation acc", "eval", "predicted_layout/relation_accuracy"),
    ("long object acc", "eval", "long/object_accuracy"),
    ("long relation acc", "eval", "long/relation_accuracy"),
    ("long later-segment relation acc", "eval", "long/later_segments/relation_accuracy"),
    ("g2v top-1", "encoder", "g2v_top1"),
    ("g2v top-5", "encoder", "g2v_top5"),
    ("v2g top-1", "encoder", "v2g_top1"),
    ("v2g top-5", "encoder", "v2g_top5"),
    ("SG score g2v top-1", "eval", "sg_score/g2v_top1"),
    ("FID frames", "eval", "fidelity/fid_frame"),
    ("KID frames", "eval", "fidelity/kid_frame_mean"),
    ("FD frames (own features)", "eval", "fidelity/fd_frame"),
    ("KD frames (own features)", "eval", "fidelity/kd_frame_mean"),
    ("FD videos", "eval", "fidelity/fd_video"),
    ("FVD (I3D)", "eval", "fidelity/fvd"),
)
STAGE_SECTIONS = {"all": ("eval",), "encoder": ("encoder",), "eval": ("eval",), "diffusion": ()}  # the last stage's
LOSS_STAGES = ("autoencoder", "encoder", "diffusion")


class ReportError(Exception):
    """A sweep directory the report cannot read (the message names it)."""


# -- reading the sweep ---------------------------------------------------------------------------


@dataclass
class Job:
    num: str
    path: Path
    overrides: dict[str, str]
    config: dict
    metrics: dict
    failure: str | None  # why it counts as failed, or None

    @property
    def seed(self) -> str:
        if SEED_KEY in self.overrides:
            return self.overrides[SEED_KEY]
        return str((self.config.get("train") or {}).get("seed", "?"))

    def value(self, section: str, key: str) -> float:
        value = (self.metrics.get(section) or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return math.nan
        return float(value)


def _job_sort_key(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def parse_override(line: str) -> tuple[str, str]:
    """`+model.x=3` -> ("model.x", "3"); a deletion `~key` reads ("key", "(deleted)")."""
    key, sep, value = line.partition("=")
    return key.lstrip("+~"), value if sep else "(deleted)"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def read_job(path: Path) -> Job:
    lines = _read_yaml(path / ".hydra" / "overrides.yaml") or []
    overrides = dict(parse_override(str(line)) for line in lines)
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    metrics, failure = {}, None
    metrics_path = path / "metrics.json"
    if not metrics_path.exists():
        failure = "no metrics.json"
    else:
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            failure = "unreadable metrics.json"
    reason = read_failure(path)  # the job's own account (failed.json), when it left one
    if reason is not None:
        failure = reason
    elif failure is None:
        expected = STAGE_SECTIONS.get(str(config.get("stage", "all")), ())
        missing = [section for section in expected if section not in metrics]
        if missing:
            failure = f"metrics.json lacks {', '.join(missing)}"
    return Job(path.name, path, overrides, config, metrics, failure)


def read_sweep(sweep_dir: Path) -> list[Job]:
    """The job directories of a sweep: children named by a number or holding `.hydra/`, in job order."""
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such sweep directory")
    paths = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
             and (p.name.isdigit() or (p / ".hydra").is_dir())]
    if not paths:
        raise ReportError(f"{sweep_dir}: no job directories (expected <sweep dir>/<job number>/.hydra/)")
    return [read_job(p) for p in sorted(paths, key=_job_sort_key)]


# -- arms ------------------------------------------------------------------------------------------


@dataclass
class Arm:
    values: tuple[str, ...]  # one per swept key
    jobs: list[Job] = field(default_factory=list)

    @property
    def ok(self) -> list[Job]:
        return [job for job in self.jobs if job.failure is None]

    def label(self, keys: list[str]) -> str:
        if not keys:
            return "all runs"
        if len(keys) == 1:
            return self.values[0]
        return ", ".join(f"{k}={v}" for k, v in zip(keys, self.values))


NOT_SET = "(default)"


def swept_keys(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """(keys whose value differs between jobs, in first-seen order; the overrides every job shares)."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys)
    keys = [k for k in keys if k != SEED_KEY and not k.startswith(PLACEMENT_KEYS)]
    varying = [k for k in keys if len({job.overrides.get(k, NOT_SET) for job in jobs}) > 1]
    common = {k: jobs[0].overrides[k] for k in keys if k not in varying and k in jobs[0].overrides}
    return varying, common


def group_arms(jobs: list[Job], keys: list[str]) -> list[Arm]:
    arms: dict[tuple[str, ...], Arm] = {}
    for job in jobs:
        values = tuple(job.overrides.get(k, NOT_SET) for k in keys)
        arms.setdefault(values, Arm(values)).jobs.append(job)
    return list(arms.values())


def metric_columns(jobs: list[Job]) -> list[tuple[str, str, str]]:
    """The METRICS that at least one finished job has."""
    ok = [job for job in jobs if job.failure is None]
    return [m for m in METRICS if any(math.isfinite(job.value(m[1], m[2])) for job in ok)]


@dataclass
class Stat:
    mean: float
    std: float  # sample std over seeds (ddof=1); NaN for fewer than 2 values
    n: int
    values: list[float]


def arm_stat(arm: Arm, section: str, key: str) -> Stat:
    values = [v for v in (job.value(section, key) for job in arm.ok) if math.isfinite(v)]
    if not values:
        return Stat(math.nan, math.nan, 0, [])
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return Stat(float(np.mean(values)), std, len(values), values)


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


@dataclass
class Summary:
    sweep_name: str
    jobs: list[Job]
    keys: list[str]
    common: dict[str, str]
    arms: list[Arm]
    columns: list[tuple[str, str, str]]

    def stats(self, arm: Arm) -> list[Stat]:
        return [arm_stat(arm, section, key) for _, section, key in self.columns]


def summarize(sweep_dir: Path) -> Summary:
    jobs = read_sweep(sweep_dir)
    keys, common = swept_keys(jobs)
    return Summary(sweep_dir.resolve().name, jobs, keys, common, group_arms(jobs, keys), metric_columns(jobs))


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


# -- plots -----------------------------------------------------------------------------------------


def _x_positions(summary: Summary) -> tuple[list[float], list[str], str, bool]:
    """x of each arm, tick labels, axis label, and whether x is numeric (one swept key, numbers)."""
    labels = [arm.label(summary.keys) for arm in summary.arms]
    categorical = list(map(float, range(len(labels))))
    if len(summary.keys) != 1:
        return categorical, labels, "arm", False
    try:
        return [float(arm.values[0]) for arm in summary.arms], labels, summary.keys[0], True
    except ValueError:
        return categorical, labels, summary.keys[0], False


def plot_metrics(summary: Summary) -> Figure | None:
    if not summary.columns:
        return None
    xs, labels, xlabel, numeric = _x_positions(summary)
    cols = min(3, len(summary.columns))
    rows = math.ceil(len(summary.columns) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    stats = [summary.stats(arm) for arm in summary.arms]
    for c, (ax, (name, _, _)) in enumerate(zip(axes, summary.columns)):
        means = np.array([s[c].mean for s in stats])
        stds = np.nan_to_num(np.array([s[c].std for s in stats]))
        ax.errorbar(xs, means, yerr=stds, fmt="o-" if numeric else "o",
                    capsize=4, color="tab:blue", lw=1)
        for x, s in zip(xs, stats):
            ax.scatter([x] * len(s[c].values), s[c].values, s=10, color="tab:orange", alpha=0.7, zorder=3)
        ax.set_xticks(xs)
        long_labels = max(map(len, labels)) > 8
        ax.set_xticklabels(labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center", fontsize=7)
        ax.set_xlim(min(xs) - 0.5 * _spacing(xs), max(xs) + 0.5 * _spacing(xs))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(summary.columns):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _spacing(xs: list[float]) -> float:
    gaps = np.diff(sorted(set(xs)))
    return float(gaps.min()) if len(gaps) else 1.0


def _is_loss_tag(tag: str) -> bool:
    stage, _, name = tag.partition("/")
    return stage in LOSS_STAGES and "/" not in name and ("loss" in name or name in ("contrastive", "masked"))


def loss_curves(summary: Summary) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """tag -> arm label -> [(step, mean over the arm's runs that logged the step)]."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for arm in summary.arms:
        per_tag: dict[str, dict[int, list[float]]] = {}
        for job in arm.jobs:
            for tag, points in read_scalars(job.path / "tb").items():
                if _is_loss_tag(tag):
                    for step, value in points:
                        per_tag.setdefault(tag, {}).setdefault(step, []).append(value)
        for tag, steps in per_tag.items():
            curves.setdefault(tag, {})[arm.label(summary.keys)] = [
                (step, float(np.mean(values))) for step, values in sorted(steps.items())]
    return {tag: curves[tag] for tag in sorted(curves, key=lambda t: (LOSS_STAGES.index(t.split("/")[0]), t))}


def plot_losses(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> Figure | None:
    if not curves:
        return None
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (tag, arms) in zip(axes, curves.items()):
        for label, points in arms.items():
            steps, values = zip(*points)
            ax.plot(steps, values, lw=1.0, marker="o" if len(steps) < 20 else None, ms=3, label=label)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(curves):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


# -- samples ---------------------------------------------------------------------------------------


@dataclass
class ScoredSample:
    job: Job
    index: int
    relation_accuracy: float
    object_accuracy: float

    @property
    def stem(self) -> Path:
        return self.job.path / "samples" / f"sample_{self.index:03d}"

    def rank(self) -> tuple[float, float]:
        """Relation accuracy first (NaN: no relations, counts as 0), then object accuracy."""
        rel = 0.0 if math.isnan(self.relation_accuracy) else self.relation_accuracy
        obj = 0.0 if math.isnan(self.object_accuracy) else self.object_accuracy
        return rel, obj


def score_samples(job: Job) -> list[ScoredSample]:
    """Per-sample compliance of a job's saved samples (shapes world); NaN scores elsewhere."""
    from sg2video.data.shapes import shapes_vocab
    from sg2video.eval.compliance import check_video
    from sg2video.graph_json import GraphFormatError, load_graph_json

    data_name = str((job.config.get("data") or {}).get("name", "shapes"))
    vocab = shapes_vocab() if data_name == "shapes" else None
    scored = []
    for npy in sorted((job.path / "samples").glob("sample_[0-9][0-9][0-9].npy")):
        index = int(npy.stem.split("_")[1])
        rel = obj = math.nan
        graph_path = npy.with_suffix(".json")
        if vocab is not None and graph_path.exists():
            try:
                frames = np.load(npy)
                graphs = load_graph_json(graph_path, vocab).frame_graphs(frames.shape[0])
                result = check_video(frames, graphs[: frames.shape[0]], vocab)
                rel, obj = result.relation_accuracy, result.object_accuracy
            except (GraphFormatError, ValueError, OSError):
                pass
        scored.append(ScoredSample(job, index, rel, obj))
    return scored


def best_and_worst(arm: Arm) -> list[tuple[str, ScoredSample]]:
    """The arm's best sample (the first of the highest scores, in job / sample order) and its worst (the
    last of the lowest), so that two samples show whenever there are two, even when all score alike."""
    samples = [s for job in arm.ok for s in score_samples(job)]
    if not samples:
        return []
    best = max(samples, key=ScoredSample.rank)
    worst = min(reversed(samples), key=ScoredSample.rank)
    return [("best", best)] if best is worst else [("best", best), ("worst", worst)]


def _sample_html(index: int, which: str, sample: ScoredSample) -> str:
    score = f"relation acc {_fixed(sample.relation_accuracy)}, object acc {_fixed(sample.object_accuracy)}"
    stem = sample.stem
    card = {
        "gif_path": f"{stem}.gif",
        "gt_gif_path": f"{stem}_gt.gif" if Path(f"{stem}_gt.gif").exists() else None,
        "graph_png_path": f"{stem}_graph.png" if Path(f"{stem}_graph.png").exists() else None,
        "caption": f"{which}: job {sample.job.num} (seed {sample.job.seed}), sample {sample.index:03d}: {score}",
    }
    return _sample_card(index, card, 500_000)


# -- the page --------------------------------------------------------------------------------------


def _html_table(summary: Summary) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["arm", "runs", *(n for n, _, _ in summary.columns)])
    rows = []
    for arm in summary.arms:
        cells = [arm.label(summary.keys), f"{len(arm.ok)}/{len(arm.jobs)}", *map(_cell, summary.stats(arm))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="results"><tr>{head}</tr>{"".join(rows)}</table>'


def comparison_html(summary: Summary, metrics_fig: Figure | None, losses_fig: Figure | None) -> str:
    keys = ", ".join(summary.keys) or "nothing"
    common = ", ".join(f"{k}={v}" for k, v in summary.common.items()) or "none"
    failed = [job for job in summary.jobs if job.failure is not None]
    failed_html = ("<ul>" + "".join(f"<li>job {html.escape(j.num)}: {html.escape(j.failure or '')}</li>"
                                     for j in failed) + "</ul>") if failed else '<p class="note">None.</p>'
    sections = []
    card = 0
    for arm in summary.arms:
        picked = best_and_worst(arm)
        cards = []
        for which, sample in picked:
            cards.append(_sample_html(card, which, sample))
            card += 1
        body = f'<div class="samples">{"".join(cards)}</div>' if cards else '<p class="note">No samples.</p>'
        sections.append(f'<h3 class="arm">{html.escape(arm.label(summary.keys))}</h3>{body}')

    def figure(fig: Figure | None, alt: str) -> str:
        return f'<img class="curves" src="{_png_uri(fig)}" alt="{alt}">' if fig else '<p class="note">Nothing to plot.</p>'

    title = f"Sweep comparison: {summary.sweep_name}"
    page = html_page(title, f"""<p class="meta">{len(summary.jobs)} jobs in {len(summary.arms)} arms. Swept: <code>{html.escape(keys)}</code>
(seeds are repeats). Common overrides: <code>{html.escape(common)}</code>.</p>
<h2>Results</h2>
<p class="note">Mean ± sample std over seeds (n runs).</p>
{_html_table(summary)}
<h2>Failed jobs</h2>
{failed_html}
<h2>Metrics by arm</h2>
{figure(metrics_fig, "metrics by arm")}
<h2>Training losses</h2>
<p class="note">Mean over an arm's seeds. A stage reused from the stage cache logs no curve in the job that
reused it: shared encoders show under the arm whose job trained them.</p>
{figure(losses_fig, "training losses by arm")}
<h2>Best and worst sample of each arm</h2>
<p class="note">Scored one by one with the shapes compliance checker: relation accuracy, then object accuracy.</p>
{"".join(sections)}
""", extra_css=" h3 { font-size: 1em; margin-top: 1.2em; }")
    return page


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


def plot_compliance_curves(summary: Summary) -> Figure | None:
    arms = [(arm.label(summary.keys), curve_points(arm)) for arm in summary.arms]
    arms = [(label, points) for label, points in arms if points]
    if not arms:
        return None
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    for label, points in arms:
        steps = list(points)
        for ax, (title, key) in zip(axes[:3], CURVE_KEYS):
            stats = [_mean_std(points[s][key]) for s in steps]
            mean = np.array([m for m, _, _ in stats])
            std = np.nan_to_num(np.array([d for _, d, _ in stats]))
            line = ax.plot(steps, mean, marker=".", label=label)[0]
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            ax.set_title(title)
            ax.set_xlabel("diffusion steps")
            ax.set_ylim(-0.02, 1.02)
        cpu = [_mean_std(points[s]["cpu_minutes"])[0] for s in steps]
        axes[3].plot(cpu, [_mean_std(points[s]["object_accuracy"])[0] for s in steps], marker=".", label=label)
    axes[3].set_title("objects at equal CPU time")
    axes[3].set_xlabel("training CPU minutes (all threads)")
    axes[3].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _save_png(fig: Figure, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))


def write_sweep_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Summary, dict[str, Path]]:
    """Every output of the report for `sweep_dir`, written into `out_dir` (default: the sweep dir)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    summary = summarize(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results.md": out / "results.md", "results.csv": out / "results.csv",
             "comparison.html": out / "comparison.html"}
    text = markdown(summary)
    write_atomic(paths["results.md"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_csv(summary, paths["results.csv"])
    metrics_fig, losses_fig = plot_metrics(summary), plot_losses(loss_curves(summary))
    for name, fig in (("metrics.png", metrics_fig), ("losses.png", losses_fig)):
        if fig is not None:
            paths[name] = out / name
            _save_png(fig, paths[name])
    curves_text, curves_fig = curves_markdown(summary), plot_compliance_curves(summary)
    if curves_text is not None:
        paths["curves.md"] = out / "curves.md"
        write_atomic(paths["curves.md"], lambda tmp: tmp.write_text(curves_text, encoding="utf-8"))
    if curves_fig is not None:
        paths["curves.png"] = out / "curves.png"
        _save_png(curves_fig, paths["curves.png"])
    page = comparison_html(summary, metrics_fig, losses_fig)
    write_atomic(paths["comparison.html"], lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return summary, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory (holds <job number>/ folders)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        summary, paths = write_sweep_report(args.sweep_dir, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = sum(job.failure is not None for job in summary.jobs)
    print(f"{len(summary.jobs)} jobs ({failed} failed) in {len(summary.arms)} arms")
    for path in paths.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The sweep report's figures: metrics by arm, training losses, compliance curves."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from sg2video.eval.report import read_scalars
from sg2video.sweeps.reading import LOSS_STAGES, Summary
from sg2video.sweeps.tables import CURVE_KEYS, _mean_std, curve_points


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
            ax.set_xlabel("generator training steps")
            ax.set_ylim(-0.02, 1.02)
        cpu = [_mean_std(points[s]["cpu_minutes"])[0] for s in steps]
        axes[3].plot(cpu, [_mean_std(points[s]["object_accuracy"])[0] for s in steps], marker=".", label=label)
    axes[3].set_title("objects at equal CPU time")
    axes[3].set_xlabel("training CPU minutes (all threads)")
    axes[3].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig



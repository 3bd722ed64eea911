"""Reading a sweep: its jobs (overrides, config, metrics, failures), their arms (jobs that differ only in
train.seed) and per-arm statistics over seeds."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sg2video.rundir import read_failure

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
    ("relation-control object acc", "eval", "control_norel/object_accuracy"),
    ("relation-control relation acc", "eval", "control_norel/relation_accuracy"),
    ("relation acc above the relation control", "eval", "control_norel/relation_margin"),
    ("attention acc", "eval", "relation_family/attention"),  # the household world's predicate families
    ("spatial acc", "eval", "relation_family/spatial"),
    ("depth acc", "eval", "relation_family/depth"),
    ("contact acc", "eval", "relation_family/contact"),
    ("relation-control depth acc", "eval", "control_norel/relation_family/depth"),
    ("relation-control contact acc", "eval", "control_norel/relation_family/contact"),
    ("unseen object acc", "eval", "unseen/object_accuracy"),
    ("unseen relation acc", "eval", "unseen/relation_accuracy"),
    ("seen object acc", "eval", "seen/object_accuracy"),
    ("seen relation acc", "eval", "seen/relation_accuracy"),
    ("held-out triple relation acc", "eval", "heldout_triples/relation_accuracy"),
    ("eval graphs in training", "eval", "eval_graphs_in_training"),
    ("relation acc, both objects detected", "eval", "relation_accuracy_detected"),
    ("kept through the clip", "eval", "identity/kept"),
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



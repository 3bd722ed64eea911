"""The run directory's layout, documented once: where stages put what.

- `.hydra/`                       Hydra's composed config and overrides
- `tb/`                           TensorBoard event files (all stages)
- `checkpoints/<stage>/last.pt`   the newest checkpoint of a stage (+ `step_N.pt` fallbacks)
- `samples/`                      generated videos and their graph pictures
- `metrics.json`                  one section per stage
- `report.html`                   the self-contained run report
- `run.log`                       everything the run printed, with times (Hydra's job log)
- `failed.json`                   a sweep job that failed: its one-line reason (sg2video.cli.run_job)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sg2video.atomic import write_text_atomic


def stage_checkpoint(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage / "last.pt"


def samples_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "samples"


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(run_dir: Path, section: str, values: dict[str, Any]) -> dict:
    """Merge `values` into `metrics.json[section]`, written atomically (NaN becomes null)."""
    path = Path(run_dir) / "metrics.json"
    data = read_metrics(run_dir)
    data[section] = _json_safe(values)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def curve_path(run_dir: Path) -> Path:
    return Path(run_dir) / "curve.json"


def read_curve(run_dir: Path) -> list[dict]:
    path = curve_path(run_dir)
    return json.loads(path.read_text())["points"] if path.exists() else []


def add_curve_point(run_dir: Path, point: dict[str, Any]) -> list[dict]:
    """Add one point (a dict with "step") of the diffusion stage's training curve to `curve.json`, written
    atomically; a point at the same step (a rerun, a resume) replaces the old one. Returns the points by step."""
    points = {int(p["step"]): p for p in read_curve(run_dir)}
    points[int(point["step"])] = _json_safe(point)
    ordered = [points[s] for s in sorted(points)]
    path = curve_path(run_dir)
    write_text_atomic(path, json.dumps({"points": ordered}, indent=1, sort_keys=True) + "\n")
    return ordered


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _json_safe(value.item())
    return value


FAILURE_FILE = "failed.json"


def write_failure(run_dir: Path, reason: str, kind: str) -> None:
    """Mark a sweep job as failed, with its one-line reason (written atomically)."""
    path = Path(run_dir) / FAILURE_FILE
    write_text_atomic(path, json.dumps({"reason": reason, "kind": kind}, indent=2) + "\n")


def read_failure(run_dir: Path) -> str | None:
    """The reason a job failed, or None when it did not (or left no readable mark)."""
    path = Path(run_dir) / FAILURE_FILE
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text())["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return "failed (unreadable failed.json)"

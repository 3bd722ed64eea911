"""A finished run's hyper-parameters and final metrics for TensorBoard's HPARAMS tab.

`log_hparams(cfg, run_dir)` (rank 0, called by `run_pipeline` after the stages) writes one hparams session
into `run_dir/tb/hparams/` with `SummaryWriter.add_hparams`: the flattened settings that tell runs apart
(`sg2video.eval.report.summarize_config`'s keys, plus every key the job's command line or sweep overrode)
and every number of `metrics.json` as `final/<section>/<key>`. `tensorboard --logdir <sweep dir>` then lists
each job of a sweep as one row (run `<job>/tb/hparams`). Writing again (a resumed or re-run job) replaces
the session instead of adding a second one.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from sg2video.eval.report import summarize_config
from sg2video.rundir import read_metrics

HPARAMS_RUN = "hparams"  # the subfolder of tb/ that holds the session
METRIC_PREFIX = "final/"  # metric tags must not collide with the stages' own scalars (add_hparams' docs)
SKIPPED_OVERRIDES = ("cache_dir", "run_dir", "device", "hydra")  # where a run writes, not what it is


def _hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard's hparams accept: numbers, strings and bools as they are, the rest as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "none"
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return str(value)


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def _hydra_runtime():
    """Hydra's runtime config of this job, or None (a test calling run_pipeline without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def hparams_of(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The flat hyper-parameters of a run: summarize_config's keys, the group choices the job overrode
    (`encoder=gcn_sum`, `+experiment=NAME`), and the leaves of every other key it overrode."""
    flat: dict[str, Any] = dict(summarize_config(cfg))
    hydra_cfg = _hydra_runtime()
    if hydra_cfg is not None:
        choices = hydra_cfg.runtime.choices
        for line in hydra_cfg.overrides.task:
            key = line.split("=", 1)[0].lstrip("+~")
            if not key or key.startswith(SKIPPED_OVERRIDES):
                continue
            if key in choices:
                flat[key] = choices[key]
                continue
            node = OmegaConf.select(cfg, key, default=None)
            if isinstance(node, (DictConfig, ListConfig)):
                node = OmegaConf.to_container(node, resolve=True)
            flat.update(_leaves(node, key))
    return {key: _hparam_value(value) for key, value in flat.items()}


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number of metrics.json (nested sections flattened with "/"), tagged `final/...`."""
    flat: dict[str, float] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
            flat[METRIC_PREFIX + prefix] = float(node)

    walk(metrics, "")
    return flat


def log_hparams(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Write this run's hparams session into `run_dir/tb/hparams/` (replacing an earlier one); returns it."""
    from torch.utils.tensorboard import SummaryWriter

    tb_dir = Path(run_dir) / "tb"
    session_dir = tb_dir / HPARAMS_RUN
    shutil.rmtree(session_dir, ignore_errors=True)
    with SummaryWriter(str(tb_dir)) as writer:
        writer.add_hparams(hparams_of(cfg), final_metrics(read_metrics(run_dir)), run_name=HPARAMS_RUN)
    return session_dir

"""What the Hydra entry scripts share: a pre-flight check of the command line, before Hydra runs, and the
way a sweep job fails without taking the sweep with it.

Hydra reports a bad override or an unknown group option in several lines and exits 1, and it creates
the run directory before the task can refuse a bad value. `preflight` composes the config for every
combination of a sweep first and validates it, so a person's mistake is one line, exit status 2, and
nothing is written.

In a sweep (`-m`), `run_job` turns a job's failure (a value found wrong late, a loss that stays non-finite, a
crash) into `failed.json` in the job's directory, an error line in its `run.log` (with the traceback for a
crash) and on stderr, and a NaN for the sweeper; the next job runs. `SweepFailures`, a Hydra callback, then ends
the sweep with exit status 1 naming the failed jobs. A single run fails as before: one line and exit 2 for a
person's mistake, a traceback for a bug.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from sg2video.config import register_resolvers
from sg2video.errors import USER_ERROR_EXIT, UserError, exit_on_user_error

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
MAX_PREFLIGHT_JOBS = 256
# Hydra's own flags that print or redirect instead of running: leave those to Hydra
HYDRA_INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc",
                    "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p",
                    "--experimental-rerun", "--resolve")
# conf/config.yaml finds experiments/ through this variable, wherever the command is run from
os.environ.setdefault("SG2VIDEO_ROOT", str(REPO_ROOT))
# whoever composes CONF_DIR (the entry points, tests, benchmarks) needs the resolvers and the schemas it names
register_resolvers()


def _first_line(err: BaseException) -> str:
    """Hydra's multi-line message as one line; "Available options" lists are folded in, and a value of the
    wrong type names its key."""
    from omegaconf.errors import ValidationError

    cause = err.__cause__ or err.__context__
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause).strip().splitlines()[0]}"
    text = str(err).strip() or err.__class__.__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text
    head = lines[0]
    for i, line in enumerate(lines):
        if line.startswith("Available options"):
            options = []
            for option in lines[i + 1 :]:
                if option.startswith("Config search path") or option.endswith(":"):
                    break
                options.append(option)
            return f"{head} (accepted: {', '.join(options)})"
    return " ".join(lines[:2])



def _expand(args: list[str]) -> list[list[str]]:
    """Hydra command-line overrides -> one override list per job of the sweep (first value if huge)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = parser.parse_overrides(args)
    choices: list[list[str]] = []
    for override in overrides:
        if override.is_sweep_override():
            key = override.get_key_element()
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            values = [override.input_line]
        choices.append(values)
    jobs = [list(combo) for combo in itertools.product(*choices)]
    return jobs[:MAX_PREFLIGHT_JOBS]


def preflight(config_name: str, argv: list[str], validate: Callable[[DictConfig], None] | None) -> None:
    """Compose (and validate) the config for every job the command line asks for; exit 2 on a mistake."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if any(flag in argv for flag in HYDRA_INFO_FLAGS):
        return
    args = [a for a in argv if not a.startswith("-")]
    multirun = "-m" in argv or "--multirun" in argv
    if (config_name == "config" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not multirun
            and not any(a.lstrip("+").startswith("hydra.run.dir=") for a in args)):
        _fail("several processes (WORLD_SIZE > 1) need an explicit hydra.run.dir=DIR: the default directory name "
              "holds the start time and process id, which differ between processes")
    try:
        if multirun:
            args = args + _grid_from_config(config_name, args)
        jobs = _expand(args)
        for job in jobs:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                cfg = compose(config_name=config_name, overrides=job)
                if validate is not None:
                    validate(cfg)
    except UserError as err:
        _fail(str(err))
    except Exception as err:  # Hydra/OmegaConf composition errors: the person's override is wrong
        _fail(f"bad command line: {_first_line(err)}")
    finally:
        GlobalHydra.instance().clear()


def _grid_from_config(config_name: str, args: list[str]) -> list[str]:
    """A multirun's grid from `hydra.sweeper.params` (named experiments carry theirs) as sweep overrides, for
    keys the command line does not set (on the command line a key wins over the grid, as in Hydra's sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(args)}
    base = [a for a in args if "," not in a.split("=", 1)[-1]]  # the grid does not depend on swept values
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name=config_name, overrides=base, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items() if key not in given]


def _fail(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # every process of a torchrun job checks; one says so
        print(f"error: {message}", file=sys.stderr, flush=True)
    else:  # let rank 0 say it before torchrun, seeing this rank exit, stops the others
        time.sleep(3)
    raise SystemExit(USER_ERROR_EXIT)


# -- sweep jobs that fail ---------------------------------------------------------------------------


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run one job of `src/run.py` (see the module docstring for what a failure does)."""
    if not _in_multirun():
        return exit_on_user_error(task)(cfg)
    import logging
    import traceback

    from hydra.core.hydra_config import HydraConfig

    from sg2video.logs import to_log_files
    from sg2video.rundir import FAILURE_FILE, write_failure

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    (job_dir / FAILURE_FILE).unlink(missing_ok=True)  # a rerun of a job that failed before starts clean
    try:
        return task(cfg)
    except KeyboardInterrupt:
        raise
    except UserError as err:
        reason, kind, details = str(err), "error", None
    except Exception as err:  # a bug: keep the traceback in the job's log
        reason, kind, details = f"{type(err).__name__}: {err}", "crash", traceback.format_exc()
    write_failure(job_dir, reason.splitlines()[0] if reason else kind, kind)
    to_log_files(f"error: {reason}" + (f"\n{details}" if details else ""), logging.ERROR)
    print(f"error: job {HydraConfig.get().job.num} ({job_dir}): {reason.splitlines()[0] if reason else kind}",
          file=sys.stderr, flush=True)
    return float("nan")


class SweepFailures:
    """Hydra callback (conf/config.yaml `hydra.callbacks`): after a sweep, exit 1 naming the jobs that failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sg2video.rundir import read_failure

        sweep = Path(str(config.hydra.sweep.dir))
        failed = [(job.name, read_failure(job)) for job in sorted(sweep.iterdir(), key=lambda p: p.name)
                  if job.is_dir() and read_failure(job) is not None] if sweep.is_dir() else []
        if failed:
            names = "; ".join(f"job {name}: {reason}" for name, reason in failed)
            print(f"error: {len(failed)} job(s) of the sweep in {sweep} failed ({names})", file=sys.stderr, flush=True)
            raise SystemExit(1)

    # the other Callback hooks, which Hydra calls on every callback
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None: ...
    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None: ...
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None: ...
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None: ...
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None: ...
    def on_compose_config(self, config: DictConfig, config_name: str | None, overrides: list[str]) -> None: ...

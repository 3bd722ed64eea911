"""What the Hydra entry scripts share: a pre-flight check of the command line, before Hydra runs.

Hydra reports a bad override or an unknown group option in several lines and exits 1, and it creates
the run directory before the task can refuse a bad value. `preflight` composes the config for every
combination of a sweep first and validates it, so a person's mistake is one line, exit status 2, and
nothing is written.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from sg2video.config import register_resolvers
from sg2video.errors import USER_ERROR_EXIT, UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
MAX_PREFLIGHT_JOBS = 256
# Hydra's own flags that print or redirect instead of running: leave those to Hydra
HYDRA_INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc",
                    "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p",
                    "--experimental-rerun", "--resolve")
# conf/config.yaml finds experiments/ through this variable, wherever the command is run from
os.environ.setdefault("SG2VIDEO_ROOT", str(REPO_ROOT))


def _first_line(err: BaseException) -> str:
    """Hydra's multi-line message as one line; "Available options" lists are folded in."""
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

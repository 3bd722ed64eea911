"""Checkpoints that never lose work.

A checkpoint is a dict of tensors and plain containers only (state dicts, the resolved config as a
dict, the vocabulary as a dict, counters, RNG states), so it loads with `weights_only=True`. It is
written to a temporary file in the same directory, flushed to disk and renamed over the target: a kill
during a save leaves the previous file intact (and a temp file, removed at the next save). `last.pt` is
the newest; `step_NNNNNNN.pt` files keep the last K for falling back when `last.pt` is unreadable.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sg2video.atomic import link_atomic, write_atomic
from sg2video.errors import UserError


class CheckpointError(UserError):
    """A checkpoint file that is missing, truncated or not one of ours."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through `sg2video.atomic.write_atomic(durable=True)`: a kill at any moment leaves `path` either
    old or new, never partial; what it may leave is the temp file `.<name>.<random>.tmp`
    (`save_training_checkpoint` removes those of a checkpoint directory)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp), durable=True, keep_suffix=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (`weights_only=True`); a clear CheckpointError when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle
        reason = str(err).splitlines()[0][:160] if str(err) else err.__class__.__name__
        raise CheckpointError(f"{path}: not a readable sg2video checkpoint ({reason})") from None
    if not isinstance(data, dict) or "format" not in data:
        raise CheckpointError(f"{path}: not an sg2video checkpoint (no 'format' key)")
    return data


def step_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:07d}.pt"


def _step_files(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the `step_N.pt` files, oldest first (by number: `step_10000000` sorts after `step_9999999`)."""
    found = []
    for path in directory.glob("step_*.pt"):
        number = path.stem[len("step_"):]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files a killed save left in a checkpoint directory (its only writer is us)."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        if tmp.name.startswith((".last.pt.", ".step_")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_training_checkpoint(directory: str | Path, state: dict, keep_last: int = 2) -> Path:
    """Write `step_N.pt`, make `last.pt` the same file (a hard link; a copy where links fail), then prune.

    Keeps the newest `keep_last` step files for falling back when `last.pt` is unreadable. Temp files of
    earlier saves that were killed are removed first.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory)
    state = {"format": 1, **state}
    step = int(state["step"])
    written = step_path(directory, step)
    atomic_save(state, written)
    try:
        link_atomic(written, directory / "last.pt")
    except OSError:  # a file system without hard links
        atomic_save(state, directory / "last.pt")
    steps = [path for _, path in _step_files(directory) if path != written]
    for old in steps[: max(0, len(steps) + 1 - max(1, keep_last))]:
        old.unlink(missing_ok=True)
    return directory / "last.pt"


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu", warn=print) -> dict | None:
    """The newest readable checkpoint in `directory`: `last.pt`, or a newer or readable `step_N.pt`.

    A step file newer than `last.pt` exists when a save was killed between the two names. Unreadable
    files are reported through `warn` and skipped; temp files are ignored; None when there is nothing.
    """
    directory = Path(directory)
    last, last_step = None, -1
    if (directory / "last.pt").exists():
        try:
            last = load_checkpoint(directory / "last.pt", map_location)
            last_step = int(last.get("step", -1))
        except CheckpointError as err:
            warn(f"warning: {err}; trying the step_N.pt files")
    for number, path in reversed(_step_files(directory)):
        if number <= last_step:
            break
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as err:
            warn(f"warning: {err}; trying an older checkpoint")
    return last


# -- RNG states as plain tensors and containers -------------------------------------------------


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)

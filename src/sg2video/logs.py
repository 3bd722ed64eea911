"""What a run says, and where it goes.

Every line a run prints (stage starts, resume, skipped steps, budgets, cache reuse, results) goes through
`say`, on the `sg2video` logger. Under `src/run.py` Hydra's job logging (conf/hydra/job_logging/sg2video.yaml)
sends it to the terminal as the bare message and to the run directory's `run.log` with time, logger and level.
Where nothing configured logging (a library call, a CLI with logging off) `say` prints, so no line is lost.
Errors a person caused are printed as one line by `sg2video.errors.fail`, and `to_log_files` puts the same line
into the log files without printing it twice.
"""
from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("sg2video")


def say(message: str) -> None:
    """One line for the person running the job (and the run's log file)."""
    if LOGGER.hasHandlers():
        LOGGER.info(message)
    else:
        print(message, flush=True)


def to_log_files(message: str, level: int = logging.ERROR) -> None:
    """`message` into every log file handler of the root logger, not onto the terminal."""
    record = LOGGER.makeRecord(LOGGER.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def progress_enabled() -> bool:
    """Progress bars only on a terminal: in a log file or a SLURM output they are noise."""
    return sys.stderr.isatty()

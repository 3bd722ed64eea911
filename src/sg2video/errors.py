"""Errors a person can cause, and the one-line exit they get at the command line.

A `UserError` carries a message that names the bad value, where it was found and what would be
accepted. CLIs wrap their body in `exit_on_user_error` so such an error prints one line on stderr and
exits with status 2, without a traceback. Bugs stay ordinary exceptions (assertions, tracebacks).
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A problem in something a person supplied: a config value, a file, a path."""


class ConfigError(UserError):
    """A config value that is out of range or unknown."""


def fail(message: str) -> None:
    """Print `message` as the single error line (and put it in the run's log file) and exit with status 2."""
    from sg2video.logs import to_log_files

    print(f"error: {message}", file=sys.stderr, flush=True)
    to_log_files(f"error: {message}")
    raise SystemExit(USER_ERROR_EXIT)


def exit_on_user_error(fn: F) -> F:
    """Decorator for CLI bodies: a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(str(err))

    return wrapper  # type: ignore[return-value]

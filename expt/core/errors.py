"""Errors a user can act on.

Like Optuna's ``exceptions.py``: one base class, and every message names the fix.
The CLI turns an :class:`ExptError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ExptError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(ExptError):
    """Wrong arguments, overrides or config values (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A config does not compose or does not validate."""


class DataError(UsageError):
    """The dataset the config points at cannot be used as asked."""


class TrackingError(ExptError):
    """The tracking store cannot be reached or written."""


class RunFailedError(ExptError):
    """The experiment itself failed while running (every fold failed, say)."""

"""Errors that name the problem and the fix.

Every user-facing failure of rarl-gym raises one of these, never a bare traceback from deep
inside torch or PIL. Each message says what is wrong and, after ``Fix:``, what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable


class RarlGymError(Exception):
    """Base class of rarl-gym's errors."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\nFix: {fix}")


class ConfigError(RarlGymError, ValueError):
    """A wrong argument: unknown kwarg, unknown backbone, bad value."""


class DatasetNotFoundError(RarlGymError, FileNotFoundError):
    """A dataset folder is missing or incomplete."""


class CorruptFileError(RarlGymError, ValueError):
    """A file of a dataset (JPEG, XML, JSON) or of a cache cannot be read."""


class ActionError(RarlGymError, ValueError):
    """An action outside the action space: wrong shape, NaN, out of bounds."""


class CheckpointError(RarlGymError, ValueError):
    """A checkpoint that does not fit: another configuration, a missing or corrupt file."""


class RunExistsError(RarlGymError, FileExistsError):
    """A run folder that already holds a run (rarl-gym never overwrites one silently)."""


class DiskFullError(RarlGymError, OSError):
    """No space left where rarl-gym writes (cache, run folder): the message says how much is needed
    and where; nothing half-written is left that reads as valid."""


class NotWritableError(RarlGymError, PermissionError):
    """A folder rarl-gym must write to (cache, run folder) is read-only or not a folder."""


class InUseError(RarlGymError, RuntimeError):
    """Another process holds the lock of a run folder or of a feature cache entry being extracted."""


def check_names(names: Iterable[str], valid: Collection[str], problem: str, fix: str) -> None:
    """Raise :class:`ConfigError` ``"<problem> 'x' (did you mean 'y'?), ..."`` for the ``names`` not in ``valid``."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(valid), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{problem} {', '.join(hints)}", fix)


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}", f"use one of {', '.join(map(repr, choices))}")


__all__ = [
    "ActionError",
    "CheckpointError",
    "ConfigError",
    "CorruptFileError",
    "DatasetNotFoundError",
    "DiskFullError",
    "InUseError",
    "NotWritableError",
    "RarlGymError",
    "RunExistsError",
    "check_choice",
    "check_names",
]

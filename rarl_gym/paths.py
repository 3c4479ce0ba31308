"""Where rarl-gym keeps what it computes once: the cache root (feature caches, scorers, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$RARL_CACHE``, else ``~/.cache/rarl_gym``."""
    return Path(os.environ.get("RARL_CACHE") or Path.home() / ".cache" / "rarl_gym").expanduser()


__all__ = ["default_cache_dir"]

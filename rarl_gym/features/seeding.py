"""A deterministic random init that leaves the caller's global RNG as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without touching the caller's global RNG state (CPU generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


__all__ = ["seeded"]

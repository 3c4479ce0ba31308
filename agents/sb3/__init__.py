"""Stable-Baselines3 agents (PPO, A2C, SAC, TD3, RecurrentPPO) on the glimpse env.

* :mod:`agents.sb3.extractor`: :class:`GlimpseExtractor`, the features extractor of the Dict obs;
* :mod:`agents.sb3.algos`: :data:`ALGOS` and :func:`make_agent` (defaults per algorithm);
* :mod:`agents.sb3.train`: :func:`train_sb3` (run folder, TensorBoard, resume, evaluation);
* :mod:`agents.sb3.vec_env`: the SB3 ``VecEnv`` adapter of the native batched vector env.

The run folder and the evaluation through the env are framework-free, shared with
:mod:`agents.custom`: :mod:`agents.common`.

Importing this package does not import SB3; the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GlimpseExtractor": "agents.sb3.extractor",
    "ALGOS": "agents.sb3.algos",
    "make_agent": "agents.sb3.algos",
    "train_sb3": "agents.sb3.train",
    "load_model": "agents.sb3.train",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents.sb3' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

"""Picking the torch device at run time."""

from __future__ import annotations

import torch

from rarl_gym.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}", "use 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no GPU is visible", "use --device cpu (or auto)")
    return device


__all__ = ["pick_device"]

"""Picking the torch device at run time."""

from __future__ import annotations

import os

import torch

from rarl_gym.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when there is a GPU, else the CPU. A named device must exist here: ``"cuda:N"``
    one of the visible GPUs, ``"mps"`` an available Apple GPU; ``"meta"`` (shapes, no data) is refused.

    Raises:
        ConfigError: an unknown name, or a device that is not there, naming the fix.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}", "use 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no GPU is visible", "use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise ConfigError(
            f"device {name!r} was asked for but only {count} GPU{'s' if count != 1 else ''} "
            f"{'are' if count != 1 else 'is'} visible",
            f"use --device {'cuda:0' if count == 1 else f'cuda:0 to cuda:{count - 1}'} (or cuda, auto)",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but no MPS (Apple GPU) is available", "use --device cpu (or auto)")
    if device.type == "meta":
        raise ConfigError(
            f"device {name!r} is not a compute device (meta tensors hold shapes, no data)", "use 'auto', 'cpu' or 'cuda[:N]'"
        )
    return device


def distributed() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: under ``torchrun`` (``WORLD_SIZE`` > 1) the process
    group is initialised on first call (NCCL with CUDA, else Gloo); otherwise ``(0, 1)``.

    The one torchrun set-up of the project: the trainer and the feature extraction both call it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


__all__ = ["distributed", "pick_device"]

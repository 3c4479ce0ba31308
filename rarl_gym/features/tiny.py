"""The ``"tiny"`` backbone's network: a four-layer random-init conv net (seed 0) for fast tests."""

from __future__ import annotations

from torch import nn

from rarl_gym.features.seeding import seeded

#: Channels and stride of the tiny net's map.
TINY_CHANNELS, TINY_STRIDE = 32, 16


def tiny_net() -> nn.Sequential:
    """Images ``[B, 3, N, N]`` -> ``[B, 32, N/16, N/16]``: four stride-2 conv + batch-norm + ReLU
    blocks, initialised with seed 0 (the caller's global RNG is left as it was)."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    with seeded(0):
        return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32), *block(32, 32))


__all__ = ["TINY_CHANNELS", "TINY_STRIDE", "tiny_net"]

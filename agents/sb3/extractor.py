"""A features extractor for the glimpse env's Dict observation, for any SB3 ``MultiInput*Policy``."""

from __future__ import annotations

from typing import cast

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class GlimpseExtractor(BaseFeaturesExtractor):
    """Project the channels, embed each glimpse region with shared weights, pool over regions, add the step.

    Input (after SB3's ``preprocess_obs``, which one-hot encodes a ``Discrete`` entry of a Dict
    observation and casts a ``Box`` to float):

    * ``glimpses``: ``[B, K, C, s, s]`` the features of the K regions (K = 9 anchors);
    * ``step``: ``[B, T + 1]`` (or ``[B, 1, T + 1]``, as the rollout buffers store it) one-hot;
    * ``overview`` (envs made with ``overview=o``): ``[B, C, o, o]`` the whole image's pooled map.

    Computation: the C channels of every cell are projected to ``proj_dim`` by one shared
    ``Linear + ReLU`` (a 1 x 1 convolution, as the RARL agent's projection: it makes the rest
    ``C / proj_dim`` times cheaper, 20x for 1280 channels), each region's ``proj_dim*s*s`` values are
    embedded by one shared ``Linear + ReLU`` (``[B, K, embed_dim]``); mean and max over the K regions are concatenated
    (``[B, 2 * embed_dim]``; the regions are a set, their order carries only the anchor shape) and
    so is the step one-hot (``[B, 2 * embed_dim + T + 1]``); with an overview, its cells go
    through the same projection and one ``Linear + ReLU`` over all ``o * o`` cells
    (``[B, embed_dim]``, concatenated too: where things are, for planning the next centre); a
    ``Linear + ReLU`` maps this to ``[B, features_dim]``.

    Args:
        observation_space: ``Dict(glimpses=Box(K, C, s, s), step=Discrete(T + 1))`` (and ``overview=Box(C, o, o)``).
        features_dim: size of the output (default 256).
        embed_dim: size of each region's embedding (default ``features_dim``).
        proj_dim: channels after the projection (default 64; ``0``: no projection).
    """

    def __init__(
        self, observation_space: spaces.Dict, features_dim: int = 256, embed_dim: int | None = None, proj_dim: int = 64
    ):
        super().__init__(observation_space, features_dim)
        glimpses = cast(spaces.Box, observation_space["glimpses"])
        step = cast(spaces.Discrete, observation_space["step"])
        _, channels, s, _ = glimpses.shape  # K, C, s, s
        self.proj = nn.Sequential(nn.Linear(channels, proj_dim), nn.ReLU()) if proj_dim else nn.Identity()
        self.region_dim = (proj_dim or channels) * s * s
        self.num_steps = int(step.n)  # T + 1
        embed_dim = embed_dim or features_dim
        self.embed = nn.Sequential(nn.Linear(self.region_dim, embed_dim), nn.ReLU())
        self.overview_cells = 0
        extra = 0
        if "overview" in observation_space.spaces:
            overview_shape = cast(spaces.Box, observation_space["overview"]).shape  # C, o, o
            self.overview_cells = int(overview_shape[1] * overview_shape[2])
            self.overview = nn.Sequential(nn.Linear((proj_dim or channels) * self.overview_cells, embed_dim), nn.ReLU())
            extra = embed_dim
        self.head = nn.Sequential(nn.Linear(2 * embed_dim + self.num_steps + extra, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        g = observations["glimpses"]  # [B, K, C, s, s]
        cells = self.proj(g.flatten(3).transpose(2, 3))  # [B, K, s*s, P]
        regions = self.embed(cells.reshape(g.shape[0], g.shape[1], self.region_dim))  # [B, K, E]
        pooled = torch.cat([regions.mean(1), regions.amax(1)], dim=1)  # [B, 2E]
        step = observations["step"].reshape(g.shape[0], self.num_steps).to(pooled.dtype)  # [B, T+1]
        parts = [pooled, step]
        if self.overview_cells:
            o = observations["overview"].flatten(2).transpose(1, 2)  # [B, o*o, C]
            parts.append(self.overview(self.proj(o).flatten(1)))  # [B, E]
        return self.head(torch.cat(parts, dim=1))


__all__ = ["GlimpseExtractor"]

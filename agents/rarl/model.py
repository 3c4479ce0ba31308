"""The paper's recurrent attention-aware module (Chen et al. 2018, "Proposed Method").

Per region i of step t: a fully-connected layer embeds the cropped features, an LSTM cell takes
the embedding and the shared previous state ``(h_{t-1}, c_{t-1})`` and gives ``h_{t,i}``, and a
fully-connected classifier gives the region's label scores ``s_{t,i}``. The region states are
averaged into ``h_t`` (and ``c_t``, our reading: the paper only names ``h_t``); the localization
layer maps ``h_t`` to the mean of a Gaussian of standard deviation ``sigma = 0.11`` over the next
centre. A learned baseline ``b_t`` (Mnih et al. 2014) reads ``h_t`` without back-propagating into
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rarl_gym.glimpse import FIXED_GRID

#: The paper's standard deviation of the location policy, in [-1, 1] image coordinates.
SIGMA = 0.11


@dataclass
class AgentOutput:
    """One step of the agent for a batch of B images and K regions."""

    scores: torch.Tensor  # [B, K, L] region label scores (logits)
    loc_mean: torch.Tensor  # [B, 2] mean of the next centre, in [-1, 1]
    baseline: torch.Tensor  # [B] predicted return
    state: tuple[torch.Tensor, torch.Tensor]  # (h_t, c_t), each [B, H]


class RARLAgent(nn.Module):
    """FC embed -> LSTM cell per region -> classifier; localization and baseline on the mean state.

    Args:
        channels: C, the backbone's channels.
        num_classes: L.
        glimpse_size: s, the side of each region's crop.
        proj_dim: the embedding is low-rank: a per-cell linear projection of the C channels
            to ``proj_dim`` (a 1x1 convolution), then a fully-connected layer over the
            ``proj_dim * s * s`` values. It is one fully-connected layer of rank ``proj_dim``,
            at a fraction of the cost for C = 1280; ``proj_dim=None`` uses a full FC layer.
        embed_dim, hidden_dim: the embedding and LSTM sizes.
        sigma: standard deviation of the Gaussian location policy.
        dropout: dropout on the region features before the embedding (training only).
        recurrent_classifier: classify from the LSTM state (the paper, "Ours-C"); ``False``
            classifies each region from its embedding alone while the LSTM still drives the
            location ("Ours-B" of the paper's Table 4).
        memory: carry the LSTM state across steps (the paper); ``False`` starts every step
            from a zero state, so classification and location depend on the current regions
            only ("Ours-A", no LSTM).
        location_prior: ``"grid"`` adds the localization output to the t-th centre of
            :data:`rarl_gym.glimpse.FIXED_GRID` (so an untrained agent looks like the fixed grid
            and REINFORCE learns where to deviate from it); ``"none"`` is the paper's absolute
            centre.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        *,
        glimpse_size: int = 1,
        proj_dim: int | None = 64,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        sigma: float = SIGMA,
        dropout: float = 0.2,
        recurrent_classifier: bool = True,
        memory: bool = True,
        location_prior: str = "grid",
    ):
        super().__init__()
        self.channels = channels
        self.glimpse_size = glimpse_size
        self.proj_dim = proj_dim
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.sigma = sigma
        self.recurrent_classifier = recurrent_classifier
        self.memory = memory
        if location_prior not in ("grid", "none"):
            raise ValueError(f"location_prior must be 'grid' or 'none', got {location_prior!r}")
        self.location_prior = location_prior
        cells = glimpse_size * glimpse_size
        self.proj = nn.Conv2d(channels, proj_dim, 1) if proj_dim is not None else nn.Identity()
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Flatten(), nn.Linear((proj_dim or channels) * cells, embed_dim), nn.ReLU())
        self.lstm = nn.LSTMCell(embed_dim, hidden_dim)
        self.classifier = nn.Linear(hidden_dim if recurrent_classifier else embed_dim, num_classes)
        self.locator = nn.Linear(hidden_dim, 2)
        self.baseline = nn.Linear(hidden_dim, 1)
        nn.init.zeros_(self.locator.weight)  # start looking at the middle, spread by sigma
        nn.init.zeros_(self.locator.bias)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden_dim, device=device)
        return zeros, zeros.clone()

    def center_mean(self, loc_mean: torch.Tensor, t: int) -> torch.Tensor:
        """Mean ``[B, 2]`` of the centre chosen at step ``t`` (for step ``t + 1``), in [-1, 1]."""
        if self.location_prior == "none":
            return loc_mean
        prior = loc_mean.new_tensor(FIXED_GRID[t % len(FIXED_GRID)])
        return (prior + loc_mean).clamp(-1.0, 1.0)

    def project(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """The embedding's 1 x 1 projection applied to whole maps ``[B, C, H, W] -> [B, P, H, W]``.

        Bilinear cropping is linear and its weights sum to one inside the image, so cropping the
        projected map equals projecting the crops: the trainer projects each map once and crops
        P instead of C channels (``forward(..., projected=True)``).
        """
        return self.proj(feature_maps)

    def forward(self, glimpses: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], *, projected: bool = False) -> AgentOutput:
        """One iteration.

        Args:
            glimpses: ``[B, K, C, s, s]`` region crops (``[B, K, P, s, s]`` if ``projected``).
            state: ``(h_{t-1}, c_{t-1})``, each ``[B, H]``.
        """
        b, k = glimpses.shape[:2]
        crops = glimpses.flatten(0, 1)  # [B*K, C, s, s]
        x = self.embed(crops if projected else self.proj(crops))  # [B*K, E]
        if not self.memory:
            state = self.initial_state(b, glimpses.device)
        h_prev, c_prev = (s.repeat_interleave(k, dim=0) for s in state)  # [B*K, H]
        h, c = self.lstm(x, (h_prev, c_prev))
        scores = self.classifier(h if self.recurrent_classifier else x).reshape(b, k, -1)  # [B,K,L]
        h_t = h.reshape(b, k, -1).mean(1)  # [B,H]
        c_t = c.reshape(b, k, -1).mean(1)
        return AgentOutput(
            scores=scores,
            loc_mean=torch.tanh(self.locator(h_t)),
            baseline=self.baseline(h_t.detach()).squeeze(-1),
            state=(h_t, c_t),
        )

    def config(self) -> dict:
        """The constructor arguments (stored in checkpoints to rebuild the agent)."""
        names = ("channels", "num_classes", "glimpse_size", "proj_dim", "embed_dim", "hidden_dim", "sigma", "dropout", "recurrent_classifier", "memory", "location_prior")
        return {name: getattr(self, name) for name in names}


__all__ = ["SIGMA", "AgentOutput", "RARLAgent"]

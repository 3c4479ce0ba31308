"""The RARL agent acting through the Gymnasium API (``GlimpseEnv`` in ``mode="joint"``)."""

from __future__ import annotations

import numpy as np
import torch

from agents.rarl.model import RARLAgent


class RARLEnvPolicy:
    """Wraps a :class:`RARLAgent` as a stateful policy for one ``mode="joint"`` env.

    Each call reads the observation's glimpses, advances the LSTM and returns the action:
    the next centre (the Gaussian's mean, or a sample with ``deterministic=False``) followed by
    the label scores of the regions just shown, ``tanh`` of their region maximum (the joint
    action space is ``[-1, 1]``; ``tanh`` keeps the ranking, so the reward is unchanged).
    """

    def __init__(self, agent: RARLAgent, *, deterministic: bool = True, generator: torch.Generator | None = None):
        self.agent = agent.eval()
        self.deterministic = deterministic
        self.generator = generator
        self.state = None

    @torch.no_grad()
    def __call__(self, obs: dict) -> np.ndarray:
        if obs["step"] == 0:
            self.state = self.agent.initial_state(1)
        glimpses = torch.as_tensor(obs["glimpses"])[None]  # [1,K,C,s,s]
        out = self.agent(glimpses, self.state)
        self.state = out.state
        loc = self.agent.center_mean(out.loc_mean, int(obs["step"]))[0]
        if not self.deterministic:
            loc = loc + self.agent.sigma * torch.randn(2, generator=self.generator)
        scores = torch.tanh(out.scores[0].amax(0))  # [L]
        return torch.cat([loc.clamp(-1, 1), scores]).numpy().astype(np.float32)


__all__ = ["RARLEnvPolicy"]

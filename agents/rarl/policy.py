"""The RARL agent acting through the Gymnasium API (``GlimpseEnv`` in ``mode="joint"``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.rarl.model import RARLAgent
from agents.rarl.policies import CenterPolicy, EpisodeBatch, make_policy
from rarl_gym.errors import ConfigError
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES


class RARLEnvPolicy:
    """Wraps a :class:`RARLAgent` as a stateful policy for one ``mode="joint"`` env.

    Each call reads the observation's glimpses, advances the LSTM and returns the action: the next
    centre, chosen by the same centre policy object as in the trainer's rollout
    (:mod:`agents.rarl.policies`; the policy's mode, or a sample with ``deterministic=False``),
    followed by the label scores of the regions just shown, ``tanh`` of their region maximum (plus
    the whole-image context logits for an agent with a context head, so that the env's max over
    the steps is ``tanh`` of the trainer's fused scores; ``tanh`` keeps the ranking, so the reward
    is the same).

    The peak and map locators read the linear head's logit maps of the whole image: the env must
    show them, ``gym.make(..., mode="joint", overview=H)`` with ``H`` the feature map's side (10 at
    320 px), or a :class:`~rarl_gym.errors.ConfigError` says so.

    Args:
        settings: the env's :class:`rarl_gym.env_settings.EnvSettings` (anchors, glimpse size; the
            map locator's candidates need them); default the paper's anchors.
    """

    def __init__(
        self,
        agent: RARLAgent,
        *,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
        settings: Any = None,
    ):
        self.agent = agent.eval()
        self.deterministic = deterministic
        self.generator = generator
        self.scales = tuple(settings.scales) if settings is not None else DEFAULT_SCALES
        self.ratios = tuple(settings.ratios) if settings is not None else DEFAULT_RATIOS
        self.fuse_whole_image = bool(settings.fuse_whole_image) if settings is not None else False
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.policy: CenterPolicy | None = None
        self.context: torch.Tensor | None = None  # [1, 1+F, L]

    def _begin(self, obs: dict, glimpse_size: int) -> None:
        """Step 0: a fresh LSTM state and the episode's centre policy (built from the overview)."""
        agent = self.agent
        self.state = agent.initial_state(1)
        logit_maps = None
        if agent.head == "linear" and "overview" in obs:
            logit_maps = agent.logit_maps(torch.as_tensor(obs["overview"], dtype=torch.float32)[None], 1)  # [1, L (+ L), o, o]
        elif agent.locator_kind in ("map", "peak"):
            raise ConfigError(
                f"the RARL agent's {agent.locator_kind} locator reads the whole image's map, which this env does not show",
                "make the env with overview=<the feature map's side> (10 at 320 px), e.g. "
                "gym.make('RARL-VOC07-v0', mode='joint', overview=10)",
            )
        episode = EpisodeBatch(
            agent=agent,
            logit_maps=logit_maps,
            heads=1,
            windows=None,
            fold_of=None,
            glimpse_size=glimpse_size,
            scales=self.scales,
            ratios=self.ratios,
            fuse_whole_image=self.fuse_whole_image or agent.fuse_whole_image,
            sample=not self.deterministic,
            generator=self.generator,
            given_centers=None,
            batch=1,
            device=torch.device("cpu"),
        )
        self.policy = make_policy("learned", episode)
        self.context = None
        if agent.context:  # the context head on the whole image, as the trainer's step 0 (it commutes with the crop)
            whole = torch.as_tensor(obs["glimpses"], dtype=torch.float32)[None, 0]  # [1, C, s, s]: step 0 is the whole image
            self.context = agent.context_logits(torch.nn.functional.conv2d(whole, agent.context_head.weight))

    @torch.no_grad()
    def __call__(self, obs: dict) -> np.ndarray:
        step = int(obs["step"])
        glimpses = torch.as_tensor(obs["glimpses"], dtype=torch.float32)[None]  # [1,K,C,s,s]
        if step == 0:
            self._begin(obs, glimpses.shape[-1])
        assert self.state is not None and self.policy is not None
        out = self.agent(glimpses, self.state)
        self.state = out.state
        loc, _ = self.policy(step, out, self.context)
        scores = out.scores[0].amax(0)  # [L]
        if self.context is not None:
            scores = scores + self.context[0, 0]
        return torch.cat([loc[0].clamp(-1, 1), torch.tanh(scores)]).numpy().astype(np.float32)


__all__ = ["RARLEnvPolicy"]

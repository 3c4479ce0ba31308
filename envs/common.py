"""What the single env and the vector env share: opening a split's episodes, the spaces of one
episode, and the validation of actions."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.episodes import GlimpseEpisodes
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import ActionError


class GlimpseEnvSetup:
    """Mixin of :class:`envs.glimpse_env.GlimpseEnv` and :class:`envs.vector_env.GlimpseVectorEnv`:
    :meth:`_open` validates the env kwargs and opens the split's data, feature cache and episodes."""

    def _open(
        self, env_kwargs: dict[str, Any], *, progress: bool, reuse_buffers: bool = False
    ) -> tuple[spaces.Dict, spaces.Box]:
        """Set ``settings``, ``source``, ``split``, ``data``, ``store``, ``mode``, ``classes`` and
        ``episodes`` (:class:`envs.episodes.GlimpseEpisodes`); return the observation and action
        spaces of one episode (:func:`glimpse_spaces`)."""
        self.settings = settings = EnvSettings.from_kwargs(**env_kwargs)
        assert settings.split is not None  # EnvSettings fills in the training split
        self.source = settings.source
        self.split = settings.split
        self.data, self.store = self.source.open_split(settings.split, progress=progress)
        self.mode = settings.mode
        self.classes = self.store.classes
        self.episodes = GlimpseEpisodes.from_settings(settings, progress=progress, reuse_buffers=reuse_buffers)
        return glimpse_spaces(settings, self.episodes.num_regions, self.store.channels, len(self.classes))


def glimpse_spaces(settings: EnvSettings, num_regions: int, channels: int, num_classes: int) -> tuple[spaces.Dict, spaces.Box]:
    """The spaces of one episode: ``Dict(glimpses=Box(-inf, inf, (K, C, s, s)), step=Discrete(T + 1))``
    (with ``overview=o > 0`` also ``overview=Box(-inf, inf, (C, o, o))``) and ``Box(-1, 1, (2,))``
    (``locate``) or ``Box(-1, 1, (2 + L,))`` (``joint``)."""
    s = settings.glimpse_size
    entries: dict[str, spaces.Space] = {
        "glimpses": spaces.Box(-np.inf, np.inf, (num_regions, channels, s, s), np.float32),
        "step": spaces.Discrete(settings.num_steps + 1),
    }
    if settings.overview:
        o = settings.overview
        entries["overview"] = spaces.Box(-np.inf, np.inf, (channels, o, o), np.float32)
    observation = spaces.Dict(entries)
    act_dim = 2 if settings.mode == "locate" else 2 + num_classes
    return observation, spaces.Box(-1.0, 1.0, (act_dim,), np.float32)


def check_actions(actions: Any, space: spaces.Box, mode: str) -> np.ndarray:
    """Validate an action ``[A]`` (``space`` of one env) or a batch of actions ``[B, A]`` (the
    batched ``space`` of a vector env); return it clipped to [-1, 1].

    Raises :class:`ActionError` for a wrong shape, NaN / inf, or a value outside ``[-1, 1]``
    (beyond a 1e-6 tolerance), naming the offending sub-envs of a batch.
    """
    batched = len(space.shape) == 2
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a huge value becomes inf: refused below
            a = np.asarray(actions, dtype=np.float32)
    except (TypeError, ValueError) as err:
        what = f"the actions {actions!r} are" if batched else f"the action {actions!r} is"
        raise ActionError(f"{what} not numeric", "pass a float array") from err
    if a.shape != space.shape:
        what = "the actions have" if batched else "the action has"
        rows = "one row per sub-env: " if batched else ""
        raise ActionError(
            f"{what} shape {a.shape}, the action space {space} wants {space.shape}",
            f"pass {rows}the centre (x, y)" + ("" if mode == "locate" else " followed by the L label scores"),
        )
    bad = ~np.isfinite(a).all(axis=-1)  # [B] (a batch) or a scalar
    if bad.any():
        what = f"the actions of sub-env(s) {np.flatnonzero(bad).tolist()} contain" if batched else "the action contains"
        raise ActionError(f"{what} NaN or inf: {a[bad] if batched else a}", "check the policy's output for NaN")
    out = ((a < -1.0 - 1e-6) | (a > 1.0 + 1e-6)).any(axis=-1)
    if out.any():
        if batched:
            problem = (
                f"the actions of sub-env(s) {np.flatnonzero(out).tolist()} are outside the action space [-1, 1]: {a[out]}"
            )
        else:
            problem = f"the action {a} is outside the action space [-1, 1]"
        wrapper = "gymnasium.wrappers.vector.ClipAction" if batched else "gymnasium.wrappers.ClipAction"
        raise ActionError(problem, f"clip {'them' if batched else 'it'} (np.clip(a, -1, 1) or {wrapper})")
    return np.clip(a, -1.0, 1.0)


__all__ = ["GlimpseEnvSetup", "check_actions", "glimpse_spaces"]

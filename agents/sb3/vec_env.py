"""The Stable-Baselines3 side of the native vector env: :class:`SB3VecEnvAdapter` and :func:`to_sb3`.

It lives with the SB3 agents so that making and stepping an env never imports Stable-Baselines3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.vector_env import GlimpseVectorEnv
from rarl_gym.errors import ConfigError


class SB3VecEnvAdapter(VecEnv):
    """A :class:`GlimpseVectorEnv` as a Stable-Baselines3 ``VecEnv`` (SB3 also autoresets in the same step).

    ``step_wait`` returns ``(obs {"glimpses": [B, K, C, s, s], "step": [B]}, rewards [B] float32,
    dones [B] bool, infos)``: ``infos`` is a list of B dicts; at the end of the episodes each holds
    the single env's final info (``labels``, ``scores``, ``boxes``, ``centers``, ``image_id``), the
    ``terminal_observation`` and ``TimeLimit.truncated``, as with ``DummyVecEnv``; the new
    episodes' reset infos go to ``reset_infos``. ``seed()`` / ``set_options()`` apply at the next
    ``reset()`` (options: only ``{"index": i}``). Wrap it in ``VecMonitor`` for episode statistics.

    Attributes are shared by all sub-envs: ``get_attr`` returns the vector env's attribute once
    per index, ``env_method`` calls the vector env's method once and repeats its result.
    """

    def __init__(self, venv: GlimpseVectorEnv):
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = None
        if any(self._options):
            if not all("index" in o for o in self._options) or any(set(o) - {"index"} for o in self._options):
                raise ConfigError(
                    f"unsupported reset options {self._options}", "set {'index': i} for every sub-env, or no options"
                )
            options = {"index": [o["index"] for o in self._options]}
        obs, infos = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = self._unbatch(infos)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        timeouts = (truncated & ~terminated).tolist()
        if not dones.any():
            return obs, rewards.astype(np.float32), dones, [{"TimeLimit.truncated": t} for t in timeouts]
        finals = self._unbatch(infos["final_info"])
        for i in range(self.num_envs):
            finals[i]["TimeLimit.truncated"] = timeouts[i]
            finals[i]["terminal_observation"] = infos["final_obs"][i]
        self.reset_infos = self._unbatch({k: v for k, v in infos.items() if "final_" not in k})
        return obs, rewards.astype(np.float32), dones, finals

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ConfigError(
                f"cannot set {attr_name!r} on some sub-envs only",
                "the sub-envs share one batched env: set it on all (indices=None)",
            )
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _unbatch(self, infos: dict) -> list[dict]:
        """Gymnasium vector infos (arrays + ``_key`` masks) -> a list of B dicts."""
        out: list[dict] = [{} for _ in range(self.num_envs)]
        for key, value in infos.items():
            if key.startswith("_"):
                continue
            mask = infos.get(f"_{key}", np.ones(self.num_envs, dtype=bool))
            for i in np.flatnonzero(mask):
                out[i][key] = value[i]
        return out


def to_sb3(venv: GlimpseVectorEnv) -> SB3VecEnvAdapter:
    """``venv`` as a Stable-Baselines3 ``VecEnv`` (switched to ``copy=False``: SB3 copies the
    observations into its own buffers and reads the previous one only until the next step)."""
    venv.copy = False
    return SB3VecEnvAdapter(venv)


__all__ = ["SB3VecEnvAdapter", "to_sb3"]

"""Stable-Baselines3 agents for the glimpse env, with defaults fitted to its episodes.

An episode has E = T + 1 = 6 steps (step 0 places the first glimpse) and one reward, at the last
step, in [0, 1]; the env's discount is 1. Observations are Dicts of K = 9 region crops
(``[9, C, s, s]`` float32: 46 KB for C = 1280, s = 1) and the step index.

Defaults (any can be overridden through ``make_agent(..., **overrides)``):

* all: ``gamma=1.0`` (the objective is exactly the final reward; episodes always terminate after
  E steps, so nothing diverges), :class:`GlimpseExtractor` with 256 features;
* on-policy (PPO, A2C, RecurrentPPO): ``n_steps`` a multiple of E so that every rollout ends at an
  episode boundary (all envs start together and episodes have a fixed length, so no return is cut
  by a rollout edge); ``log_std_init=-1`` (std 0.37 on the [-1, 1] centre square instead of 1,
  which would put most samples on the clipped border). PPO / RecurrentPPO: 16 episodes per env per
  rollout, minibatches of up to 128 (a divisor of
  the rollout), 10 epochs. A2C: 2 episodes per env per update and
  ``gae_lambda=1`` (Monte Carlo returns: the rollout holds whole episodes);
* off-policy (SAC, TD3): a replay buffer of at most 100 000 transitions and at most
  :data:`MEMORY_BUDGET` bytes (SB3's ``DictReplayBuffer`` keeps observation and next observation,
  ``optimize_memory_usage`` is not available with Dict observations), ``learning_starts`` = 100
  episodes, one gradient step per transition (``gradient_steps=-1``), ``[256, 256]`` heads;
  TD3 explores with Gaussian action noise of std 0.1.

The on-policy rollout buffer (``n_steps x n_envs`` observations) is kept under the same budget by
shortening ``n_steps`` (still a multiple of E) for very large observations (e.g. s = 7 with 1280
channels: 2.3 MB each).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.vec_env import VecEnv

from agents.sb3.extractor import GlimpseExtractor
from rarl_gym.errors import check_choice, check_names

#: The algorithms by ``--algo`` name.
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "sac": SAC, "td3": TD3, "recurrentppo": RecurrentPPO}
ON_POLICY = ("ppo", "a2c", "recurrentppo")
OFF_POLICY = ("sac", "td3")
#: Bytes the stored observations of a rollout or replay buffer may take (2 GiB).
MEMORY_BUDGET = 2 * 1024**3
MAX_BUFFER = 100_000


def observation_bytes(space: spaces.Dict) -> int:
    """Bytes of one observation as SB3's buffers store it."""
    return sum(int(np.prod(get_obs_shape(s))) * np.dtype(s.dtype).itemsize for s in space.spaces.values())


def default_hyperparams(algo: str, env: VecEnv) -> dict[str, Any]:
    """The constructor kwargs of ``algo`` on ``env`` (see the module docstring)."""
    check_choice("algo", algo, tuple(ALGOS))
    ep_len = int(env.observation_space["step"].n)  # E = T + 1 steps per episode
    obs_bytes = observation_bytes(env.observation_space)
    policy_kwargs: dict[str, Any] = {
        "features_extractor_class": GlimpseExtractor,
        "features_extractor_kwargs": {"features_dim": 256},
    }
    if algo in ON_POLICY:
        fits = max(1, MEMORY_BUDGET // (obs_bytes * env.num_envs * ep_len))  # episodes per env in the budget
        episodes = min(2 if algo == "a2c" else 16, fits)
        n_steps = episodes * ep_len
        policy_kwargs["log_std_init"] = -1.0
        kwargs: dict[str, Any] = {"n_steps": n_steps, "gamma": 1.0}
        if algo == "a2c":
            kwargs["gae_lambda"] = 1.0
        else:
            rollout = n_steps * env.num_envs  # minibatches: the largest divisor of the rollout up to 128
            kwargs.update(batch_size=max(d for d in range(1, 129) if rollout % d == 0), n_epochs=10, gae_lambda=0.95)
        if algo == "recurrentppo":
            policy_kwargs["lstm_hidden_size"] = 128
        return {**kwargs, "policy_kwargs": policy_kwargs}
    buffer_size = int(max(256, min(MAX_BUFFER, MEMORY_BUDGET // (2 * obs_bytes))))
    policy_kwargs["net_arch"] = [256, 256]
    return {
        "buffer_size": buffer_size,
        "learning_starts": 100 * ep_len,
        "batch_size": 256,
        "gamma": 1.0,
        "train_freq": 1,
        "gradient_steps": -1,
        "optimize_memory_usage": False,
        "policy_kwargs": policy_kwargs,
    }


def make_agent(
    algo: str,
    env: VecEnv,
    *,
    seed: int | None = 0,
    tensorboard_log: str | None = None,
    device: str = "auto",
    verbose: int = 0,
    **overrides,
) -> BaseAlgorithm:
    """A new SB3 model of ``algo`` (a key of :data:`ALGOS`) on ``env``.

    ``overrides`` replace the defaults of :func:`default_hyperparams`; ``policy_kwargs`` is merged
    key by key (e.g. ``policy_kwargs={"net_arch": [64]}`` keeps the :class:`GlimpseExtractor`).
    """
    kwargs = default_hyperparams(algo, env)
    accepted = sorted(
        set(inspect.signature(ALGOS[algo].__init__).parameters)
        - {"self", "policy", "env", "seed", "tensorboard_log", "device", "verbose"}
    )
    check_names(overrides, accepted, f"{ALGOS[algo].__name__} has no hyperparameter", f"use some of: {', '.join(accepted)}")
    policy_kwargs = {**kwargs.pop("policy_kwargs"), **(overrides.pop("policy_kwargs", None) or {})}
    kwargs.update(overrides)
    if algo == "td3" and "action_noise" not in kwargs:
        dim = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), 0.1 * np.ones(dim))
    policy = "MultiInputLstmPolicy" if algo == "recurrentppo" else "MultiInputPolicy"
    return ALGOS[algo](
        policy,
        env,
        seed=seed,
        tensorboard_log=tensorboard_log,
        device=device,
        verbose=verbose,
        policy_kwargs=policy_kwargs,
        **kwargs,
    )


__all__ = ["ALGOS", "MEMORY_BUDGET", "OFF_POLICY", "ON_POLICY", "default_hyperparams", "make_agent", "observation_bytes"]

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
import math
from collections.abc import Callable
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
from rarl_gym.errors import ConfigError, check_choice, check_names

#: The algorithms by ``--algo`` name.
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "sac": SAC, "td3": TD3, "recurrentppo": RecurrentPPO}
ON_POLICY = ("ppo", "a2c", "recurrentppo")
OFF_POLICY = ("sac", "td3")
#: Bytes the stored observations of a rollout or replay buffer may take (2 GiB).
MEMORY_BUDGET = 2 * 1024**3
MAX_BUFFER = 100_000


def observation_bytes(space: spaces.Dict) -> int:
    """Bytes of one observation as SB3's buffers store it."""
    total = 0
    for s in space.spaces.values():
        shape = get_obs_shape(s)
        assert isinstance(shape, tuple)  # the glimpse env's spaces are flat (Box, Discrete)
        total += int(np.prod(shape)) * np.dtype(s.dtype).itemsize
    return total


def default_hyperparams(algo: str, env: VecEnv) -> dict[str, Any]:
    """The constructor kwargs of ``algo`` on ``env`` (see the module docstring)."""
    check_choice("algo", algo, tuple(ALGOS))
    space = env.observation_space
    if not isinstance(space, spaces.Dict):
        raise ConfigError(f"an SB3 agent here plays the glimpse env's Dict observations, not {space}", "pass a rarl-gym env")
    step = space["step"]
    assert isinstance(step, spaces.Discrete)
    ep_len = int(step.n)  # E = T + 1 steps per episode
    obs_bytes = observation_bytes(space)
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


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _real(ok: Callable[[float], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)


def _or_none(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or rule(v)


def _train_freq(v: Any) -> bool:  # n, or (n, "step" | "episode")
    if isinstance(v, (list, tuple)):
        return len(v) == 2 and _int_at_least(1)(v[0]) and v[1] in ("step", "episode")
    return _int_at_least(1)(v)


def _ent_coef(v: Any) -> bool:  # a number >= 0, or SAC's "auto" / "auto_0.1"
    if isinstance(v, str):
        head, _, init = v.partition("_")
        return head == "auto" and (not init or _real(lambda x: x > 0)(_float_or_none(init)))
    return _real(lambda x: x >= 0)(v)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_FRACTION: tuple[Callable[[Any], bool], str] = (_real(lambda v: 0 <= v <= 1), "a number in [0, 1]")
_POSITIVE: tuple[Callable[[Any], bool], str] = (_real(lambda v: v > 0), "a finite number > 0")
_NON_NEGATIVE: tuple[Callable[[Any], bool], str] = (_real(lambda v: v >= 0), "a finite number >= 0")
#: The numeric constructor arguments of the algorithms: name -> (valid?, what it must be). SB3
#: checks few of them (with bare ``AssertionError``s, or not at all: ``buffer_size=-5`` is taken).
HYPERPARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (_POSITIVE[0], "a finite number > 0, e.g. 3e-4"),
    "n_steps": (_int_at_least(1), "a positive int, e.g. 96 (a multiple of the episode's 6 steps)"),
    "batch_size": (_int_at_least(1), "a positive int, e.g. 64"),
    "n_epochs": (_int_at_least(1), "a positive int, e.g. 10"),
    "buffer_size": (_int_at_least(1), "a positive int, e.g. 100000"),
    "learning_starts": (_int_at_least(0), "an int >= 0, e.g. 600"),
    "train_freq": (_train_freq, 'a positive int, or [n, "step"] / [n, "episode"]'),
    "gradient_steps": (_int_at_least(-1), "an int >= -1 (-1: as many as env steps)"),
    "policy_delay": (_int_at_least(1), "a positive int, e.g. 2"),
    "target_update_interval": (_int_at_least(1), "a positive int, e.g. 1"),
    "sde_sample_freq": (_int_at_least(-1), "an int >= -1"),
    "stats_window_size": (_int_at_least(1), "a positive int, e.g. 100"),
    "gamma": (_FRACTION[0], "a number in [0, 1], e.g. 1.0"),
    "gae_lambda": (_FRACTION[0], "a number in [0, 1], e.g. 0.95"),
    "tau": (_FRACTION[0], "a number in [0, 1], e.g. 0.005"),
    "clip_range": (_POSITIVE[0], "a finite number > 0, e.g. 0.2"),
    "clip_range_vf": (_or_none(_POSITIVE[0]), "null or a finite number > 0"),
    "ent_coef": (_ent_coef, 'a number >= 0 (SAC: or "auto", "auto_0.1")'),
    "vf_coef": _NON_NEGATIVE,
    "max_grad_norm": _POSITIVE,
    "target_kl": (_or_none(_POSITIVE[0]), "null or a finite number > 0"),
    "rms_prop_eps": _POSITIVE,
    "alpha": _FRACTION,
    "target_policy_noise": _NON_NEGATIVE,
    "target_noise_clip": _NON_NEGATIVE,
}


def check_hyperparams(algo: str, overrides: dict[str, Any]) -> None:
    """Refuse, with a :class:`ConfigError` that names it, a hyperparameter ``algo`` does not have or
    a value it cannot take (``n_steps=0``, ``learning_rate="x"``, ``buffer_size=-5``), before
    anything is built; ``policy_kwargs`` must be a JSON object."""
    check_choice("algo", algo, tuple(ALGOS))
    accepted = sorted(
        set(inspect.signature(ALGOS[algo].__init__).parameters)
        - {"self", "policy", "env", "seed", "tensorboard_log", "device", "verbose"}
    )
    check_names(overrides, accepted, f"{ALGOS[algo].__name__} has no hyperparameter", f"use some of: {', '.join(accepted)}")
    for name, value in overrides.items():
        ok, want = HYPERPARAM_RULES.get(name, (lambda _v: True, ""))
        if name == "policy_kwargs":
            ok, want = (lambda v: v is None or isinstance(v, dict)), 'a JSON object, e.g. {"net_arch": [64]}'
        if not ok(value):
            raise ConfigError(
                f"{ALGOS[algo].__name__} hyperparameter {name}={value!r} is invalid", f"use {want} (--hyperparams)"
            )
    if algo in ("ppo", "recurrentppo") and overrides.get("batch_size") == 1 and overrides.get("normalize_advantage", True):
        raise ConfigError(
            f"{ALGOS[algo].__name__} hyperparameter batch_size=1 cannot normalise advantages",
            'use a batch_size >= 2, or add "normalize_advantage": false (--hyperparams)',
        )


def make_agent(
    algo: str,
    env: VecEnv,
    *,
    seed: int | None = 0,
    tensorboard_log: str | None = None,
    device: str = "auto",
    verbose: int = 0,
    **overrides: Any,
) -> BaseAlgorithm:
    """A new SB3 model of ``algo`` (a key of :data:`ALGOS`) on ``env``.

    ``overrides`` (checked by :func:`check_hyperparams`) replace the defaults of
    :func:`default_hyperparams`; ``policy_kwargs`` is merged key by key (e.g.
    ``policy_kwargs={"net_arch": [64]}`` keeps the :class:`GlimpseExtractor`).
    """
    check_hyperparams(algo, overrides)
    kwargs = default_hyperparams(algo, env)
    if algo in ON_POLICY and overrides.get("n_steps", kwargs["n_steps"]) * env.num_envs < 2:
        raise ConfigError(
            f"{ALGOS[algo].__name__} needs a rollout of 2 steps or more (n_steps x n_envs = 1)",
            "use a larger n_steps (--hyperparams) or --n-envs",
        )
    policy_kwargs = {**kwargs.pop("policy_kwargs"), **(overrides.pop("policy_kwargs", None) or {})}
    kwargs.update(overrides)
    if algo == "td3" and "action_noise" not in kwargs:
        shape = env.action_space.shape
        assert shape is not None  # a Box
        dim = shape[0]
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


__all__ = [
    "ALGOS",
    "HYPERPARAM_RULES",
    "MEMORY_BUDGET",
    "OFF_POLICY",
    "ON_POLICY",
    "check_hyperparams",
    "default_hyperparams",
    "make_agent",
    "observation_bytes",
]

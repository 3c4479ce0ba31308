"""Property-based: random env kwargs, actions, reset options and command lines never end in a bare
Python exception. Every failure is a :class:`rarl_gym.errors.RarlGymError` (or Gymnasium's own
error) with a message; a command line fails with exit status 2 and a message, never a traceback.

Derandomized and without an example database, so a run is reproducible; a few dozen examples each
(``RARL_FUZZ_EXAMPLES``) keep the suite fast (nothing here extracts features: the env is the shared small one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import RarlGymError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_agent  # noqa: E402

#: 40 examples per property (``RARL_FUZZ_EXAMPLES=300`` for a longer search).
FUZZ = settings(
    max_examples=int(os.environ.get("RARL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Any JSON-like value, odd floats included.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6
)
FIELDS = [f.name for f in dataclasses.fields(EnvSettings)]
env_kwargs = st.dictionaries(st.sampled_from(FIELDS) | st.text(min_size=1, max_size=8), values, max_size=4)


def assert_named(err: BaseException) -> None:
    """``err`` is one of ours (or Gymnasium's) and says something."""
    assert isinstance(err, (RarlGymError, gym.error.Error)), f"bare {type(err).__name__}: {err}"
    assert str(err).strip(), f"{type(err).__name__} without a message"


@FUZZ
@given(kwargs=env_kwargs)
def test_random_env_kwargs_are_accepted_or_named(kwargs):
    try:
        settings_ = EnvSettings.from_kwargs(**kwargs)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert all(math.isfinite(v) and v > 0 for v in settings_.scales + settings_.ratios)
    json.dumps(settings_.to_dict())


@pytest.fixture(scope="module")
def env(small_kwargs):
    env = gym.make("RARL-Shapes-v0", **small_kwargs)
    yield env
    env.close()


def _array(shape: tuple, fill: float, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # float16 turns a large fill into inf: wanted here
        return np.full(shape, fill).astype(dtype)


arrays = st.builds(
    _array,
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.float32, np.float64, np.float16, object]),
)
actions = st.one_of(arrays, values, st.lists(st.floats(allow_nan=True), min_size=2, max_size=2))


@FUZZ
@given(action=actions)
def test_random_actions_are_taken_or_named(env, action):
    env.reset(options={"index": 0})
    try:
        obs, reward, *_ = env.step(action)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert env.observation_space.contains(obs) and np.isfinite(reward)


@FUZZ
@given(options=st.one_of(values, st.dictionaries(st.sampled_from(["index", "other"]), values, max_size=2)))
def test_random_reset_options_are_taken_or_named(env, options):
    try:
        obs, info = env.reset(options=options)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert env.observation_space.contains(obs) and "image_id" in info


#: Options whose values are drawn at random; --resume of a folder without a run ends every
#: command line before any training (the property is about the validation on the way there).
NUMERIC = ["--epochs", "--batch-size", "--lr", "--seed", "--total-timesteps", "--n-envs", "--eval-views"]
tokens = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6)
)
json_tokens = st.one_of(values.map(json.dumps), st.text(max_size=10))


@FUZZ
@given(
    algo=st.sampled_from(["rarl", "ppo", "sac", "cem", "nope"]),
    numbers=st.dictionaries(st.sampled_from(NUMERIC), tokens, max_size=3),
    env_json=json_tokens,
    hyper=st.none() | json_tokens,
)
def test_random_command_lines_fail_with_a_message(tmp_path_factory, algo, numbers, env_json, hyper):
    run = tmp_path_factory.getbasetemp() / "fuzz-no-run"
    argv = ["--algo", algo, "--run-dir", str(run), "--resume", "--no-progress", "--env-kwargs", env_json]
    for flag, value in numbers.items():
        argv += [f"{flag}={value}"]
    if hyper is not None:
        argv += ["--hyperparams", hyper]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = train_agent.main(argv)
        except SystemExit as exit_:  # argparse: a usage error
            status = exit_.code
    err = stderr.getvalue()
    assert status == 2 and "error" in err and "Traceback" not in err

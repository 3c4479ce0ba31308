"""Stable-Baselines3 agents (agents/sb3) and the custom CEM agent (agents/custom) on the small Shapes split."""

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from agents.common import evaluation
from agents.custom.cem import train_cem
from agents.sb3.algos import ALGOS, MEMORY_BUDGET, OFF_POLICY, default_hyperparams, make_agent, observation_bytes
from agents.sb3.extractor import GlimpseExtractor
from agents.sb3.train import make_vec
from rarl_gym.env_settings import settings_kwargs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evaluate  # noqa: E402
import train_agent  # noqa: E402

ENV = "RARL-Shapes-v0"


@pytest.fixture
def env_kwargs(small_kwargs):
    return settings_kwargs(small_kwargs)


@pytest.fixture
def cli_args(env_kwargs, tmp_path):
    def args(algo, run, *extra):
        return [
            "--algo",
            algo,
            "--env-kwargs",
            json.dumps(env_kwargs),
            "--run-dir",
            str(tmp_path / run),
            "--no-progress",
            "--device",
            "cpu",
            *extra,
        ]

    return args


@pytest.mark.parametrize("s", [1, 3])
def test_extractor_shapes(s):
    space = spaces.Dict({"glimpses": spaces.Box(-np.inf, np.inf, (9, 8, s, s), np.float32), "step": spaces.Discrete(6)})
    ext = GlimpseExtractor(space, features_dim=32)
    assert ext.features_dim == 32
    obs = {"glimpses": torch.randn(4, 9, 8, s, s), "step": torch.tensor([0, 1, 5, 2])}
    pre = preprocess_obs(obs, space)  # SB3 one-hot encodes the Discrete step
    assert pre["step"].shape == (4, 6) and pre["step"].sum(1).eq(1).all()
    out = ext(pre)
    assert out.shape == (4, 32) and torch.isfinite(out).all()
    stored = preprocess_obs({"glimpses": obs["glimpses"], "step": obs["step"][:, None]}, space)  # buffers keep [B, 1]
    assert stored["step"].shape == (4, 1, 6) and torch.allclose(ext(stored), out)
    # the K regions are a set: permuting them does not change the features
    perm = {"glimpses": pre["glimpses"][:, torch.randperm(9)], "step": pre["step"]}
    assert torch.allclose(ext(perm), out, atol=1e-6)
    # the channel projection (default 64) feeds the region embedding; proj_dim=0 embeds the raw crop
    assert ext.embed[0].in_features == 64 * s * s
    raw = GlimpseExtractor(space, features_dim=32, proj_dim=0)
    assert raw.embed[0].in_features == 8 * s * s and raw(pre).shape == (4, 32)


def test_extractor_reads_the_overview():
    """With an overview the features depend on where things are in the whole image."""
    space = spaces.Dict(
        {
            "glimpses": spaces.Box(-np.inf, np.inf, (9, 8, 1, 1), np.float32),
            "step": spaces.Discrete(6),
            "overview": spaces.Box(-np.inf, np.inf, (8, 3, 3), np.float32),
        }
    )
    torch.manual_seed(0)
    ext = GlimpseExtractor(space, features_dim=32)
    obs = {"glimpses": torch.randn(2, 9, 8, 1, 1), "step": torch.tensor([0, 1]), "overview": torch.randn(2, 8, 3, 3)}
    out = ext(preprocess_obs(obs, space))
    assert out.shape == (2, 32) and ext.overview[0].in_features == 64 * 9
    moved = {**obs, "overview": obs["overview"].flip(-1)}  # the same content, elsewhere
    assert not torch.allclose(ext(preprocess_obs(moved, space)), out)


def test_defaults_fit_the_episode_and_the_memory_budget(env_kwargs):
    env = make_vec(ENV, env_kwargs, 2, 0)
    for algo in ALGOS:
        hp = default_hyperparams(algo, env)
        assert hp["gamma"] == 1.0
        if algo in OFF_POLICY:
            assert 2 * hp["buffer_size"] * observation_bytes(env.observation_space) <= MEMORY_BUDGET
        else:
            assert hp["n_steps"] % 6 == 0
    # efficientnet_lite0-sized observations (C = 1280) with 7 x 7 glimpses: both buffers stay in budget
    big = spaces.Dict({"glimpses": spaces.Box(-np.inf, np.inf, (9, 1280, 7, 7), np.float32), "step": spaces.Discrete(6)})

    class Fake:
        observation_space, num_envs = big, 8

    assert default_hyperparams("ppo", Fake)["n_steps"] * 8 * observation_bytes(big) <= MEMORY_BUDGET
    assert default_hyperparams("ppo", Fake)["n_steps"] % 6 == 0
    assert 2 * default_hyperparams("sac", Fake)["buffer_size"] * observation_bytes(big) <= MEMORY_BUDGET
    env.close()


SMALL_OVERRIDES = {
    "ppo": {"n_steps": 48, "batch_size": 48, "n_epochs": 2},
    "a2c": {},
    "recurrentppo": {"n_steps": 48, "batch_size": 48, "n_epochs": 2},
    "sac": {"learning_starts": 48, "batch_size": 16, "gradient_steps": 1},
    "td3": {"learning_starts": 48, "batch_size": 16, "gradient_steps": 1},
}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_each_algo_trains_and_evaluates_in_locate_mode(algo, env_kwargs):
    """Every algorithm plays whole episodes, updates its policy and evaluates on the test split.

    Not a learning test: on the tiny random backbone the features carry almost no label signal
    (every centre policy, and the global classifier, scores about 25 mAP on these 40 images), and
    240 steps are far too few to move a policy measurably; learning is measured in BENCHMARKS.md.
    """
    env = make_vec(ENV, env_kwargs, 2, 0)
    model = make_agent(algo, env, seed=0, device="cpu", **SMALL_OVERRIDES[algo])
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(240)
    assert model.num_timesteps >= 240 and model._n_updates > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))  # the updates changed it
    assert len(model.ep_info_buffer) >= 240 // 6 - 2  # whole 6-step episodes were played
    pred = evaluation.evaluate_policy_on_split(model, ENV, env_kwargs, "test", batch=16)
    assert pred.probs.shape == (40, 12) and ((pred.probs >= 0) & (pred.probs <= 1)).all()
    assert ((pred.rewards >= 0) & (pred.rewards <= 1)).all()
    env.close()


def test_ppo_in_joint_mode(env_kwargs):
    kwargs = {**env_kwargs, "mode": "joint"}
    env = make_vec(ENV, kwargs, 2, 0)
    assert env.action_space.shape == (2 + 12,)
    model = make_agent("ppo", env, seed=0, device="cpu", **SMALL_OVERRIDES["ppo"])
    model.learn(192)
    assert model.num_timesteps >= 192
    results = evaluation.evaluate_run(model, ENV, kwargs, baseline=False)
    assert set(results["policies"]) == {"learned", "random", "center", "grid"}
    pred = evaluation.evaluate_policy_on_split(model, ENV, kwargs)
    assert ((pred.probs >= 0) & (pred.probs <= 1)).all()  # (s + 1) / 2 of the agent's scores
    env.close()


def test_native_and_single_envs_evaluate_the_same(env_kwargs, monkeypatch):
    class Fixed:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.tile(np.float32([0.3, -0.4]), (len(obs["step"]), 1)), state

    native = evaluation.evaluate_policy_on_split(Fixed(), ENV, env_kwargs, "test", batch=16)
    monkeypatch.setattr(gym, "make_vec", lambda *a, **k: (_ for _ in ()).throw(gym.error.Error("no vector env")))
    single = evaluation.evaluate_policy_on_split(Fixed(), ENV, env_kwargs, "test", batch=16)
    np.testing.assert_allclose(native.probs, single.probs, atol=1e-5)
    np.testing.assert_array_equal(native.labels, single.labels)
    np.testing.assert_allclose(native.rewards, single.rewards, atol=1e-6)
    # and SB3 trains on the DummyVecEnv fallback
    model = make_agent("ppo", make_vec(ENV, env_kwargs, 2, 0), seed=0, device="cpu", **SMALL_OVERRIDES["ppo"])
    assert type(model.get_env()).__name__ == "DummyVecEnv"
    model.learn(96)
    assert model.num_timesteps >= 96 and model._n_updates > 0 and len(model.ep_info_buffer) > 0


def test_train_agent_ppo_writes_a_run_refuses_overwrite_and_resumes(cli_args, tmp_path, capsys):
    run = tmp_path / "ppo"
    # a misspelt hyperparameter is refused before anything is written
    assert train_agent.main(cli_args("ppo", "ppo", "--total-timesteps", "192", "--hyperparams", '{"n_epoch": 2}')) == 2
    assert "did you mean 'n_epochs'" in capsys.readouterr().err and not run.exists()
    assert train_agent.main(cli_args("ppo", "ppo", "--hyperparams", "[2]")) == 2
    assert "--hyperparams must be a JSON object" in capsys.readouterr().err
    hyper = '{"n_epochs": 2, "learning_rate": 0.0005}'
    assert train_agent.main(cli_args("ppo", "ppo", "--total-timesteps", "192", "--n-envs", "2", "--hyperparams", hyper)) == 0
    assert json.loads((run / "run.json").read_text())["overrides"] == {"n_epochs": 2, "learning_rate": 0.0005}
    out = capsys.readouterr().out
    assert "mAP (area)" in out and "CF1 (top-3" in out
    assert all(name in out for name in ("learned", "random", "center", "grid", "global"))
    assert (run / "model.zip").exists() and (run / "run.json").exists()
    assert list((run / "tb").glob("**/events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["policies"]) == {"learned", "random", "center", "grid", "global"}
    assert metrics["split"] == "test" and metrics["views"] == 1 and metrics["num_timesteps"] == 192
    assert 0.0 <= metrics["policies"]["learned"]["mAP_area"] <= 1.0

    # a second run into the same folder is refused, and the first run is untouched
    before = (run / "model.zip").read_bytes()
    assert train_agent.main(cli_args("ppo", "ppo", "--total-timesteps", "192")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (run / "model.zip").read_bytes() == before
    # ... so is resuming with another configuration, or with RARL's options
    assert train_agent.main(cli_args("ppo", "ppo", "--resume", "--seed", "5", "--total-timesteps", "384")) == 2
    assert "another configuration" in capsys.readouterr().err
    assert train_agent.main(cli_args("ppo", "x", "--epochs", "3")) == 2
    assert "--epochs" in capsys.readouterr().err

    # --resume continues the run: num_timesteps grows
    assert train_agent.main(cli_args("ppo", "ppo", "--resume", "--total-timesteps", "384")) == 0
    capsys.readouterr()
    assert json.loads((run / "metrics.json").read_text())["num_timesteps"] == 384
    assert json.loads((run / "run.json").read_text())["num_timesteps"] == 384

    # evaluate.py takes the run folder or its model.zip
    assert evaluate.main([str(run / "model.zip"), "--out", str(tmp_path / "e.json"), "--device", "cpu"]) == 0
    assert "mAP (area)" in capsys.readouterr().out
    learned = json.loads((run / "metrics.json").read_text())["policies"]["learned"]
    assert json.loads((tmp_path / "e.json").read_text())["mAP_area"] == pytest.approx(learned["mAP_area"])
    assert evaluate.main([str(run), "--centers", "center", "--device", "cpu"]) == 0
    assert (run / "eval-test-center-1v.json").exists()
    capsys.readouterr()
    assert evaluate.main([str(run), "--views", "10"]) == 2
    assert "whole image only" in capsys.readouterr().err


def test_cem_trains_resumes_and_evaluates(env_kwargs, cli_args, tmp_path, capsys):
    run = tmp_path / "cem"
    results = train_cem(ENV, env_kwargs, run, total_timesteps=2000, seed=0, progress=False, population=8, episodes=8)
    curve = results["reward_curve"]
    assert len(curve) == 5 and all(0.0 <= r <= 1.0 for r in curve)  # (2000 - 48) // (8 * 8 * 6) generations
    assert set(results["policies"]) >= {"learned", "random", "center"}
    assert json.loads((run / "metrics.json").read_text())["num_timesteps"] == results["num_timesteps"]
    more = train_cem(run_dir=run, total_timesteps=3000, progress=False, resume=True)
    assert more["num_timesteps"] > results["num_timesteps"] and more["reward_curve"][:5] == curve
    # through the scripts
    assert train_agent.main(cli_args("cem", "cem-cli", "--total-timesteps", "3200")) == 0
    assert "learned" in capsys.readouterr().out
    assert evaluate.main([str(tmp_path / "cem-cli"), "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["views"] == 1
    capsys.readouterr()
    assert train_agent.main(cli_args("cem", "cem-joint", "--env-kwargs", json.dumps({**env_kwargs, "mode": "joint"}))) == 2
    assert "mode='locate'" in capsys.readouterr().err


def test_off_policy_resume_refills_the_replay_buffer(env_kwargs, tmp_path, monkeypatch):
    from agents.sb3 import train as sb3_train
    from agents.sb3.train import load_model, train_sb3

    monkeypatch.setattr(sb3_train, "REPLAY_SAVE_LIMIT", 0)  # a buffer too large to save (a small one is: test_faults.py)
    run = tmp_path / "td3"
    small = {"learning_starts": 48, "batch_size": 16, "gradient_steps": 1, "buffer_size": 1000}
    first = train_sb3(
        "td3", ENV, env_kwargs, run, total_timesteps=96, seed=0, device="cpu", n_envs=2, progress=False, overrides=small
    )
    assert first["num_timesteps"] == 96
    more = train_sb3("td3", run_dir=run, total_timesteps=192, device="cpu", progress=False, resume=True)
    assert more["num_timesteps"] == 192
    model, config = load_model(run, "cpu")
    assert model.learning_starts == 48 and config["overrides"] == small and not (run / "replay_buffer.pkl").exists()

"""Cross-entropy method (CEM): gradient-free policy search, written only against the Gymnasium API.

The README's example of plugging in another algorithm: it needs ``gym.make``, ``reset`` and
``step``, and gets the run folder, ``metrics.json`` and comparison table of every other agent
from the framework-free helpers of :mod:`agents.common`.

Policy (``mode="locate"``: the env scores the regions): ``centre = tanh(W f + b)``, ``f`` = the
mean and max over the K regions of each region's channel means (standardised with statistics of
random-centre episodes), and the step one-hot. Search: a diagonal Gaussian over ``(W, b)``; each
generation scores ``population`` samples by their mean return on the same ``episodes`` training
images (common random numbers) and refits the Gaussian to the best ``elite`` fraction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from agents.common.evaluation import evaluate_run, make_env
from agents.common.run import load_run_config, open_run, save_run_config, write_metrics
from rarl_gym.errors import CheckpointError, ConfigError
from rarl_gym.io import atomic_write, run_lock

FILE = "cem.npz"
DEFAULTS = {
    "algo": "cem",
    "env_id": "RARL-Shapes-v0",
    "env_kwargs": {},
    "seed": 0,
    "population": 32,
    "episodes": 16,
    "elite_frac": 0.25,
}


def pooled(obs: dict) -> np.ndarray:
    """``[B, 2C]``: mean and max over the K regions of each region's channel means."""
    g = np.asarray(obs["glimpses"], np.float32)  # [B, K, C, s, s]
    g = g.reshape(*g.shape[:3], -1).mean(-1)  # [B, K, C]
    return np.concatenate([g.mean(1), g.max(1)], 1)


class LinearPolicy:
    """``centre = tanh([standardised pooled, step one-hot, 1] @ w)``, with SB3's ``predict`` signature."""

    def __init__(self, w: np.ndarray, mu: np.ndarray, sigma: np.ndarray, num_steps: int):
        self.w, self.mu, self.sigma, self.num_steps = w.reshape(-1, 2), mu, sigma, num_steps

    def predict(
        self, obs: dict, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        f = (pooled(obs) - self.mu) / self.sigma
        step = np.eye(self.num_steps)[np.asarray(obs["step"]).reshape(-1)]
        f = np.concatenate([f, step, np.ones((len(f), 1))], 1)
        return np.tanh(f @ self.w).astype(np.float32), state


def run_episode(env: gym.Env, policy: LinearPolicy | None, index: int, record: list | None = None) -> float:
    """The return of one episode on image ``index``; ``record`` collects the observations."""
    obs, _ = env.reset(options={"index": int(index)})
    total, done = 0.0, False
    while not done:
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        if record is not None:
            record.append(batch)
        action = env.action_space.sample() if policy is None else policy.predict(batch)[0][0]
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + cast(float, reward), terminated or truncated
    return total


def save(run_dir: Path, state: dict, rng: np.random.Generator, config: dict) -> None:
    """``cem.npz`` (the search state and the RNG) and ``run.json``, each atomically."""
    atomic_write(run_dir / FILE, lambda f: np.savez(f, **state, rng=json.dumps(rng.bit_generator.state)), what="CEM state")
    save_run_config(run_dir, {**config, "num_timesteps": int(state["num_timesteps"])})


def train_cem(
    env_id: str | None = None,
    env_kwargs: dict | None = None,
    run_dir: str | Path = "runs/cem-shapes",
    total_timesteps: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    **search: Any,
) -> dict:
    """Train (or resume) to ``total_timesteps`` env steps, evaluate; ``search``: population, episodes, elite_frac."""

    if set(search) - {"population", "episodes", "elite_frac"}:
        raise ConfigError(
            f"unknown CEM option(s) {sorted(set(search) - set(DEFAULTS))}", "use population, episodes, elite_frac"
        )
    explicit = {"env_id": env_id, "env_kwargs": env_kwargs or None, "seed": seed, **search}
    config = open_run(run_dir, DEFAULTS, explicit, resume=resume, model_file=FILE)
    with run_lock(run_dir):  # a second process training into the folder fails (InUseError)
        return _search(config, Path(run_dir), total_timesteps, progress, resume)


def _search(config: dict, run_dir: Path, total_timesteps: int | None, progress: bool, resume: bool) -> dict:
    """The body of :func:`train_cem`, with the run folder locked."""
    from tqdm.auto import tqdm

    total_timesteps = config["total_timesteps"] = total_timesteps or config.get("total_timesteps", 300_000)
    env = make_env(config["env_id"], config["env_kwargs"], progress=progress)
    if env.action_space.shape != (2,):
        raise ConfigError("CEM places glimpses only: it needs mode='locate'", 'drop "mode" from --env-kwargs')
    n_images, num_steps = len(cast(Any, env.unwrapped).store), int(cast(Any, env.observation_space)["step"].n)
    rng = np.random.default_rng(config["seed"])
    if resume:
        state = dict(np.load(run_dir / FILE))
        rng.bit_generator.state = json.loads(str(state.pop("rng")))
    else:  # feature statistics of random-centre episodes, then the search distribution
        record: list[dict] = []
        env.action_space.seed(config["seed"])
        for i in rng.choice(n_images, min(n_images, config["episodes"]), replace=False):
            run_episode(env, None, i, record)
        f = np.concatenate([pooled(obs) for obs in record])
        dim = 2 * (f.shape[1] + num_steps + 1)
        state = {
            "mean": np.zeros(dim),
            "std": np.full(dim, 0.5),
            "mu": f.mean(0),
            "sigma": f.std(0) + 1e-6,
            "num_timesteps": np.array(len(record)),
            "curve": np.zeros(0),
        }
    pop, eps = config["population"], config["episodes"]
    n_elite = max(2, round(pop * config["elite_frac"]))
    steps_per_gen = pop * eps * num_steps
    generations = max(0, (total_timesteps - int(state["num_timesteps"])) // steps_per_gen)
    for _ in tqdm(range(generations), desc="train cem", unit="gen", disable=not progress):
        images = rng.choice(n_images, eps, replace=eps > n_images)
        thetas = state["mean"] + state["std"] * rng.standard_normal((pop, len(state["mean"])))
        policies = [LinearPolicy(t, state["mu"], state["sigma"], num_steps) for t in thetas]
        returns = np.array([np.mean([run_episode(env, policy, i) for i in images]) for policy in policies])
        elite = thetas[np.argsort(returns)[-n_elite:]]
        state.update(mean=elite.mean(0), std=np.maximum(elite.std(0), 0.02), curve=np.append(state["curve"], returns.mean()))
        state["num_timesteps"] = np.array(int(state["num_timesteps"]) + steps_per_gen)
        save(run_dir, state, rng, config)  # after every generation: an interrupted run resumes here
    save(run_dir, state, rng, config)
    env.close()
    policy = LinearPolicy(state["mean"], state["mu"], state["sigma"], num_steps)
    results = evaluate_run(policy, config["env_id"], config["env_kwargs"], seed=config["seed"])
    results.update(
        algo="cem", num_timesteps=int(state["num_timesteps"]), reward_curve=[round(float(r), 4) for r in state["curve"]]
    )
    write_metrics(run_dir, results)
    return results


def load_cem(path: str | Path) -> tuple[LinearPolicy, dict]:
    """The mean policy of a CEM run (its folder or its ``cem.npz``) and the run's configuration."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    config = load_run_config(run_dir)
    try:
        state = np.load(run_dir / FILE)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{run_dir / FILE} is not a readable CEM run ({err})", "pass a run written by train_agent.py --algo cem"
        ) from err
    steps = config["settings"]["num_steps"] + 1
    return LinearPolicy(state["mean"], state["mu"], state["sigma"], steps), config

"""Training an SB3 agent on a glimpse env: run folder, TensorBoard, resume, evaluation.

``train_sb3("ppo", ...)`` trains on a vector of ``n_envs`` envs, logs to ``run_dir/tb``, saves
SB3's own format (``run_dir/model.zip``, and ``run.json``: the configuration), then evaluates
on the evaluation split (:func:`agents.sb3.common.evaluate_run`: learned, random, middle and grid
centres, and the global-image classifier) and writes ``run_dir/metrics.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from agents.sb3.algos import ALGOS, OFF_POLICY, make_agent
from agents.sb3.common import evaluate_run, load_run_config, log_eval, open_run, save_run_config, write_metrics
from rarl_gym.device import pick_device
from rarl_gym.errors import CheckpointError, check_choice

MODEL = "model.zip"
#: Defaults of a run's configuration (``run.json``).
DEFAULTS = {"env_id": "RARL-Shapes-v0", "env_kwargs": {}, "seed": 0, "n_envs": 8, "overrides": {}}


class TqdmCallback(BaseCallback):
    """A tqdm progress bar over the environment steps (SB3's own ``progress_bar`` needs rich)."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.locals["total_timesteps"], initial=self.model.num_timesteps, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        if self.model.ep_info_buffer and self.n_calls % 50 == 0:
            self.bar.set_postfix(reward=f"{sum(e['r'] for e in self.model.ep_info_buffer) / len(self.model.ep_info_buffer):.3f}")
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def make_vec(env_id: str, env_kwargs: dict, n_envs: int, seed: int, progress: bool = False) -> VecEnv:
    """``n_envs`` monitored envs as an SB3 ``VecEnv`` (env i seeded ``seed + i``).

    The native batched :class:`envs.vector_env.GlimpseVectorEnv` (one batched crop per step) through
    its SB3 adapter when the env id has one, else a ``DummyVecEnv`` of ``gym.make`` envs.
    """
    kwargs = {**{k: v for k, v in env_kwargs.items() if k != "progress"}, "progress": progress}
    try:
        from envs.vector_env import to_sb3

        venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
    except (gym.error.Error, ImportError):
        return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs, vec_env_cls=DummyVecEnv)
    env = VecMonitor(to_sb3(venv))
    env.seed(seed)
    return env


def save_model(model: BaseAlgorithm, run_dir: Path, config: dict) -> None:
    """``model.zip`` (atomically) and ``run.json``.

    The replay buffer of SAC / TD3 is not saved: SB3 pickles it whole, as allocated (up to
    :data:`agents.sb3.algos.MEMORY_BUDGET`); a resumed run refills it first (see :func:`train_sb3`).
    """
    tmp = run_dir / (MODEL + ".tmp")
    model.save(tmp)
    os.replace(tmp, run_dir / MODEL)
    save_run_config(run_dir, {**config, "num_timesteps": int(model.num_timesteps)})


def load_model(path: str | Path, device: str = "auto", env: VecEnv | None = None) -> tuple[BaseAlgorithm, dict]:
    """The model of a run (its folder or its ``model.zip``) and the run's configuration."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    config = load_run_config(run_dir)
    check_choice("algo", config.get("algo"), tuple(ALGOS))
    try:
        model = ALGOS[config["algo"]].load(run_dir / MODEL, env=env, device=device)
    except Exception as err:  # noqa: BLE001 - any failure to unzip / unpickle means the same here
        raise CheckpointError(f"{run_dir / MODEL} is not a readable SB3 model ({type(err).__name__}: {err})", "pass a run written by train_agent.py") from err
    return model, config


def train_sb3(
    algo: str,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
    run_dir: str | Path = "runs/ppo-shapes",
    total_timesteps: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    n_envs: int | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    overrides: dict | None = None,
) -> dict:
    """Train (or resume) an SB3 agent; returns the final evaluation (see :func:`agents.sb3.common.evaluate_run`).

    ``env_id``, ``env_kwargs``, ``seed``, ``n_envs``, ``overrides`` (hyperparameters of
    :func:`agents.sb3.algos.make_agent`): ``None`` takes the default, or the resumed run's (given
    ones must then agree with it). ``total_timesteps`` is the run's total (default 300 000, or
    the resumed run's): a resumed run trains ``total_timesteps - num_timesteps`` more steps (none
    if that is not positive: it is only evaluated again).
    """
    check_choice("algo", algo, tuple(ALGOS))
    run_dir = Path(run_dir)
    explicit = {"algo": algo, "env_id": env_id, "env_kwargs": env_kwargs or None, "seed": seed, "n_envs": n_envs, "overrides": overrides or None}
    config = open_run(run_dir, DEFAULTS, explicit, resume=resume, model_file=MODEL)
    total_timesteps = config["total_timesteps"] = total_timesteps or config.get("total_timesteps", 300_000)
    device = str(pick_device(device))
    # a resumed run draws other images than its start did: the seed moves on with the steps done
    env = make_vec(config["env_id"], config["env_kwargs"], config["n_envs"], config["seed"] + config.get("num_timesteps", 0), progress)
    tb = str(run_dir / "tb")
    if resume:
        model, _ = load_model(run_dir, device, env)
        model.tensorboard_log = tb
    else:
        model = make_agent(algo, env, seed=config["seed"], tensorboard_log=tb, device=device, **config["overrides"])
        run_dir.mkdir(parents=True, exist_ok=True)
    remaining = total_timesteps - model.num_timesteps
    start = time.perf_counter()
    if remaining > 0:
        callback = TqdmCallback(f"train {algo}") if progress else None
        refill = resume and algo in OFF_POLICY  # the replay buffer starts empty: refill it before updating
        if refill:
            starts, model.learning_starts = model.learning_starts, model.num_timesteps + model.learning_starts
        interrupted = False
        try:
            model.learn(remaining, callback=callback, reset_num_timesteps=not resume, tb_log_name=algo)
        except KeyboardInterrupt:  # keep what was learnt (continue with --resume)
            interrupted = True
        if refill:
            model.learning_starts = starts
        save_model(model, run_dir, config)
        if interrupted:
            raise KeyboardInterrupt
    train_seconds = time.perf_counter() - start
    env.close()
    results = evaluate_run(model, config["env_id"], config["env_kwargs"], seed=config["seed"])
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tb) as writer:
        log_eval(writer, results, model.num_timesteps)
    results.update(algo=algo, num_timesteps=int(model.num_timesteps), train_seconds=round(train_seconds, 1))
    write_metrics(run_dir, results)
    return results


__all__ = ["DEFAULTS", "MODEL", "TqdmCallback", "load_model", "make_vec", "save_model", "train_sb3"]

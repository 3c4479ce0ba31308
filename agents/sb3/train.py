"""Training an SB3 agent on a glimpse env: run folder, TensorBoard, resume, evaluation.

``train_sb3("ppo", ...)`` trains on a vector of ``n_envs`` envs, logs to ``run_dir/tb``, saves
SB3's own format (``run_dir/model.zip``, and ``run.json``: the configuration), then evaluates
on the evaluation split (:func:`agents.common.evaluation.evaluate_run`: learned, random, middle and grid
centres, and the global-image classifier) and writes ``run_dir/metrics.json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from agents.common.evaluation import evaluate_run, log_eval
from agents.common.run import load_run_config, open_run, save_run_config, write_metrics
from agents.sb3.algos import ALGOS, OFF_POLICY, make_agent
from agents.tb_logging import Figure2Callback, env_agent_final, open_writer
from rarl_gym.device import pick_device
from rarl_gym.env_settings import settings_kwargs
from rarl_gym.errors import CheckpointError, ConfigError, check_choice
from rarl_gym.io import atomic_path, run_lock, sigterm_as_interrupt

if TYPE_CHECKING:
    from envs.vector_env import GlimpseVectorEnv

MODEL = "model.zip"
REPLAY = "replay_buffer.pkl"
#: Save the run every this many env steps (``train_sb3(checkpoint_every=...)``).
CHECKPOINT_EVERY = 10_000
#: Replay buffers up to this size are saved with the model (and loaded on ``--resume``).
REPLAY_SAVE_LIMIT = 512 * 1024**2
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
            self.bar.set_postfix(
                reward=f"{sum(e['r'] for e in self.model.ep_info_buffer) / len(self.model.ep_info_buffer):.3f}"
            )
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def make_vec(env_id: str, env_kwargs: dict, n_envs: int, seed: int, progress: bool = False) -> VecEnv:
    """``n_envs`` monitored envs as an SB3 ``VecEnv`` (env i seeded ``seed + i``).

    The native batched :class:`envs.vector_env.GlimpseVectorEnv` (one batched crop per step) through
    its SB3 adapter when the env id has one, else a ``DummyVecEnv`` of ``gym.make`` envs.
    """
    kwargs = {**settings_kwargs(env_kwargs), "progress": progress}
    try:
        from agents.sb3.vec_env import to_sb3

        venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
    except (gym.error.Error, ImportError):
        return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs, vec_env_cls=DummyVecEnv)
    env = VecMonitor(to_sb3(cast("GlimpseVectorEnv", venv)))  # the id's vector_entry_point
    env.seed(seed)
    return env


def save_model(model: BaseAlgorithm, run_dir: Path, config: dict, *, train_seconds: float | None = None) -> list[str]:
    """``model.zip`` and ``run.json`` (with ``num_timesteps`` and the run's ``train_seconds``), each atomically.

    The replay buffer of SAC / TD3 is saved too (``replay_buffer.pkl``) when it holds at most
    :data:`REPLAY_SAVE_LIMIT` bytes; a larger one is not (SB3 pickles it whole, as allocated, up to
    :data:`agents.sb3.algos.MEMORY_BUDGET`) and a resumed run refills it first (see :func:`train_sb3`).
    A full disk is a :class:`rarl_gym.errors.DiskFullError` and keeps the previous files. Returns
    the names of the files written.
    """
    with atomic_path(run_dir / MODEL, what="SB3 model") as tmp:
        model.save(tmp)
    written = [MODEL]
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None and replay_bytes(buffer) <= REPLAY_SAVE_LIMIT:
        with atomic_path(run_dir / REPLAY, what="replay buffer") as tmp:
            cast(OffPolicyAlgorithm, model).save_replay_buffer(tmp)  # it has a replay buffer
        written.append(REPLAY)
    extra = {} if train_seconds is None else {"train_seconds": round(train_seconds, 1)}
    save_run_config(run_dir, {**config, "num_timesteps": int(model.num_timesteps), **extra})
    return [*written, "run.json"]


def replay_bytes(buffer: Any) -> int:
    """Bytes of the arrays a replay buffer holds (what pickling it writes)."""
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    for name in ("observations", "next_observations"):
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            arrays += [v for v in value.values() if isinstance(v, np.ndarray)]
    return int(sum(a.nbytes for a in arrays))


class PeriodicSave(BaseCallback):
    """Save the run (:func:`save_model`) every ``every`` env steps, at the start of a rollout (after
    the previous update), so that a crash or ``kill -9`` loses at most ``every`` steps."""

    def __init__(self, every: int, save: Callable[[], object]):
        super().__init__()
        self.every = every
        self.save = save
        self.last = 0

    def _on_training_start(self) -> None:
        self.last = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps - self.last >= self.every:
            self.save()
            self.last = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True


def load_model(path: str | Path, device: str = "auto", env: VecEnv | None = None) -> tuple[BaseAlgorithm, dict]:
    """The model of a run (its folder or its ``model.zip``) and the run's configuration."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    config = load_run_config(run_dir)
    check_choice("algo", config.get("algo"), tuple(ALGOS))
    try:
        model = ALGOS[config["algo"]].load(run_dir / MODEL, env=env, device=device)
    except Exception as err:  # any failure to unzip / unpickle means the same here
        raise CheckpointError(
            f"{run_dir / MODEL} is not a readable SB3 model ({type(err).__name__}: {err})",
            "pass a run written by train_agent.py",
        ) from err
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
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> dict:
    """Train (or resume) an SB3 agent; returns the final evaluation (see :func:`agents.common.evaluation.evaluate_run`).

    ``env_id``, ``env_kwargs``, ``seed``, ``n_envs``, ``overrides`` (hyperparameters of
    :func:`agents.sb3.algos.make_agent`): ``None`` takes the default, or the resumed run's (given
    ones must then agree with it). ``total_timesteps`` is the run's total (default 300 000, or
    the resumed run's): a resumed run trains ``total_timesteps - num_timesteps`` more steps (none
    if that is not positive: it is only evaluated again). The run is saved every
    ``checkpoint_every`` env steps (and at the end, and on Ctrl-C or SIGTERM), so ``resume`` continues from the
    last save after a crash; the run folder is locked meanwhile (a second process training into it
    fails with :class:`rarl_gym.errors.InUseError`).
    """
    check_choice("algo", algo, tuple(ALGOS))
    for name, value in (("total_timesteps", total_timesteps), ("n_envs", n_envs), ("checkpoint_every", checkpoint_every)):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(
                f"{name} must be a positive int, got {value!r}", f"pass e.g. {name}={DEFAULTS.get(name, 10_000)}"
            )
    run_dir = Path(run_dir)
    explicit = {
        "algo": algo,
        "env_id": env_id,
        "env_kwargs": env_kwargs or None,
        "seed": seed,
        "n_envs": n_envs,
        "overrides": overrides or None,
    }
    with sigterm_as_interrupt():  # from here on SIGTERM is Ctrl-C: the setup too, not only the training
        config = open_run(run_dir, DEFAULTS, explicit, resume=resume, model_file=MODEL)
        with run_lock(run_dir):
            return _train_sb3(algo, run_dir, config, total_timesteps, device, progress, resume, checkpoint_every)


def _train_sb3(
    algo: str,
    run_dir: Path,
    config: dict,
    total_timesteps: int | None,
    device: str,
    progress: bool,
    resume: bool,
    checkpoint_every: int,
) -> dict:
    total_timesteps = config["total_timesteps"] = total_timesteps or config.get("total_timesteps", 300_000)
    device = str(pick_device(device))
    # a resumed run draws other images than its start did: the seed moves on with the steps done
    env = make_vec(
        config["env_id"], config["env_kwargs"], config["n_envs"], config["seed"] + config.get("num_timesteps", 0), progress
    )
    tb = str(run_dir / "tb")
    refill = False
    if resume:
        model, _ = load_model(run_dir, device, env)
        model.tensorboard_log = tb
        if algo in OFF_POLICY:
            if (run_dir / REPLAY).exists():  # saved with the model: continue exactly where it was
                cast(OffPolicyAlgorithm, model).load_replay_buffer(run_dir / REPLAY)
            else:
                refill = True  # too large to save: the buffer starts empty, refill it before updating
    else:
        model = make_agent(algo, env, seed=config["seed"], tensorboard_log=tb, device=device, **config["overrides"])
    remaining = total_timesteps - model.num_timesteps
    start = time.perf_counter()
    earlier_seconds = float(config.get("train_seconds", 0.0)) if resume else 0.0  # the run's earlier sessions
    config.pop("train_seconds", None)

    def save() -> list[str]:
        return save_model(model, run_dir, config, train_seconds=earlier_seconds + time.perf_counter() - start)

    if remaining > 0:
        callbacks: list[BaseCallback] = [PeriodicSave(checkpoint_every, save)] + (
            [TqdmCallback(f"train {algo}")] if progress else []
        )
        callbacks.append(
            Figure2Callback(config["env_id"], config["env_kwargs"], every=max(1, total_timesteps // 10))
        )  # TensorBoard: Figure 2
        if refill:
            starts, model.learning_starts = model.learning_starts, model.num_timesteps + model.learning_starts  # type: ignore[attr-defined]  # off-policy
        interrupted = False
        with sigterm_as_interrupt():  # kill / a scheduler's stop: the same save as Ctrl-C (a second one is ignored)
            try:
                model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=not resume, tb_log_name=algo)
            except KeyboardInterrupt:  # keep what was learnt (continue with --resume)
                interrupted = True
            if refill:
                model.learning_starts = starts  # type: ignore[attr-defined]  # off-policy
            saved = save()
        if interrupted:
            print(
                f"interrupted at {int(model.num_timesteps)} env steps: saved {', '.join(saved)} in {run_dir}; "
                "continue with --resume",
                file=sys.stderr,
            )
            raise KeyboardInterrupt
    train_seconds = earlier_seconds + time.perf_counter() - start  # every session of the run
    env.close()
    results = evaluate_run(model, config["env_id"], config["env_kwargs"], seed=config["seed"])
    with open_writer(tb) as writer:  # a full disk or read-only tb/ is named
        log_eval(writer, results, model.num_timesteps)
        env_agent_final(writer, model, config, results, model.num_timesteps)  # TensorBoard: PR curves, Figure 2, hparams
    results.update(algo=algo, num_timesteps=int(model.num_timesteps), train_seconds=round(train_seconds, 1))
    write_metrics(run_dir, results)
    return results


__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULTS",
    "MODEL",
    "REPLAY",
    "PeriodicSave",
    "TqdmCallback",
    "load_model",
    "make_vec",
    "save_model",
    "train_sb3",
]

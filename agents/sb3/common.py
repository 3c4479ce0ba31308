"""Framework-free pieces shared by every agent trained through the env (SB3's and custom ones).

Only Gymnasium and numpy are needed here, so an algorithm written against nothing but the
Gymnasium API (:mod:`agents.custom.cem`) gets the same run folder, ``metrics.json`` and
comparison table as the RARL trainer.

A *policy* is anything with Stable-Baselines3's ``predict`` signature::

    actions, state = policy.predict(obs, state=None, episode_start=None, deterministic=True)

taking a batch of observations ``{"glimpses": [B, K, C, s, s], "step": [B]}`` and returning
``actions [B, A]`` (``state`` is the recurrent state, ``None`` for a feed-forward policy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from rarl_gym import metrics
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import CheckpointError, ConfigError, NotWritableError, RunExistsError, check_choice
from rarl_gym.glimpse import FIXED_GRID
from rarl_gym.io import atomic_write_json

#: The run configuration written beside the model (what ``--resume`` and evaluate.py read).
RUN_CONFIG = "run.json"
#: Files that mark a folder as holding a run (of any agent): a new run never writes into it.
RUN_FILES = ("checkpoint.pt", "model.zip", "cem.npz", RUN_CONFIG)
#: Where the glimpses go in the evaluation: the policy's centres, uniform random, the image middle,
#: a fixed grid (the middle, then the centres of the four quadrants, cycling; as the RARL trainer).
CENTER_POLICIES = ("learned", "random", "center", "grid")


def make_env(env_id: str, env_kwargs: dict, *, split: str | None = None, progress: bool = False) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` on ``split`` (default: the env's training split)."""
    kwargs = {k: v for k, v in env_kwargs.items() if k != "progress"}
    if split is not None:
        kwargs["split"] = split
    return gym.make(env_id, progress=progress, **kwargs)


# -- the run folder ----------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def open_run(run_dir: str | Path, defaults: dict, explicit: dict, *, resume: bool, model_file: str) -> dict:
    """The configuration of a new or resumed run in ``run_dir``.

    A new run: ``defaults`` updated by ``explicit`` (the options given), with the validated env
    ``settings`` added; refused (:class:`RunExistsError`) if ``run_dir`` already holds any run.
    ``resume``: the run's saved configuration; ``explicit`` options must agree with it
    (:class:`CheckpointError` otherwise), as must ``model_file`` exist.
    """
    run_dir = Path(run_dir)
    explicit = _jsonable({k: v for k, v in explicit.items() if v is not None})
    if run_dir.exists() and not run_dir.is_dir():
        raise NotWritableError(
            f"the run folder {run_dir} is a file, not a folder", "pass --run-dir a new folder or one that holds a run"
        )
    if not resume:
        found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
        if found:
            raise RunExistsError(
                f"the run folder {run_dir} already holds a run ({found[0]})",
                "pass --resume to continue it, or --run-dir NEW_FOLDER to start another",
            )
        config = {**_jsonable(defaults), **explicit}
        config["env_kwargs"] = {k: v for k, v in config.get("env_kwargs", {}).items() if k != "progress"}
        config["settings"] = EnvSettings.from_env_id(config["env_id"], config["env_kwargs"]).to_dict()
        return config
    if not (run_dir / model_file).exists() or not (run_dir / RUN_CONFIG).exists():
        raise CheckpointError(
            f"--resume: there is no {model_file} and {RUN_CONFIG} in {run_dir}",
            "check --run-dir, or drop --resume to start a new run",
        )
    config = load_run_config(run_dir)
    if "env_kwargs" in explicit:  # --backbone X on top of the run's env kwargs, not instead of them
        explicit["env_kwargs"] = {**config.get("env_kwargs", {}), **explicit["env_kwargs"]}
    diff = {k: (config.get(k), v) for k, v in explicit.items() if config.get(k) != v}
    if diff:
        lines = "; ".join(f"{k}: run {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"the run in {run_dir} comes from another configuration ({lines})",
            "resume with the same options, or start a new run with another --run-dir",
        )
    return config


def load_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"cannot read the run configuration {path} ({err})", "pass a run folder written by train_agent.py"
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("settings"), dict) or "env_id" not in config:
        raise CheckpointError(
            f"{path} is not a run configuration of train_agent.py (no env_id / settings)",
            "pass a run folder written by train_agent.py",
        )
    return config


def save_run_config(run_dir: str | Path, config: dict) -> None:
    """Write ``run.json`` atomically (:func:`rarl_gym.io.atomic_write_json`)."""
    atomic_write_json(Path(run_dir) / RUN_CONFIG, config, what="run configuration")


# -- evaluation through the env ----------------------------------------------------------------
class SplitPredictions(NamedTuple):
    probs: np.ndarray  # [N, L] label probabilities (see scores_to_probs)
    labels: np.ndarray  # [N, L] 1 / 0 / -1
    rewards: np.ndarray  # [N] each episode's return
    classes: tuple[str, ...]


def scores_to_probs(scores: np.ndarray, mode: str) -> np.ndarray:
    """Probabilities of the fused scores of the final ``info["scores"]``.

    ``mode="locate"``: the scores are logits of the env's region scorer, which is trained with a
    binary cross-entropy per class, so ``sigmoid``. ``mode="joint"``: the agent's own scores,
    actions in ``[-1, 1]``, so ``(s + 1) / 2``. AP only depends on the ranking; the top-k metrics'
    threshold (0.1) applies to these probabilities.
    """
    s = np.asarray(scores, np.float64)
    return 1.0 / (1.0 + np.exp(-s)) if mode == "locate" else (np.clip(s, -1.0, 1.0) + 1.0) / 2.0


class _EnvList:
    """B single envs stepped in lockstep with the batched API of :class:`envs.vector_env.GlimpseVectorEnv`
    (the fallback of :func:`lockstep_envs`): ``reset(options={"index": [B]})``, ``step(actions [B, A])``."""

    def __init__(self, envs: list[gym.Env]):
        self.envs, self.unwrapped = envs, envs[0].unwrapped

    def reset(self, *, options: dict) -> tuple[dict, dict]:
        return _stack([env.reset(options={"index": int(i)})[0] for env, i in zip(self.envs, options["index"])]), {}

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, infos = zip(*(env.step(a) for env, a in zip(self.envs, actions)))
        final = {"final_info": _stack(list(infos))} if terminated[0] or truncated[0] else {}
        return _stack(list(obs)), np.array(rewards), np.array(terminated), np.array(truncated), final

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _stack(dicts: list[dict]) -> dict:
    return {key: np.stack([np.asarray(d[key]) for d in dicts]) for key in dicts[0]}


def lockstep_envs(env_id: str, env_kwargs: dict, split: str | None, num_envs: int):
    """``num_envs`` envs on ``split`` whose episodes run in lockstep (every episode has T + 1 steps).

    The native batched :class:`envs.vector_env.GlimpseVectorEnv` (``gym.make_vec``) when the env id
    has one, else a list of ``gym.make`` envs with the same batched ``reset`` / ``step``.
    """
    kwargs = {k: v for k, v in env_kwargs.items() if k != "progress"}
    if split is not None:
        kwargs["split"] = split
    try:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", progress=False, **kwargs)
    except (gym.error.Error, ImportError):
        return _EnvList([gym.make(env_id, progress=False, **kwargs) for _ in range(num_envs)])


def evaluate_policy_on_split(
    policy,
    env_id: str,
    env_kwargs: dict,
    split: str | None = None,
    *,
    centers: str = "learned",
    batch: int = 64,
    seed: int = 0,
) -> SplitPredictions:
    """One deterministic episode per image of ``split`` (``reset(options={"index": i})``), ``batch`` at a time.

    The probabilities come from the final ``info["scores"]`` (:func:`scores_to_probs`).
    ``centers="random"`` / ``"center"`` / ``"grid"`` replace the centre of the policy's actions by
    a uniform random point (seeded) / the image middle / :data:`FIXED_GRID` (step t: ``FIXED_GRID[t % 5]``);
    the rest of the action (the label scores of ``mode="joint"``) and the policy's state stay the
    policy's: the same model with other centres, as in the RARL trainer's comparison.
    """
    check_choice("centers", centers, CENTER_POLICIES)
    venv = lockstep_envs(env_id, env_kwargs, split, batch)
    n, b, mode, classes = len(venv.unwrapped.store), batch, venv.unwrapped.mode, tuple(venv.unwrapped.classes)
    rng = np.random.default_rng(seed)
    scores, labels, rewards = [], [], []
    for lo in range(0, n, b):
        keep = min(b, n - lo)  # a last, short batch repeats the last image to fill the B envs
        obs, _ = venv.reset(options={"index": np.minimum(np.arange(lo, lo + b), n - 1)})
        state, first, ret, t = None, np.ones(b, bool), np.zeros(b), 0
        while True:
            actions, state = policy.predict(obs, state=state, episode_start=first, deterministic=True)
            actions = np.array(actions, dtype=np.float32).reshape(b, -1)
            if centers == "random":
                actions[:, :2] = rng.uniform(-1.0, 1.0, (b, 2))
            elif centers in ("center", "grid"):
                actions[:, :2] = (0.0, 0.0) if centers == "center" else FIXED_GRID[t % len(FIXED_GRID)]
            first[:], t = False, t + 1
            obs, reward, terminated, truncated, infos = venv.step(np.clip(actions, -1.0, 1.0))
            ret += reward
            if terminated.all() or truncated.all():
                break
        scores.append(np.asarray(infos["final_info"]["scores"])[:keep])
        labels.append(np.asarray(infos["final_info"]["labels"])[:keep])
        rewards.append(ret[:keep])
    venv.close()
    return SplitPredictions(
        scores_to_probs(np.concatenate(scores), mode), np.concatenate(labels), np.concatenate(rewards), classes
    )


def global_baseline(env_id: str, env_kwargs: dict, split: str, *, seed: int = 0) -> tuple[metrics.MetricReport, float]:
    """The global-image linear classifier, fitted on the training split's pooled features, on
    ``split``: its report and mean top-k reward (the RARL trainer's ``global`` row)."""
    import torch

    from agents.rarl.trainer import predict_global
    from rarl_gym.reward import topk_overlap
    from rarl_gym.scorer import fit_global_classifier, pooled_features

    settings = EnvSettings.from_env_id(env_id, {k: v for k, v in env_kwargs.items() if k != "progress"})
    train_store = settings.source.open_split(settings.split, progress=False)[1]
    store = settings.source.open_split(split, progress=False)[1]
    scorer = fit_global_classifier(pooled_features(train_store), torch.from_numpy(train_store.labels), seed=seed)
    probs = predict_global(scorer, store)
    reward = topk_overlap(torch.from_numpy(probs), torch.from_numpy(store.labels).long(), settings.k).mean()
    return metrics.evaluate(probs, store.labels, classes=store.classes), float(reward)


def evaluate_run(
    policy, env_id: str, env_kwargs: dict, split: str | None = None, *, seed: int = 0, baseline: bool = True
) -> dict:
    """Metrics of the policy's centres, of random, fixed (image middle) and grid centres, and
    (``baseline``) of the global-image linear classifier (:func:`global_baseline`).

    ``split`` defaults to the dataset's evaluation split. Returns the shape of the RARL trainer's
    results (``split``, ``views``, ``policies``: one metrics dict with ``reward`` per row,
    ``reports``: the :class:`rarl_gym.metrics.MetricReport` objects), which
    :func:`rarl_gym.cli.print_results` prints.
    """
    if split is None:
        split = EnvSettings.from_env_id(env_id, {k: v for k, v in env_kwargs.items() if k != "progress"}).source.eval_split
    policies, reports = {}, {}
    for centers in CENTER_POLICIES:
        pred = evaluate_policy_on_split(policy, env_id, env_kwargs, split, centers=centers, seed=seed)
        reports[centers] = metrics.evaluate(pred.probs, pred.labels, classes=pred.classes)
        policies[centers] = {**reports[centers].to_dict(), "reward": float(pred.rewards.mean())}
    if baseline:
        reports["global"], reward = global_baseline(env_id, env_kwargs, split, seed=seed)
        policies["global"] = {**reports["global"].to_dict(), "reward": reward}
    return {"split": split, "views": 1, "policies": policies, "reports": reports}


def write_metrics(run_dir: str | Path, results: dict, **extra) -> Path:
    """``run_dir/metrics.json``: ``results`` without the report objects, plus ``extra``."""
    path = Path(run_dir) / "metrics.json"
    path.write_text(json.dumps({**{k: v for k, v in results.items() if k != "reports"}, **extra}, indent=1))
    return path


def log_eval(writer, results: dict, step: int) -> None:
    """TensorBoard scalars ``eval/<metric>_<centres>`` of :func:`evaluate_run`'s results."""
    for name, row in results["policies"].items():
        for key in ("mAP_area", "mAP_voc07", "CF1", "OF1", "reward"):
            if row.get(key) is not None:
                writer.add_scalar(f"eval/{key}_{name}", row[key], step)


def check_views(views: int) -> None:
    if views != 1:
        raise ConfigError(
            f"views={views}: agents trained through the env are evaluated on the whole image only", "use --views 1"
        )


__all__ = [
    "CENTER_POLICIES",
    "RUN_CONFIG",
    "RUN_FILES",
    "SplitPredictions",
    "check_views",
    "evaluate_policy_on_split",
    "evaluate_run",
    "global_baseline",
    "load_run_config",
    "lockstep_envs",
    "log_eval",
    "make_env",
    "open_run",
    "save_run_config",
    "scores_to_probs",
    "write_metrics",
]

"""Evaluating an agent through the env: framework-free, shared by every agent trained through the
env (:mod:`agents.sb3`, :mod:`agents.custom`).

Only Gymnasium and numpy are needed here (torch for the global-image baseline), so an algorithm
written against nothing but the Gymnasium API (:mod:`agents.custom.cem`) gets the same metrics and
comparison table as the RARL trainer (:func:`agents.rarl.trainer.evaluate_agent`, which evaluates
the RARL agent on the cached feature maps directly).

A *policy* is anything with Stable-Baselines3's ``predict`` signature::

    actions, state = policy.predict(obs, state=None, episode_start=None, deterministic=True)

taking a batch of observations ``{"glimpses": [B, K, C, s, s], "step": [B]}`` and returning
``actions [B, A]`` (``state`` is the recurrent state, ``None`` for a feed-forward policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from rarl_gym import metrics
from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import ConfigError, check_choice
from rarl_gym.glimpse import CENTER_POLICIES, FIXED_GRID


def make_env(env_id: str, env_kwargs: dict, *, split: str | None = None, progress: bool = False) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` on ``split`` (default: the env's training split)."""
    kwargs = settings_kwargs(env_kwargs)
    if split is not None:
        kwargs["split"] = split
    return gym.make(env_id, progress=progress, **kwargs)


class SplitPredictions(NamedTuple):
    probs: np.ndarray  # [N, L] label probabilities (see env_scores_to_probs)
    labels: np.ndarray  # [N, L] 1 / 0 / -1
    rewards: np.ndarray  # [N] each episode's return
    classes: tuple[str, ...]


def env_scores_to_probs(scores: np.ndarray, mode: str) -> np.ndarray:
    """Label probabilities ``[..., L]`` of a glimpse env's final ``info["scores"]`` ``[..., L]`` (the fused scores).

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

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminated, truncated, infos = zip(*(env.step(a) for env, a in zip(self.envs, actions)))
        final = {"final_info": _stack(list(infos))} if terminated[0] or truncated[0] else {}
        return _stack(list(obs)), np.array(rewards), np.array(terminated), np.array(truncated), final

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _stack(dicts: list[dict]) -> dict:
    return {key: np.stack([np.asarray(d[key]) for d in dicts]) for key in dicts[0]}


def lockstep_envs(env_id: str, env_kwargs: dict, split: str | None, num_envs: int) -> Any:
    """``num_envs`` envs on ``split`` whose episodes run in lockstep (every episode has T + 1 steps).

    The native batched :class:`envs.vector_env.GlimpseVectorEnv` (``gym.make_vec``) when the env id
    has one, else a list of ``gym.make`` envs with the same batched ``reset`` / ``step``.
    """
    kwargs = settings_kwargs(env_kwargs)
    if split is not None:
        kwargs["split"] = split
    try:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", progress=False, **kwargs)
    except (gym.error.Error, ImportError):
        return _EnvList([gym.make(env_id, progress=False, **kwargs) for _ in range(num_envs)])


def play_episodes(
    policy: Any,
    venv: Any,
    index: np.ndarray,
    *,
    center_policy: str = "learned",
    rng: np.random.Generator | None = None,
) -> tuple[dict, np.ndarray]:
    """One deterministic episode of each image ``index [B]`` on ``venv`` (B lockstep envs,
    :func:`lockstep_envs`): the batched final info (``scores``, ``labels``, ``boxes``, ...) and the
    returns ``[B]``. The one loop that drives a policy over images (the evaluation, the Figure 2 of
    TensorBoard). ``center_policy`` replaces the centres as :func:`evaluate_policy_on_split` says.
    """
    b = len(index)
    obs, _ = venv.reset(options={"index": np.asarray(index)})
    state, first, ret, t = None, np.ones(b, bool), np.zeros(b), 0
    while True:
        actions, state = policy.predict(obs, state=state, episode_start=first, deterministic=True)
        actions = np.array(actions, dtype=np.float32).reshape(b, -1)
        if center_policy == "random":
            assert rng is not None
            actions[:, :2] = rng.uniform(-1.0, 1.0, (b, 2))
        elif center_policy in ("center", "grid"):
            actions[:, :2] = (0.0, 0.0) if center_policy == "center" else FIXED_GRID[t % len(FIXED_GRID)]
        first[:], t = False, t + 1
        obs, reward, terminated, truncated, infos = venv.step(np.clip(actions, -1.0, 1.0))
        ret += reward
        if terminated.all() or truncated.all():
            return infos["final_info"], ret


def evaluate_policy_on_split(
    policy: Any,
    env_id: str,
    env_kwargs: dict,
    split: str | None = None,
    *,
    center_policy: str = "learned",
    batch: int = 64,
    seed: int = 0,
) -> SplitPredictions:
    """One deterministic episode per image of ``split`` (``reset(options={"index": i})``), ``batch`` at a time.

    The probabilities come from the final ``info["scores"]`` (:func:`env_scores_to_probs`).
    ``center_policy`` (one of :data:`rarl_gym.glimpse.CENTER_POLICIES`) ``"random"`` / ``"center"`` /
    ``"grid"`` replaces the centre of the policy's actions by a uniform random point (seeded) / the
    image middle / :data:`FIXED_GRID` (step t: ``FIXED_GRID[t % 5]``); the rest of the action (the
    label scores of ``mode="joint"``) and the policy's state stay the policy's: the same model with
    other centres, as in the RARL trainer's comparison.
    """
    check_choice("center_policy", center_policy, CENTER_POLICIES)
    venv = lockstep_envs(env_id, env_kwargs, split, batch)
    n, b, mode, classes = len(venv.unwrapped.store), batch, venv.unwrapped.mode, tuple(venv.unwrapped.classes)
    rng = np.random.default_rng(seed)
    scores, labels, rewards = [], [], []
    for lo in range(0, n, b):
        keep = min(b, n - lo)  # a last, short batch repeats the last image to fill the B envs
        index = np.minimum(np.arange(lo, lo + b), n - 1)
        final, ret = play_episodes(policy, venv, index, center_policy=center_policy, rng=rng)
        scores.append(np.asarray(final["scores"])[:keep])
        labels.append(np.asarray(final["labels"])[:keep])
        rewards.append(ret[:keep])
    venv.close()
    return SplitPredictions(
        env_scores_to_probs(np.concatenate(scores), mode), np.concatenate(labels), np.concatenate(rewards), classes
    )


def global_baseline(env_id: str, env_kwargs: dict, split: str, *, seed: int = 0) -> tuple[metrics.MetricReport, float]:
    """The global-image linear classifier, fitted on the training split's pooled features, on
    ``split``: its report and mean top-k reward (the RARL trainer's ``global`` row)."""
    import torch

    from rarl_gym.reward import topk_overlap
    from rarl_gym.scorer import fit_global_classifier, pooled_features, predict_global

    settings = EnvSettings.from_env_id(env_id, env_kwargs)
    assert settings.split is not None  # EnvSettings fills in the training split
    train_store = settings.source.open_split(settings.split, progress=False)[1]
    store = settings.source.open_split(split, progress=False)[1]
    scorer = fit_global_classifier(pooled_features(train_store), torch.from_numpy(train_store.labels), seed=seed)
    probs = predict_global(scorer, store)
    reward = topk_overlap(torch.from_numpy(probs), torch.from_numpy(store.labels).long(), settings.k).mean()
    return metrics.evaluate(probs, store.labels, classes=store.classes), float(reward)


class ComparisonTable:
    """The rows of a comparison table on one split, the one home of its format: per row the
    :meth:`rarl_gym.metrics.MetricReport.to_dict` metrics, ``reward`` and, given the split's boxes
    (``objects``, :func:`rarl_gym.data.object_boxes`) and a row's label boxes, ``pointing`` and
    ``corloc`` (:func:`rarl_gym.metrics.grounding`). Used by :func:`evaluate_run` (agents trained
    through the env) and :func:`agents.rarl.evaluate.evaluate_agent` (the RARL agent on the cache).
    """

    def __init__(self, labels: np.ndarray, classes: Sequence[str], objects: Sequence[Any] | None = None):
        self.labels, self.classes, self.objects = labels, tuple(classes), objects
        self.policies: dict[str, dict] = {}
        self.reports: dict[str, metrics.MetricReport] = {}
        self.pairs: int | None = None

    def add(self, name: str, probs: np.ndarray, *, reward: float | None = None, label_boxes: np.ndarray | None = None) -> None:
        """Row ``name`` of probabilities ``[N, L]`` (``reward``: the episodes' mean; default the top-k
        overlap of ``probs``), with ``label_boxes [N, L, 4]`` where the row has regions."""
        self.reports[name] = metrics.evaluate(probs, self.labels, classes=self.classes)
        if reward is None:
            import torch

            from rarl_gym.reward import topk_overlap

            reward = float(topk_overlap(torch.from_numpy(probs), torch.from_numpy(self.labels).long()).mean())
        self.policies[name] = {**self.reports[name].to_dict(), "reward": reward}
        if self.objects is not None and label_boxes is not None:
            found = metrics.grounding(label_boxes, self.labels, self.objects)
            self.policies[name].update(pointing=found["pointing"], corloc=found["corloc"])
            self.pairs = found["pairs"]

    def results(self, split: str, views: int, **extra: Any) -> dict:
        """JSON-ready ``split``, ``views``, ``extra``, ``grounding_pairs``, ``policies``, plus ``reports``."""
        out = {"split": split, "views": views, **extra, "policies": self.policies, "reports": self.reports}
        if self.pairs is not None:
            out["grounding_pairs"] = self.pairs
        return out


def evaluate_run(
    policy: Any, env_id: str, env_kwargs: dict, split: str | None = None, *, seed: int = 0, baseline: bool = True
) -> dict:
    """Metrics of the policy's centres, of random, fixed (image middle) and grid centres, and
    (``baseline``) of the global-image linear classifier (:func:`global_baseline`).

    ``split`` defaults to the dataset's evaluation split. Returns the shape of the RARL trainer's
    results (``split``, ``views``, ``policies``: one metrics dict with ``reward`` per row,
    ``reports``: the :class:`rarl_gym.metrics.MetricReport` objects), which
    :func:`rarl_gym.cli.print_results` prints.
    """
    if split is None:
        split = EnvSettings.from_env_id(env_id, env_kwargs).source.eval_split
    table: ComparisonTable | None = None
    for name in CENTER_POLICIES:
        pred = evaluate_policy_on_split(policy, env_id, env_kwargs, split, center_policy=name, seed=seed)
        table = table or ComparisonTable(pred.labels, pred.classes)
        table.add(name, pred.probs, reward=float(pred.rewards.mean()))
    assert table is not None
    if baseline:
        report, reward = global_baseline(env_id, env_kwargs, split, seed=seed)
        table.reports["global"], table.policies["global"] = report, {**report.to_dict(), "reward": reward}
    return table.results(split, 1)


def log_eval(writer: Any, results: dict, step: int) -> None:
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
    "ComparisonTable",
    "SplitPredictions",
    "check_views",
    "env_scores_to_probs",
    "evaluate_policy_on_split",
    "evaluate_run",
    "global_baseline",
    "lockstep_envs",
    "log_eval",
    "make_env",
    "play_episodes",
]

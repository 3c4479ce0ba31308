"""The RARL agent on a whole split: predictions (any centre policy, 1 or 10 views, M sequences)
and the comparison table of the trained model against what a user would pick instead.

Every row of :func:`evaluate_agent` uses the same frozen features; the RARL rows also use the
same trained model, with other centres. Where the split has boxes (VOC07 XML, COCO instances),
each row with regions gains the grounding of :func:`rarl_gym.metrics.grounding`: does the region
that gives each true label lie on an object of that class (pointing game, CorLoc).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from agents.common.evaluation import ComparisonTable
from agents.rarl.model import RARLAgent
from agents.rarl.oracle import oracle
from agents.rarl.rollout import rollout
from rarl_gym.csra import fit_csra, predict_csra
from rarl_gym.data import object_boxes
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import ConfigError
from rarl_gym.features.backbones import TAILS, build_tail
from rarl_gym.features.store import FeatureStore
from rarl_gym.glimpse import crop, random_views, ten_views
from rarl_gym.scorer import (
    RegionScorer,
    fit_global_classifier,
    masked_bce,
    pooled_features,
    predict_global,
    seeded_scorer,
)
from rarl_gym.windows import fit_windows_classifier, predict_windows

if TYPE_CHECKING:
    from agents.rarl.trainer import TrainConfig

#: The centre policies of the comparison table; ``"peak"`` needs the linear head's logit maps.
RARL_ROWS: tuple[str, ...] = ("learned", "random", "center", "grid", "peak")
#: Rows whose sequences differ from one sample to the next: the M-sequence ensembles (``samples``).
ENSEMBLE_ROWS: tuple[str, ...] = ("learned", "random")


def feature_batches(
    store: FeatureStore, batch_size: int, generator: torch.Generator, device: Any, *, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled ``(feature_maps [B, C, H, W], labels [B, L], index [B])``; rank r
    takes every world-th batch."""
    order = torch.randperm(len(store), generator=generator).numpy()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if world > 1:  # every rank must take the same number of steps (gradients are all-reduced)
        batches = batches[: max(world, len(batches) // world * world)]
    for idx in batches[rank::world]:
        yield (*store.batch(idx, device), torch.as_tensor(idx, device=device))


def view_batch(
    batch: int, views: int, view_crop: float, device: Any, repeat: int = 1
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ten-view set-up (:func:`rarl_gym.glimpse.ten_views`) of ``batch`` images, each view
    ``repeat`` times in a row: ``(windows [B * 10 * repeat, 4], flips [B * 10 * repeat])``;
    ``None`` for one view (the whole image)."""
    if views == 1:
        return None
    if views != 10:
        raise ConfigError(f"views must be 1 or 10, got {views}", "use --views 1 or --views 10")
    v, f = ten_views(view_crop, device=device)
    return v.repeat_interleave(repeat, 0).repeat(batch, 1), f.repeat_interleave(repeat, 0).repeat(batch)


class SplitPrediction(NamedTuple):
    probs: np.ndarray  # [N, L] label probabilities (mean over views and sequences)
    rewards: np.ndarray  # [N] the env's reward (top-k overlap), mean over views and sequences
    label_boxes: np.ndarray | None  # [N, L, 4] per class the region that gives its score (one view), image coords


@torch.no_grad()
def predict(
    agent: RARLAgent,
    store: FeatureStore,
    settings: EnvSettings,
    *,
    centers: str = "learned",
    views: int = 1,
    samples: int = 1,
    view_crop: float = 0.875,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> SplitPrediction:
    """Label probabilities, rewards and label boxes of a whole split.

    One sequence per view (``samples=1``) is the test-time policy's mode. ``samples=M > 1``
    averages the probabilities of M sampled sequences per view (the learned policy's Gaussian
    samples; M random sequences for ``"random"``): test-time Monte-Carlo sampling. ``views=10``
    averages the ten views (4 corner crops of side ``view_crop``, the centre crop and their mirrors,
    cut from the feature map). The label boxes (one view only, else ``None``) are, per class, the
    region whose score is the class's max, in the sequence where the class scored highest.
    """
    if not (isinstance(samples, int) and samples >= 1):
        raise ConfigError(f"samples must be a positive int, got {samples!r}", "use --samples 1 (one sequence) or e.g. 16")
    agent.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    reps = views * samples
    batch_size = max(1, batch_size // reps)  # each map is repeated views x samples times
    probs, rewards, boxes = [], [], []
    for lo in range(0, len(store), batch_size):
        feats, labels = store.batch(np.arange(lo, min(lo + batch_size, len(store))), device)
        b = feats.shape[0]
        view = view_batch(b, views, view_crop, device, repeat=samples)
        out = rollout(
            agent,
            feats,
            labels.repeat_interleave(reps, 0),
            **settings.rollout_kwargs(),
            centers=centers,
            sample=samples > 1,
            generator=generator,
            view=view,
            repeat=reps,
        )
        p = agent.probabilities(out.fused).reshape(b, reps, -1)  # [B, reps, L]
        probs.append(p.mean(1).cpu())
        rewards.append(out.reward.reshape(b, reps).mean(1).cpu())
        if views == 1:
            best = p.argmax(1)  # [B, L] the sequence where each class scored highest
            rows = torch.arange(b, device=p.device)[:, None]
            giver = out.giver.reshape(b, reps, -1)[rows, best, torch.arange(p.shape[-1], device=p.device)]  # [B, L]
            regions = out.regions.reshape(b, reps, -1, 4)[rows, best, giver]  # [B, L, 4]
            boxes.append(regions.cpu())
    label_boxes = torch.cat(boxes).numpy() if boxes else None
    return SplitPrediction(torch.cat(probs).numpy(), torch.cat(rewards).numpy(), label_boxes)


def finetune_global(
    train_store: FeatureStore, config: TrainConfig, tail_name: str, device: Any
) -> tuple[torch.nn.Module, RegionScorer]:
    """The global-image linear classifier with the same fine-tuning as the agent: the tail of
    ``tail_name`` and a linear layer on the mean of its map over a random crop (+ flip) of the
    image, trained together by BCE with the agent's epochs, batch size and learning rates."""
    generator = torch.Generator().manual_seed(config.seed)
    tail = build_tail(tail_name).to(device).to(memory_format=torch.channels_last)
    scorer = seeded_scorer(TAILS[tail_name][0], len(train_store.classes), config.seed).to(device)
    groups: list[dict[str, Any]] = [{"params": scorer.parameters()}, {"params": tail.parameters(), "lr": config.finetune_lr}]
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    tail.eval()  # frozen batch-norm statistics, as the agent's tail
    for _ in range(config.epochs):
        for feats, labels, _ in feature_batches(train_store, config.batch_size, generator, device):
            maps = tail(feats.contiguous(memory_format=torch.channels_last)).contiguous()
            windows, _ = random_views(
                maps.shape[0], config.augment_crop, generator=generator, device=device
            )  # a flip leaves the mean as it is
            loss = masked_bce(scorer(crop(maps, windows[:, None], 1))[:, 0], labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return tail.requires_grad_(False), scorer.eval().requires_grad_(False)


def split_objects(settings: EnvSettings, split: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The ground-truth boxes of ``split`` for the grounding columns (:func:`rarl_gym.data.object_boxes`;
    ``None`` where the dataset has none)."""
    return object_boxes(settings.source.make_dataset(split))


def rarl_rows(agent: RARLAgent) -> tuple[str, ...]:
    """The centre policies of :data:`RARL_ROWS` this agent can be evaluated with."""
    return tuple(r for r in RARL_ROWS if r != "peak" or agent.head == "linear")


def evaluate_agent(
    agent: RARLAgent,
    store: FeatureStore,
    settings: EnvSettings,
    config: TrainConfig,
    *,
    device: Any,
    train_store: FeatureStore | None = None,
    objects: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    samples: int | None = None,
) -> dict:
    """The comparison table on ``store``.

    Rows: the learned policy and the same model with random, fixed (image middle), fixed-grid and
    peak centres (:data:`RARL_ROWS`), one sequence each; with ``samples`` M > 1 (default
    ``config.eval_samples``) also ``learned xM`` and ``random xM``, the equal-budget ensembles of M
    sequences; the oracle (best of ``config.oracle_samples``, uses the labels); and, given
    ``train_store``, the rivals fitted on the training split's features: the global-image linear
    classifier, CSRA and the windows baseline. Each row is a metrics dict
    (:meth:`rarl_gym.metrics.MetricReport.to_dict`, ``reward``) plus, given ``objects`` (the split's
    boxes, :func:`rarl_gym.data.object_boxes`), ``pointing`` and ``corloc`` for the rows with regions.

    Returns a JSON-ready dict (``split``, ``views``, ``samples``, ``grounding_pairs``, ``policies``)
    plus ``reports``: the :class:`rarl_gym.metrics.MetricReport` objects.
    """
    samples = config.eval_samples if samples is None else samples
    views = config.eval_views
    table = ComparisonTable(store.labels, store.classes, objects)
    runs = [(c, 1) for c in rarl_rows(agent)] + ([(c, samples) for c in ENSEMBLE_ROWS] if samples > 1 else [])
    for centers, m in runs:
        pred = predict(
            agent, store, settings, centers=centers, views=views, samples=m, view_crop=config.augment_crop, device=device
        )
        boxes = pred.label_boxes
        if boxes is None and objects is not None:  # ten views: the grounding of the whole-image view
            boxes = predict(agent, store, settings, centers=centers, samples=m, device=device).label_boxes
        table.add(centers if m == 1 else f"{centers} x{m}", pred.probs, reward=float(pred.rewards.mean()), label_boxes=boxes)
    if config.oracle_samples > 0:
        table.add("oracle", oracle(agent, store, settings, samples=config.oracle_samples, device=device, seed=config.seed)[0])
    if train_store is not None:
        if agent.tail is not None:  # the same fine-tuning for the global classifier, so the rows stay comparable
            assert agent.tail_name is not None
            tail, scorer = finetune_global(train_store, config, agent.tail_name, device)
            table.add("global", predict_global(scorer, store, views=views, crop=config.augment_crop, tail=tail))
        else:
            scorer = fit_global_classifier(
                pooled_features(train_store), torch.from_numpy(train_store.labels), seed=config.seed
            )
            table.add("global", predict_global(scorer, store, views=views, crop=config.augment_crop))
            csra = fit_csra(train_store, seed=config.seed)
            table.add("csra", predict_csra(csra, store, views=views, view_crop=config.augment_crop))
        windows = fit_windows_classifier(train_store, seed=config.seed, device=device)
        table.add("windows", predict_windows(windows, store, views=views, crop=config.augment_crop))
    return table.results(store.meta["key"]["split"], views, samples=samples)


__all__ = [
    "ENSEMBLE_ROWS",
    "RARL_ROWS",
    "SplitPrediction",
    "evaluate_agent",
    "feature_batches",
    "finetune_global",
    "predict",
    "rarl_rows",
    "split_objects",
    "view_batch",
]

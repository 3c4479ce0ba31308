"""A linear region scorer: region features -> label logits.

It serves two purposes:

* the env's own classifier in ``mode="locate"``: fitted once on the training split's region
  features (multiple-instance style: the category-wise max over random glimpse regions of an
  image is trained against the image's labels), saved beside the feature cache, so that any RL
  algorithm can learn where to look without a classifier of its own. It is cross-fitted
  (:class:`CrossFitScorer`): a training image is scored by a scorer that never saw it, so the
  rewards on the training split are as honest as on a held-out one;
* with ``regions_per_image=0`` (the whole image only) it is the global-image linear classifier
  baseline on the same frozen backbone (the CNN-SVM / VeryDeep analogue).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rarl_gym.errors import CorruptFileError
from rarl_gym.glimpse import (
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    anchor_boxes,
    crop_weights,
    fuse,
    ten_views,
    whole_image_boxes,
)
from rarl_gym.glimpse import crop as crop_regions
from rarl_gym.io import atomic_torch_save

if TYPE_CHECKING:
    from rarl_gym.features.store import FeatureStore


class RegionScorer(nn.Module):
    """Label logits of glimpse regions: mean over the ``s x s`` cells, then one linear layer."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, glimpses: torch.Tensor) -> torch.Tensor:
        """``[..., C, s, s]`` -> ``[..., L]``."""
        return self.linear(glimpses.mean(dim=(-2, -1)))

    def logit_maps(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, L, H, W]``: the linear layer on every map cell, bias excluded.

        The crop is linear in the map, so cropping these ``L`` channels gives the scores of any
        region (:meth:`score_regions`) at ``L / C`` of the cost of cropping the features.
        """
        return F.conv2d(feature_maps, self.linear.weight[:, :, None, None])

    def score_means(self, means: torch.Tensor, folds: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K, C]`` region means (over the ``s x s`` bins) -> ``[B, K, L]`` logits (``folds`` unused)."""
        return self.linear(means)

    def score_regions(self, logit_maps: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """``[B, K, L]`` scores of the regions ``boxes [B, K, 4]`` cropped at ``size x size``:
        equal to ``self(crop(feature_maps, boxes, size))``.

        The mean over the ``s x s`` bins of a crop weighs map cell ``(y, x)`` by
        ``sum_i wy[i, y] * sum_j wx[j, x] / s^2`` (:func:`rarl_gym.glimpse.crop_weights`), so the
        scores are one small contraction of the logit maps.
        """
        b, _, h, w = logit_maps.shape
        wy, wx = crop_weights(boxes, h, w, size)
        cells = torch.einsum("bky,bkx->bkyx", wy.sum(2), wx.sum(2)).reshape(b, -1, h * w) / (size * size)  # [B,K,HW]
        return torch.bmm(cells, logit_maps.reshape(b, -1, h * w).transpose(1, 2)) + self.linear.bias


def seeded_scorer(channels: int, num_classes: int, seed: int) -> RegionScorer:
    """A :class:`RegionScorer` initialised from ``seed`` alone (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RegionScorer(channels, num_classes)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy ``[B, L]`` against labels 1 / 0, difficult (-1) entries ignored."""
    mask = (labels >= 0).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).to(logits.dtype), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def training_regions(
    batch: int,
    regions_per_image: int,
    scales: Sequence[float],
    ratios: Sequence[float],
    generator: torch.Generator | None,
    device: torch.device | str,
) -> torch.Tensor:
    """``[B, 1 + n*K, 4]``: the whole image plus the anchors of ``n`` uniform random centres."""
    whole = whole_image_boxes(batch, 1, device=device)
    if regions_per_image == 0:
        return whole
    centres = torch.rand(batch * regions_per_image, 2, generator=generator, device=device) * 2 - 1
    boxes = anchor_boxes(centres, scales, ratios).reshape(batch, -1, 4)
    return torch.cat([whole, boxes], dim=1)


class CrossFitScorer(nn.Module):
    """F region scorers, scorer ``f`` fitted on the training images whose index ``i % F != f``.

    A training image ``i`` is scored out of fold, by scorer ``i % F``, which never saw it: the
    reward of a training episode then measures how well the glimpses generalise, as on a
    held-out split, instead of how well a scorer fitted on the same image remembers it (on VOC07
    the in-sample scorer gave training rewards of 0.96 against 0.85 on val, leaving an RL
    algorithm almost nothing to learn from). Other images (``folds=None``) get the mean of the
    F scorers' logits.
    """

    def __init__(self, scorers: Sequence[RegionScorer]):
        super().__init__()
        self.scorers = nn.ModuleList(scorers)

    @property
    def folds(self) -> int:
        return len(self.scorers)

    def score_means(self, means: torch.Tensor, folds: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K, C]`` region means -> ``[B, K, L]`` logits: image ``b`` by scorer ``folds[b]``, or the mean of all."""
        scorers = cast(Sequence[RegionScorer], self.scorers)  # the ModuleList of __init__'s RegionScorers
        weight = torch.cat([s.linear.weight for s in scorers])  # [F*L, C]: one product for all folds
        bias = torch.cat([s.linear.bias for s in scorers])
        logits = F.linear(means, weight, bias).unflatten(-1, (self.folds, -1))  # [B, K, F, L]
        if folds is None:
            return logits.mean(2)
        b = torch.arange(means.shape[0], device=means.device)
        return logits[b, :, folds.long()]  # [B, K, L]

    def forward(self, glimpses: torch.Tensor, folds: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K, C, s, s]`` -> ``[B, K, L]``."""
        return self.score_means(glimpses.mean(dim=(-2, -1)), folds)


def fit_cross_fitted_scorer(store: FeatureStore, *, folds: int = 2, seed: int = 0, **fit: Any) -> CrossFitScorer:
    """A :class:`CrossFitScorer`: :func:`fit_region_scorer` on each of the ``folds`` complements."""
    index = np.arange(len(store))
    return CrossFitScorer(
        [fit_region_scorer(store, images=index[index % folds != f], seed=seed + f, **fit) for f in range(folds)]
    )


def fit_region_scorer(
    store: FeatureStore,
    *,
    images: np.ndarray | None = None,
    regions_per_image: int = 2,
    scales: Sequence[float] = DEFAULT_SCALES,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    boxes: torch.Tensor | None = None,
) -> RegionScorer:
    """Fit a :class:`RegionScorer` by category-wise max over regions (multiple-instance learning).

    Args:
        store: the training split's :class:`rarl_gym.features.store.FeatureStore` (read batch
            by batch, so a split larger than memory works).
        images: fit on these image indices only (default: all).
        regions_per_image: random glimpse centres per image and epoch (each gives K anchors),
            besides the whole image.
        progress: show a progress bar over the epochs.
        boxes: ``[R, 4]`` fixed regions for every image instead of the whole image and random
            glimpses (the windows baseline, :mod:`rarl_gym.windows`).

    The scorer and the crop are linear, so the regions are scored on the ``L``-channel logit maps
    (``1 x 1`` convolution of the features, :meth:`RegionScorer.score_regions`) instead of
    cropping the ``C``-channel features: the same logits at ``L / C`` of the cost.
    """
    generator = torch.Generator().manual_seed(seed)
    scorer = seeded_scorer(store.channels, len(store.classes), seed).to(device)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    rows = torch.arange(len(store)) if images is None else torch.as_tensor(np.asarray(images), dtype=torch.long)
    for _ in tqdm(range(epochs), desc="fit the env's region scorer", unit="epoch", disable=not progress, leave=False):
        for idx in rows[torch.randperm(len(rows), generator=generator)].split(batch_size):
            feats, labels = store.batch(np.sort(idx.numpy()), device)
            if boxes is None:
                regions = training_regions(len(idx), regions_per_image, scales, ratios, generator, "cpu").to(device)
            else:
                regions = boxes.to(device).expand(len(idx), *boxes.shape)
            logits = fuse(scorer.score_regions(scorer.logit_maps(feats), regions, 1))  # [B,R,L] -> [B,L]
            loss = masked_bce(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return scorer.eval().requires_grad_(False)


def pooled_features(store: FeatureStore, batch_size: int = 256) -> torch.Tensor:
    """``[N, C]`` global average of every feature map of a :class:`FeatureStore` (batched reads)."""
    parts = [
        store.batch(np.arange(i, min(i + batch_size, len(store))))[0].mean(dim=(2, 3))  # checked reads (store.batch)
        for i in range(0, len(store), batch_size)
    ]
    return torch.cat(parts)


def fit_global_classifier(
    pooled: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> RegionScorer:
    """The global-image linear classifier (CNN-SVM / VeryDeep analogue): BCE on pooled features ``[N, C]``."""
    generator = torch.Generator().manual_seed(seed)
    scorer = seeded_scorer(pooled.shape[1], labels.shape[1], seed)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in torch.randperm(len(pooled), generator=generator).split(batch_size):
            loss = masked_bce(scorer.linear(pooled[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return scorer.eval().requires_grad_(False)


@torch.no_grad()
def predict_global(
    scorer: RegionScorer,
    store: FeatureStore,
    *,
    views: int = 1,
    crop: float = 0.875,
    batch_size: int = 256,
    tail: torch.nn.Module | None = None,
) -> np.ndarray:
    """Probabilities ``[N, L]`` of the global-image linear classifier (:func:`fit_global_classifier`,
    sigmoid) on every image of ``store``, over 1 or 10 views (:func:`rarl_gym.glimpse.ten_views`)
    (``tail``: the fine-tuned layers applied to the cached maps ``[B, C, H, W]`` first)."""
    windows = whole_image_boxes(1, 1)[0] if views == 1 else ten_views(crop)[0]  # [V,4]
    probs = []
    for lo in range(0, len(store), batch_size):
        feats, _ = store.batch(np.arange(lo, min(lo + batch_size, len(store))))
        if tail is not None:
            feats = tail(feats.contiguous(memory_format=torch.channels_last)).contiguous()
        boxes = windows.expand(feats.shape[0], *windows.shape)
        probs.append(torch.sigmoid(scorer(crop_regions(feats, boxes, 1))).mean(1))
    return torch.cat(probs).numpy()


def scorer_checksum(states: Sequence[dict[str, torch.Tensor]], cross_fit: bool, meta: dict) -> str:
    """SHA-256 over a scorer's tensors (names, dtypes, shapes, bytes), its kind and its metadata:
    what :func:`save_scorer` writes beside them and :func:`load_scorer` checks."""
    h = hashlib.sha256(f"cross_fit={bool(cross_fit)}\n{json.dumps(meta, sort_keys=True, default=repr)}\n".encode())
    for state in states:
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_scorer(scorer: RegionScorer | CrossFitScorer, path: str | Path, meta: dict) -> None:
    """Write a scorer (one, or the F of a :class:`CrossFitScorer`) atomically (:func:`rarl_gym.io.atomic_torch_save`),
    with the SHA-256 of what it holds (:func:`scorer_checksum`), which :func:`load_scorer` checks."""
    parts = list(scorer.scorers) if isinstance(scorer, CrossFitScorer) else [scorer]
    states = [p.state_dict() for p in parts]
    cross_fit = isinstance(scorer, CrossFitScorer)
    blob = {"scorers": states, "cross_fit": cross_fit, "meta": meta, "sha256": scorer_checksum(states, cross_fit, meta)}
    atomic_torch_save(blob, path, what="region scorer")


def load_scorer(
    path: str | Path, *, channels: int | None = None, num_classes: int | None = None
) -> tuple[RegionScorer | CrossFitScorer, dict]:
    """The scorer :func:`save_scorer` wrote (files of an earlier version hold one ``state_dict``) and its
    metadata; :func:`read_scorer` with the same checks."""
    scorer, meta, _ = read_scorer(path, channels=channels, num_classes=num_classes)
    return scorer, meta


def read_scorer(
    path: str | Path, *, channels: int | None = None, num_classes: int | None = None
) -> tuple[RegionScorer | CrossFitScorer, dict, str | None]:
    """The scorer :func:`save_scorer` wrote, its metadata and the SHA-256 it was verified against
    (``None`` for a file written before checksums existed: it cannot be verified).

    Args:
        channels, num_classes: when given, the feature channels and classes the scorer must fit
            (those of the feature cache it scores).

    Raises:
        CorruptFileError: the file is truncated, damaged (its tensors do not match the checksum
            written with them), not a scorer, or of other shapes than ``channels`` / ``num_classes``
            (the message names it and the fix).
    """
    fix = f"delete {path}; the env fits it again"
    if Path(path).is_dir():
        raise CorruptFileError(
            f"the region scorer {path} is a folder, not a file",
            f"remove the folder {path}; the env then fits the scorer again",
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        states = blob["scorers"] if "scorers" in blob else [blob["state_dict"]]
        digest = blob.get("sha256")
        if digest is not None and digest != scorer_checksum(states, bool(blob.get("cross_fit")), blob["meta"]):
            raise ValueError("its weights differ from the SHA-256 written with them")
        parts = []
        for state in states:
            weight = state["linear.weight"]
            if weight.ndim != 2:
                raise ValueError(f"linear.weight has shape {tuple(weight.shape)}, not [classes, channels]")
            part = RegionScorer(weight.shape[1], weight.shape[0])
            part.load_state_dict(state)
            parts.append(part.eval().requires_grad_(False))
        if len({tuple(p.linear.weight.shape) for p in parts}) != 1:
            raise ValueError("its folds have different shapes")
        scorer = CrossFitScorer(parts).eval() if blob.get("cross_fit") else parts[0]
        meta = blob["meta"]
        if not isinstance(meta, dict):
            raise TypeError(f"its metadata is a {type(meta).__name__}")
    except Exception as err:  # unpickling, zip, key and shape errors all mean a damaged file
        raise CorruptFileError(f"the region scorer {path} is damaged ({type(err).__name__}: {err})", fix) from err
    got_classes, got_channels = parts[0].linear.weight.shape
    if (channels is not None and got_channels != channels) or (num_classes is not None and got_classes != num_classes):
        raise CorruptFileError(
            f"the region scorer {path} scores {got_channels} feature channels x {got_classes} classes, the feature "
            f"cache it belongs to has {channels} channels x {num_classes} classes (a scorer of another cache)",
            fix,
        )
    return scorer, meta, digest


__all__ = [
    "CrossFitScorer",
    "RegionScorer",
    "fit_cross_fitted_scorer",
    "fit_global_classifier",
    "fit_region_scorer",
    "load_scorer",
    "masked_bce",
    "pooled_features",
    "predict_global",
    "read_scorer",
    "save_scorer",
    "scorer_checksum",
    "training_regions",
]

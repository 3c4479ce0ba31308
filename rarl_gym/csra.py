"""The CSRA baseline: class-specific residual attention on the frozen maps (Zhu and Wu, ICCV 2021).

One linear 1 x 1 head on every cell of the feature map; an image's logit for class c is the mean
of its cell logits plus ``lambda`` times their max (the one-head form of CSRA's residual attention,
the max being its ``T -> infinity`` limit). It looks at the whole image once, everywhere at once:
the label-free rival a user would pick instead of a glimpse policy. ``lambda`` is chosen by 2-fold
cross-validation on the *training* split (:func:`fit_csra`), never on the split it is reported on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from rarl_gym.glimpse import crop, ten_views, whole_image_boxes
from rarl_gym.metrics import mean_average_precision
from rarl_gym.scorer import masked_bce

if TYPE_CHECKING:
    from rarl_gym.features.store import FeatureStore

#: The values of ``lambda`` :func:`fit_csra` chooses from (CSRA's paper uses 0.1 to 1).
CSRA_LAMBDAS: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)


#: Training maps up to this size are held in memory (float16) for the fits; larger splits are read per batch.
PRELOAD_BYTES = 2 << 30


class CSRAHead(nn.Module):
    """``[B, C, H, W] -> [B, L]``: mean over the cells of a linear head's logits + ``lam`` * their max."""

    def __init__(self, channels: int, num_classes: int, lam: float):
        super().__init__()
        self.head = nn.Linear(channels, num_classes)
        self.lam = float(lam)

    def forward(self, feature_maps: torch.Tensor) -> torch.Tensor:
        return self.from_cells(feature_maps.flatten(2).transpose(1, 2))

    def from_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """``[B, H*W, C]`` cell features -> ``[B, L]``."""
        logits = self.head(cells)  # [B, H*W, L]
        return logits.mean(1) + self.lam * logits.amax(1)


class _Cells:
    """The training split's maps as cells ``[B, H*W, C]``: in memory (float16) when they fit
    :data:`PRELOAD_BYTES`, else read from the cache per batch."""

    def __init__(self, store: FeatureStore):
        self.store = store
        n = len(store)
        size = n * store.channels * int(np.prod(store.map_size)) * 2
        self.held: torch.Tensor | None = None
        if size <= PRELOAD_BYTES:
            parts = [self._read(np.arange(i, min(i + 256, n))).half() for i in range(0, n, 256)]
            self.held = torch.cat(parts)
        self.labels = torch.from_numpy(np.asarray(store.labels))

    def _read(self, index: np.ndarray) -> torch.Tensor:
        return self.store.batch(index)[0].flatten(2).transpose(1, 2)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        cells = self.held[index].float() if self.held is not None else self._read(np.sort(index))
        labels = self.labels[index] if self.held is not None else self.labels[np.sort(index)]
        return cells, labels


def _fit(cells: _Cells, index: np.ndarray, lam: float, *, epochs: int, lr: float, batch_size: int, seed: int) -> CSRAHead:
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CSRAHead(cells.store.channels, len(cells.store.classes), lam)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        order = index[torch.randperm(len(index), generator=generator).numpy()]
        for lo in range(0, len(order), batch_size):
            x, labels = cells.batch(order[lo : lo + batch_size])
            loss = masked_bce(model.from_cells(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def fit_csra(
    store: FeatureStore,
    *,
    lambdas: Sequence[float] = CSRA_LAMBDAS,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> CSRAHead:
    """The CSRA head of the training split ``store``: ``lambda`` from ``lambdas`` by 2-fold
    cross-validation (mAP on the other half of the training images), then refitted on all of them."""
    cells = _Cells(store)
    index = np.arange(len(store))
    halves = [index[index % 2 == 0], index[index % 2 == 1]]
    best, best_map = lambdas[0], -1.0
    if len(lambdas) > 1:
        for lam in lambdas:
            scores = []
            for f in range(2):
                model = _fit(cells, halves[1 - f], lam, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
                scores.append(mean_average_precision(_predict_cells(model, cells, halves[f]), store.labels[halves[f]]))
            if float(np.mean(scores)) > best_map:
                best, best_map = lam, float(np.mean(scores))
    return _fit(cells, index, best, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)


@torch.no_grad()
def _predict_cells(model: CSRAHead, cells: _Cells, index: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities ``[len(index), L]`` of training images (one view), from the cells :func:`fit_csra` holds."""
    parts = [
        torch.sigmoid(model.from_cells(cells.batch(index[lo : lo + batch_size])[0])) for lo in range(0, len(index), batch_size)
    ]
    return torch.cat(parts).numpy()


@torch.no_grad()
def predict_csra(
    model: CSRAHead,
    store: FeatureStore,
    *,
    views: int = 1,
    view_crop: float = 0.875,
    index: np.ndarray | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Probabilities ``[N, L]`` (sigmoid) of the images ``index`` (default all) of ``store``, mean
    over 1 or 10 views (each view's map resampled at the map's resolution)."""
    index = np.arange(len(store)) if index is None else index
    windows, flips = (whole_image_boxes(1, 1)[0], torch.zeros(1, dtype=torch.bool)) if views == 1 else ten_views(view_crop)
    probs = []
    for lo in range(0, len(index), batch_size):
        feats, _ = store.batch(index[lo : lo + batch_size])
        b, _, h, _ = feats.shape
        if views == 1:
            maps = feats[:, None]
        else:
            maps = crop(feats, windows.expand(b, -1, 4), h)  # [B, V, C, h, h]
            maps = torch.where(flips[None, :, None, None, None], maps.flip(-1), maps)
        logits = model(maps.flatten(0, 1)).view(b, maps.shape[1], -1)
        probs.append(torch.sigmoid(logits).mean(1))
    return torch.cat(probs).numpy()


__all__ = ["CSRA_LAMBDAS", "PRELOAD_BYTES", "CSRAHead", "fit_csra", "predict_csra"]

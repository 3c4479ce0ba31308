"""The windows baseline: category-wise max over many fixed multi-scale windows (HCP-style).

Hypotheses-CNN-Pooling (Wei et al. 2016) scores hundreds of proposals per image and fuses them
by category-wise max. Its analogue on our frozen feature maps: about a hundred sliding windows
at several scales and aspect ratios (plus the whole image), each scored by one linear classifier
on its mean feature, fused by category-wise max, the classifier fitted by multiple-instance
learning (:func:`rarl_gym.scorer.fit_region_scorer` with fixed regions). It is the "look
everywhere" upper end that a learned attention policy with T x K regions has to beat.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rarl_gym.glimpse import fuse, ten_views, view_to_image, whole_image_boxes
from rarl_gym.scorer import RegionScorer, fit_region_scorer

if TYPE_CHECKING:
    from rarl_gym.features.store import FeatureStore

#: ``(width, height, columns, rows)`` of each window family, sides as fractions of the image.
WINDOW_FAMILIES: tuple[tuple[float, float, int, int], ...] = (
    (0.3, 0.3, 6, 6),
    (0.5, 0.5, 5, 5),
    (0.7, 0.7, 4, 4),
    (0.8, 0.4, 3, 4),
    (0.4, 0.8, 4, 3),
)


def sliding_windows(
    families: Iterable[tuple[float, float, int, int]] = WINDOW_FAMILIES, *, whole_image: bool = True
) -> torch.Tensor:
    """``[R, 4]`` windows ``(x0, y0, x1, y1)`` in ``[-1, 1]`` image coordinates: per family a
    ``columns x rows`` grid of ``width x height`` windows spanning the image (the default: 101
    windows, plus the whole image first)."""
    boxes = [torch.tensor([[-1.0, -1.0, 1.0, 1.0]])] if whole_image else []
    for w, h, nx, ny in families:
        x0 = torch.linspace(-1.0, 1.0 - 2 * w, nx)
        y0 = torch.linspace(-1.0, 1.0 - 2 * h, ny)
        yy, xx = torch.meshgrid(y0, x0, indexing="ij")
        boxes.append(torch.stack([xx.flatten(), yy.flatten(), xx.flatten() + 2 * w, yy.flatten() + 2 * h], dim=1))
    return torch.cat(boxes)


def fit_windows_classifier(
    store: FeatureStore, *, windows: torch.Tensor | None = None, seed: int = 0, **fit: Any
) -> RegionScorer:
    """The baseline's linear classifier, fitted by category-wise max over ``windows`` (MIL)."""
    return fit_region_scorer(store, boxes=sliding_windows() if windows is None else windows, seed=seed, **fit)


@torch.no_grad()
def predict_windows(
    scorer: RegionScorer,
    store: FeatureStore,
    *,
    windows: torch.Tensor | None = None,
    views: int = 1,
    crop: float = 0.875,
    batch_size: int = 128,
) -> np.ndarray:
    """Probabilities ``[N, L]`` (sigmoid of the category-wise max over the windows), mean over 1 or 10 views."""
    windows = sliding_windows() if windows is None else windows  # [R, 4]
    if views == 1:
        view_boxes = whole_image_boxes(1, 1)[0]  # [1, 4]
        flips = torch.zeros(1, dtype=torch.bool)
    else:
        view_boxes, flips = ten_views(crop)  # [V, 4], [V]
    v, r = view_boxes.shape[0], windows.shape[0]
    # windows of every view in image coordinates: [V, R, 4] (a mirrored view mirrors its windows)
    boxes = view_to_image(windows.expand(v, r, 4), view_boxes, flips)
    probs = []
    for lo in range(0, len(store), batch_size):
        feats, _ = store.batch(np.arange(lo, min(lo + batch_size, len(store))))
        b = feats.shape[0]
        logits = scorer.score_regions(scorer.logit_maps(feats), boxes.reshape(1, v * r, 4).expand(b, -1, -1), 1)  # [B, V*R, L]
        probs.append(torch.sigmoid(fuse(logits.reshape(b, v, r, -1), dims=2)).mean(1))
    return torch.cat(probs).numpy()


__all__ = ["WINDOW_FAMILIES", "fit_windows_classifier", "predict_windows", "sliding_windows"]

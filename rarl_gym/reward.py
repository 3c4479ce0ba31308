"""The paper's delayed reward: the top-k overlap between predicted and true labels."""

from __future__ import annotations

import torch

#: ``k="adaptive"``: k is the number of true labels of each image (the paper's reading).
ADAPTIVE = "adaptive"


def topk_overlap(scores: torch.Tensor, labels: torch.Tensor, k: int | str = ADAPTIVE) -> torch.Tensor:
    """``|top-k(scores) ∩ G| / k`` per image, G the set of true labels.

    Args:
        scores: ``[B, L]`` label scores (any monotone scale: logits or probabilities).
        labels: ``[B, L]`` in ``{1, 0, -1}``: present, absent, difficult. Difficult labels are
            ignored: they are left out of the ranking, so they count neither way.
        k: ``"adaptive"`` (k = |G| of each image, at least 1) or a fixed positive int.

    Returns:
        reward: ``[B]`` float in ``[0, 1]``.
    """
    if scores.shape != labels.shape or scores.dim() != 2:
        raise ValueError(f"scores and labels must both be [B, L]; got {tuple(scores.shape)} and {tuple(labels.shape)}")
    num_classes = scores.shape[1]
    positive = labels > 0  # [B,L]
    ranked = scores.masked_fill(labels < 0, float("-inf"))
    order = ranked.argsort(dim=1, descending=True, stable=True)  # [B,L]
    hits = positive.gather(1, order).to(scores.dtype)  # [B,L] 1 where the r-th ranked label is true
    if k == ADAPTIVE:
        kk = positive.sum(1).clamp(min=1)  # [B]
    elif isinstance(k, int) and not isinstance(k, bool) and k >= 1:
        kk = torch.full((scores.shape[0],), min(k, num_classes), device=scores.device, dtype=torch.long)
    else:
        raise ValueError(f"k must be 'adaptive' or a positive int, got {k!r}")
    rank = torch.arange(num_classes, device=scores.device)[None, :]  # [1,L]
    in_topk = (rank < kk[:, None]).to(scores.dtype)
    return (hits * in_topk).sum(1) / kk.to(scores.dtype)


__all__ = ["ADAPTIVE", "topk_overlap"]

"""The hybrid objective of the RARL agent: classification loss + REINFORCE with a baseline.

REINFORCE's return ``R`` is :data:`RETURNS`: the paper's top-k overlap or the log-likelihood of
the true labels; with cross-fitted heads it is computed from the scores of the head that never
saw the image (see :class:`agents.rarl.model.RARLAgent`, ``folds``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.rarl.rollout import Rollout
from rarl_gym.reward import ADAPTIVE, topk_overlap


def classification_loss(fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's loss: softmax cross-entropy against the label vector normalised to sum 1.

    Difficult labels (-1) are left out of the softmax. ``[B, L]`` -> scalar.
    """
    return -label_log_likelihood(fused, labels, "softmax").mean()


def label_log_likelihood(fused: torch.Tensor, labels: torch.Tensor, output: str) -> torch.Tensor:
    """Per image ``[B]``: how likely the true labels are under fused scores ``[B, L]``.

    ``"softmax"``: ``sum_l target_l log softmax(fused)_l`` with the label vector normalised to sum
    1 (the paper's loss, negated); ``"sigmoid"``: the mean over classes of ``log sigmoid(+-fused)``
    (binary cross-entropy, negated). Difficult labels (-1) count neither way.
    """
    if output == "sigmoid":
        mask = (labels >= 0).to(fused.dtype)
        ll = -F.binary_cross_entropy_with_logits(fused, labels.clamp(min=0).to(fused.dtype), reduction="none")
        return (ll * mask).sum(1) / mask.sum(1).clamp(min=1)
    logits = fused.masked_fill(labels < 0, float("-inf"))
    positive = (labels > 0).to(fused.dtype)
    target = positive / positive.sum(1, keepdim=True).clamp(min=1)
    log_p = torch.log_softmax(logits, dim=1).masked_fill(labels < 0, 0.0)
    return (target * log_p).sum(1)


#: What REINFORCE maximises (``TrainConfig.rl_return``): the paper's top-k overlap, or the log-likelihood of the true labels
#: under the fused scores (dense: every change of a score counts, not only changes of the top k).
RETURNS = ("topk", "likelihood")


def rarl_loss(
    out: Rollout,
    labels: torch.Tensor,
    *,
    rl_weight: float = 1.0,
    output: str = "softmax",
    rl_return: str = "topk",
    fold_of: torch.Tensor | None = None,
    samples: int = 1,
    k: int | str = ADAPTIVE,
) -> dict[str, torch.Tensor]:
    """Hybrid objective: classification + REINFORCE with a baseline (+ baseline regression).

    The REINFORCE term sums ``-(R - b) log pi(l_t)`` over time and averages over the batch.

    Args:
        output: the classification loss, ``"softmax"`` (the paper's) or ``"sigmoid"`` (BCE).
        rl_return: what ``R`` is (:data:`RETURNS`).
        fold_of: ``[B]`` the fold of each image (``index % F``) when the agent has F cross-fitted
            reward heads: head ``f`` learns from the images of the other folds, and ``R`` is
            computed from the scores of the head that never saw the image (``out.fold_fused``).
        samples: the batch holds ``samples`` consecutive episodes of each image; with more
            than one, ``b`` is the mean return of the image's other episodes (leave-one-out),
            otherwise the learned baseline ``out.baseline``.
    """
    cls = -label_log_likelihood(out.fused, labels, output).mean()
    scores = out.fused
    if out.fold_fused is not None and fold_of is not None:
        f = out.fold_fused.shape[1]
        own = fold_of[:, None] == torch.arange(f, device=fold_of.device)  # [B, F]: head f must not see fold f
        per_head = -label_log_likelihood(out.fold_fused.flatten(0, 1), labels.repeat_interleave(f, 0), output).view(-1, f)
        cls = cls + (per_head * ~own).sum() / (~own).sum().clamp(min=1)
        scores = out.fold_fused[torch.arange(len(fold_of), device=fold_of.device), fold_of]  # [B, L] out of fold
    scores = scores.detach()
    ret = topk_overlap(scores, labels, k) if rl_return == "topk" else label_log_likelihood(scores, labels, output)  # [B]
    if samples > 1:
        grouped = ret.view(-1, samples)
        base = ((grouped.sum(1, keepdim=True) - grouped) / (samples - 1)).reshape(-1)[:, None]  # [B, 1]
    else:
        base = out.baseline
    advantage = (ret[:, None] - base).detach()  # [B,T]
    reinforce = -(advantage * out.log_prob).sum(1).mean()
    baseline = ((ret[:, None] - out.baseline) ** 2).mean()
    return {
        "loss": cls + rl_weight * (reinforce + baseline),
        "cls": cls,
        "reinforce": reinforce,
        "baseline": baseline,
        "return": ret.mean(),
    }


__all__ = ["RETURNS", "classification_loss", "label_log_likelihood", "rarl_loss"]

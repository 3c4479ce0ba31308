"""Batched RARL episodes on feature maps, and the paper's hybrid loss.

The trainer runs episodes directly on the functional core (:mod:`rarl_gym.glimpse`,
:mod:`rarl_gym.reward`) rather than through ``gym.Env.step``: the same functions, but B images
per tensor operation and differentiable end to end (the classification loss reaches a fine-tuned
backbone through the bilinear crop). ``tests/test_rarl.py`` checks that an agent rolled out here
and through ``GlimpseEnv`` in ``mode="joint"`` gets the same scores and reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.rarl.model import RARLAgent
from rarl_gym.glimpse import FIXED_GRID, DEFAULT_RATIOS, DEFAULT_SCALES, anchor_boxes, crop, fuse, view_to_image, whole_image_boxes
from rarl_gym.reward import ADAPTIVE, topk_overlap

#: Where the centres come from: the agent's policy, uniform random, the image middle, or a fixed
#: grid (:data:`rarl_gym.glimpse.FIXED_GRID`).
CENTER_POLICIES = ("learned", "random", "center", "grid")


@dataclass
class Rollout:
    fused: torch.Tensor  # [B, L] category-wise max of the region scores of steps 1..T
    reward: torch.Tensor  # [B] top-k overlap of `fused`
    log_prob: torch.Tensor  # [B, T] log-probability of each sampled centre (0 if not sampled)
    baseline: torch.Tensor  # [B, T] baseline predicted when each centre was chosen
    centers: torch.Tensor  # [B, T, 2] the centres l_1..l_T


def rollout(
    agent: RARLAgent,
    feature_maps: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_steps: int = 5,
    glimpse_size: int = 1,
    scales=DEFAULT_SCALES,
    ratios=DEFAULT_RATIOS,
    k: int | str = ADAPTIVE,
    centers: str = "learned",
    sample: bool = True,
    generator: torch.Generator | None = None,
    view: tuple[torch.Tensor, torch.Tensor] | None = None,
    explore: float = 0.0,
    fuse_whole_image: bool = False,
) -> Rollout:
    """Run B episodes of ``num_steps`` glimpses.

    Args:
        feature_maps: ``[B, C, H, W]``; labels: ``[B, L]`` (1 / 0 / -1).
        centers: ``"learned"`` (the agent's Gaussian policy), ``"random"`` (uniform in [-1, 1]^2),
            ``"center"`` (always the image middle) or ``"grid"`` (:data:`FIXED_GRID`, a fixed
            set of windows); the agent classifies in every case.
        sample: draw centres from the Gaussian (training); ``False`` takes its mean (test).
        view: ``(windows [B, 4], flips [B])``: each episode sees only that (mirrored) window of
            its image (augmentation, ten-view test; :func:`rarl_gym.glimpse.random_views`).
            Centres and boxes are then in the view's coordinates.
        explore: with ``centers="learned"``, the fraction of episodes whose centres are drawn
            uniformly instead (their log-probabilities are zero, so REINFORCE ignores them).
            The classifier then learns regions everywhere, not only where the current policy
            looks, so that looking elsewhere is not punished by an untrained classifier.
        fuse_whole_image: fuse the scores of step 0 (the whole image) with those of steps 1..T.
    """
    b = feature_maps.shape[0]
    device = feature_maps.device
    k_regions = len(scales) * len(ratios)
    maps = agent.project(feature_maps)  # crop P channels instead of C (see RARLAgent.project)
    windows = None
    if view is not None:
        maps, windows = _mirror(maps, *view)
    state = agent.initial_state(b, device)
    boxes = whole_image_boxes(b, k_regions, device=device)
    region_scores, log_probs, baselines, chosen = [], [], [], []
    explorer = None
    if explore > 0 and centers == "learned" and sample:
        explorer = torch.rand(b, generator=generator, device=device) < explore  # [B]
    for t in range(num_steps + 1):
        image_boxes = boxes if windows is None else view_to_image(boxes, windows)
        out = agent(crop(maps, image_boxes, glimpse_size), state, projected=True)
        state = out.state
        if t >= 1 or fuse_whole_image:
            region_scores.append(out.scores)
        if t == num_steps:
            break
        if centers == "learned":
            mean = agent.center_mean(out.loc_mean, t)
            if sample:
                noise = torch.randn(mean.shape, generator=generator, device=device)
                loc = (mean + agent.sigma * noise).detach()  # REINFORCE: no gradient through the sample
                dist = torch.distributions.Normal(mean, agent.sigma)
                log_prob = dist.log_prob(loc).sum(-1)
                if explorer is not None:
                    uniform = torch.rand(b, 2, generator=generator, device=device) * 2 - 1
                    loc = torch.where(explorer[:, None], uniform, loc)
                    log_prob = log_prob.masked_fill(explorer, 0.0)
                log_probs.append(log_prob)
            else:
                loc = mean.detach()
                log_probs.append(torch.zeros(b, device=device))
            loc = loc.clamp(-1.0, 1.0)
        elif centers == "random":
            loc = torch.rand(b, 2, generator=generator, device=device) * 2 - 1
            log_probs.append(torch.zeros(b, device=device))
        elif centers in ("center", "grid"):
            xy = (0.0, 0.0) if centers == "center" else FIXED_GRID[t % len(FIXED_GRID)]
            loc = torch.tensor(xy, device=device).expand(b, 2)
            log_probs.append(torch.zeros(b, device=device))
        else:
            raise ValueError(f"centers must be one of {CENTER_POLICIES}, got {centers!r}")
        baselines.append(out.baseline)
        chosen.append(loc)
        boxes = anchor_boxes(loc, scales, ratios)
    fused = fuse(torch.stack(region_scores, dim=1), dims=(1, 2))  # [B,T(+1),K,L] -> [B,L]
    return Rollout(
        fused=fused,
        reward=topk_overlap(fused.detach(), labels, k),
        log_prob=torch.stack(log_probs, dim=1),
        baseline=torch.stack(baselines, dim=1),
        centers=torch.stack(chosen, dim=1),
    )


class RolloutModule(torch.nn.Module):
    """A whole batch of episodes as one forward pass: what ``DistributedDataParallel`` wraps.

    ``rollout`` calls the agent several times per episode; wrapping the rollout rather than the
    agent gives DDP one forward and one backward per iteration.
    """

    def __init__(self, agent: RARLAgent):
        super().__init__()
        self.agent = agent

    def forward(self, feature_maps: torch.Tensor, labels: torch.Tensor, **kwargs) -> Rollout:
        return rollout(self.agent, feature_maps, labels, **kwargs)


def _mirror(maps: torch.Tensor, windows: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A mirrored view of a map is the un-mirrored view of the mirrored map at the mirrored window.

    Mirroring each flipped map once per batch (``[B, C, H, W]``) is cheaper than flipping every
    crop of every step. Returns the maps and the windows ``[B, 4]`` to use without flips.
    """
    f = flips[:, None]
    maps = torch.where(flips[:, None, None, None], maps.flip(-1), maps)
    mirrored = torch.stack([-windows[:, 2], windows[:, 1], -windows[:, 0], windows[:, 3]], dim=1)
    return maps, torch.where(f, mirrored, windows)


def classification_loss(fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's loss: softmax cross-entropy against the label vector normalised to sum 1.

    Difficult labels (-1) are left out of the softmax. ``[B, L]`` -> scalar.
    """
    logits = fused.masked_fill(labels < 0, float("-inf"))
    positive = (labels > 0).to(fused.dtype)
    target = positive / positive.sum(1, keepdim=True).clamp(min=1)
    log_p = torch.log_softmax(logits, dim=1).masked_fill(labels < 0, 0.0)
    return -(target * log_p).sum(1).mean()


def rarl_loss(out: Rollout, labels: torch.Tensor, *, rl_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Hybrid objective: classification + REINFORCE with a learned baseline + baseline regression.

    The REINFORCE term sums ``-(R - b_t) log pi(l_t)`` over time and averages over the batch.
    """
    advantage = (out.reward[:, None] - out.baseline).detach()  # [B,T]
    reinforce = -(advantage * out.log_prob).sum(1).mean()
    baseline = ((out.reward[:, None] - out.baseline) ** 2).mean()
    cls = classification_loss(out.fused, labels)
    return {"loss": cls + rl_weight * (reinforce + baseline), "cls": cls, "reinforce": reinforce, "baseline": baseline}


def scores_to_probs(fused: torch.Tensor) -> torch.Tensor:
    """Label probabilities of fused scores (softmax, as trained): what the metrics rank."""
    return torch.softmax(fused, dim=1)


__all__ = ["CENTER_POLICIES", "Rollout", "RolloutModule", "classification_loss", "rarl_loss", "rollout", "scores_to_probs"]

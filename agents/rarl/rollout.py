"""Batched RARL episodes on feature maps: the loop that any centre policy drives.

The trainer runs episodes directly on the functional core (:mod:`rarl_gym.glimpse`,
:mod:`rarl_gym.reward`) rather than through ``gym.Env.step``: the same functions, but B images
per tensor operation and differentiable end to end (the classification loss reaches a fine-tuned
backbone through the bilinear crop). Where the glimpses look is a centre policy of
:mod:`agents.rarl.policies`; the loss is in :mod:`agents.rarl.loss`. ``tests/test_rarl.py`` checks
that an agent rolled out here and through ``GlimpseEnv`` in ``mode="joint"`` gets the same scores
and reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agents.rarl.model import RARLAgent
from agents.rarl.policies import POLICIES, EpisodeBatch, OpenLoopPolicy, make_policy
from rarl_gym.glimpse import (
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    anchor_boxes,
    crop,
    fuse,
    view_to_image,
    whole_image_boxes,
)
from rarl_gym.reward import ADAPTIVE, topk_overlap


@dataclass
class Rollout:
    fused: torch.Tensor  # [B, L] category-wise max of the region scores of steps 1..T (and 0 if fused), + context
    reward: torch.Tensor  # [B] the env's reward: top-k overlap of `fused`
    log_prob: torch.Tensor  # [B, T] log-probability of each sampled centre (0 if not sampled)
    baseline: torch.Tensor  # [B, T] baseline predicted when each centre was chosen
    centers: torch.Tensor  # [B, T, 2] the centres l_1..l_T
    regions: torch.Tensor  # [B, R, 4] the fused regions (R = T*K, or (T+1)*K with step 0), image coordinates
    giver: torch.Tensor  # [B, L] index into `regions` of the region whose score is each class's max
    fold_fused: torch.Tensor | None = None  # [B, F, L] the same max for the F cross-fitted reward heads


def rollout(
    agent: RARLAgent,
    feature_maps: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_steps: int = 5,
    glimpse_size: int = 1,
    scales: Sequence[float] = DEFAULT_SCALES,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    k: int | str = ADAPTIVE,
    centers: str = "learned",
    sample: bool = True,
    generator: torch.Generator | None = None,
    view: tuple[torch.Tensor, torch.Tensor] | None = None,
    explore: float = 0.0,
    fuse_whole_image: bool = False,
    given_centers: torch.Tensor | None = None,
    repeat: int = 1,
    fold_of: torch.Tensor | None = None,
) -> Rollout:
    """Run B episodes of ``num_steps`` glimpses.

    Args:
        feature_maps: ``[B, C, H, W]``; labels: ``[B, L]`` (1 / 0 / -1).
        centers: the centre policy (:data:`agents.rarl.policies.POLICIES`): ``"learned"`` (the
            agent's locator), ``"random"``, ``"center"``, ``"grid"``, or ``"given"``
            (``given_centers [B, T, 2]``); the agent classifies in every case.
        sample: draw centres from the policy (training); ``False`` takes its mode (test).
        view: ``(windows [B, 4], flips [B])``: each episode sees only that (mirrored) window of
            its image (augmentation, ten-view test; :func:`rarl_gym.glimpse.random_views`).
            Centres and boxes are then in the view's coordinates.
        explore: with ``centers="learned"``, the fraction of episodes whose centres are drawn
            uniformly instead (:class:`agents.rarl.policies.Explore`).
        fuse_whole_image: fuse the scores of step 0 (the whole image) with those of steps 1..T
            (also when the agent was built with ``fuse_whole_image=True``).
        repeat: run ``repeat`` consecutive episodes of each image (the batch becomes
            ``B * repeat`` episodes; ``labels``, ``view`` and ``given_centers`` are per episode).
            The maps are projected once per image, then repeated.
        fold_of: ``[B * repeat]`` the fold of each training episode's image (``index % F``): the
            map locator then reads the scores of the cross-fitted head that never saw the image
            (the classifier's head 0 has learnt the training images, so its scores there would
            point the policy at what it remembers, not at what it sees); ``None`` (evaluation):
            head 0, and only head 0 is computed (``fold_fused`` is then ``None``).

    With the linear head and an open-loop centre policy (:class:`agents.rarl.policies.OpenLoopPolicy`:
    ``random``, ``center``, ``grid``, ``peak``, ``given``) no score depends on the LSTM: every
    centre is planned first and every step's regions are cropped in one call, from the logit maps
    alone (the same scores, centres and regions as the step loop; ``baseline`` is then 0).
    """
    device = feature_maps.device
    k_regions = len(scales) * len(ratios)
    fuse_whole_image = fuse_whole_image or agent.fuse_whole_image
    heads = 1 if fold_of is None else 1 + agent.folds  # an evaluation reads head 0 only
    planned = agent.head == "linear" and getattr(POLICIES.get(centers), "open_loop", False)
    maps, p = _glimpse_maps(agent, feature_maps, repeat, heads, project=not planned)  # [B, P (+ nL (+ nL)), H, W]
    b = maps.shape[0]
    windows = None
    if view is not None:
        maps, windows = _mirror(maps, *view)
    episodes = EpisodeBatch(
        agent=agent,
        logit_maps=maps[:, p:] if agent.head == "linear" else None,
        heads=heads,
        windows=windows,
        fold_of=fold_of,
        glimpse_size=glimpse_size,
        scales=scales,
        ratios=ratios,
        fuse_whole_image=fuse_whole_image,
        sample=sample,
        generator=generator,
        given_centers=given_centers,
        batch=b,
        device=device,
    )
    policy = make_policy(centers, episodes, explore)
    if planned:
        assert isinstance(policy, OpenLoopPolicy)  # planned: POLICIES[centers] is open-loop
        return _planned_rollout(
            agent, policy, maps, heads, windows, labels, num_steps, glimpse_size, scales, ratios, k, fuse_whole_image
        )
    state = agent.initial_state(b, device)
    boxes = whole_image_boxes(b, k_regions, device=device)
    region_scores, fold_scores, regions, log_probs, baselines, chosen = [], [], [], [], [], []
    context = None  # [B, 1+F, L] the whole-image context logits (agent.context)
    q = p + heads * agent.num_classes  # region-head channels end here; context channels follow
    for t in range(num_steps + 1):
        image_boxes = boxes if windows is None else view_to_image(boxes, windows)
        glimpses = crop(maps, image_boxes, glimpse_size)  # [B, K, P (+ (1+F)L), s, s]
        out = agent(glimpses[:, :, :p], state, projected=True, logits=glimpses[:, :, p:q] if agent.head == "linear" else None)
        if t == 0 and agent.context:
            context = agent.context_logits(glimpses[:, 0, q:])  # [B, 1+F, L]: step 0 shows the whole view
        state = out.state
        if t >= 1 or fuse_whole_image:
            region_scores.append(out.scores)
            regions.append(image_boxes)
            if out.fold_scores is not None:
                fold_scores.append(out.fold_scores)
        if t == num_steps:
            break
        loc, log_prob = policy(t, out, context)
        log_probs.append(log_prob)
        baselines.append(out.baseline)
        loc = loc.clamp(-1.0, 1.0)
        chosen.append(loc)
        boxes = anchor_boxes(loc, scales, ratios)
    scores = torch.stack(region_scores, dim=1)  # [B, T(+1), K, L]
    fused = fuse(scores, dims=(1, 2))  # [B, L]
    giver = scores.detach().flatten(1, 2).argmax(1)  # [B, L]
    fold_fused = fuse(torch.stack(fold_scores, dim=1), dims=(1, 2)) if fold_scores else None  # [B,T,K,F,L] -> [B,F,L]
    if context is not None:  # the whole image's logits plus the regions' max
        fused = fused + context[:, 0]
        if fold_fused is not None:
            fold_fused = fold_fused + context[:, 1:]
    return Rollout(
        fused=fused,
        reward=topk_overlap(fused.detach(), labels, k),
        log_prob=torch.stack(log_probs, dim=1),
        baseline=torch.stack(baselines, dim=1),
        centers=torch.stack(chosen, dim=1),
        regions=torch.cat(regions, dim=1),
        giver=giver,
        fold_fused=fold_fused,
    )


def _glimpse_maps(
    agent: RARLAgent, feature_maps: torch.Tensor, repeat: int, heads: int, project: bool = True
) -> tuple[torch.Tensor, int]:
    """The maps an episode crops, ``[B * repeat, P (+ nL (+ nL)), H, W]``, and ``P``: the agent's
    projection of the (tail-continued) maps (``P = 0`` without ``project``: nothing reads the
    LSTM), then, for the linear head, the first n = ``heads`` region and context heads' logit maps,
    so that one crop serves all of them (see ``RARLAgent.project``)."""
    feature_maps = agent.maps(feature_maps)  # a fine-tuned tail, if the agent has one
    if not project:
        maps = agent.logit_maps(feature_maps, heads)
        return (maps.repeat_interleave(repeat, 0) if repeat > 1 else maps), 0
    maps = agent.project(feature_maps)  # crop P channels instead of C
    p = maps.shape[1]
    if agent.head == "linear":  # crop the P projected channels and the n*L logit channels in one pass
        maps = torch.cat([maps, agent.logit_maps(feature_maps, heads)], dim=1)
    if repeat > 1:
        maps = maps.repeat_interleave(repeat, 0)
    return maps, p


def _planned_rollout(
    agent: RARLAgent,
    policy: OpenLoopPolicy,
    maps: torch.Tensor,
    heads: int,
    windows: torch.Tensor | None,
    labels: torch.Tensor,
    num_steps: int,
    glimpse_size: int,
    scales: Sequence[float],
    ratios: Sequence[float],
    k: int | str,
    fuse_whole_image: bool,
) -> Rollout:
    """:func:`rollout` of an open-loop policy with the linear head, on the logit maps ``maps
    [B, nL (+ nL context), H, W]`` of the first n = ``heads`` heads: the T centres planned first,
    the (T+1) x K regions of steps 0..T cropped in one call; the same scores, regions and reward
    as the step loop."""
    b, n_cls = maps.shape[0], agent.num_classes
    kr = len(scales) * len(ratios)
    centers = torch.stack([policy.at(t).clamp(-1.0, 1.0) for t in range(num_steps)], dim=1)  # [B, T, 2]
    steps = anchor_boxes(centers.flatten(0, 1), scales, ratios).reshape(b, num_steps * kr, 4)
    boxes = torch.cat([whole_image_boxes(b, kr, device=maps.device), steps], dim=1)  # [B, (T+1)K, 4], step 0 first
    if windows is not None:
        boxes = view_to_image(boxes, windows)
    glimpses = crop(maps, boxes, glimpse_size)  # [B, (T+1)K, nL (+ nL), s, s]
    q = heads * n_cls
    region = agent.region_logits(glimpses[:, :, :q]).unflatten(1, (num_steps + 1, kr))  # [B, T+1, K, n, L]
    first = 0 if fuse_whole_image else 1
    scores = region[:, first:, :, 0]  # [B, T(+1), K, L]
    fused = fuse(scores, dims=(1, 2))  # [B, L]
    fold_fused = fuse(region[:, first:, :, 1:], dims=(1, 2)) if heads > 1 else None  # [B, F, L]
    if agent.context:  # the whole view (step 0's first region) through the context heads
        context = agent.context_logits(glimpses[:, 0, q:])  # [B, n, L]
        fused = fused + context[:, 0]
        if fold_fused is not None:
            fold_fused = fold_fused + context[:, 1:]
    zeros = maps.new_zeros(b, num_steps)
    return Rollout(
        fused=fused,
        reward=topk_overlap(fused.detach(), labels, k),
        log_prob=zeros,
        baseline=zeros,
        centers=centers,
        regions=boxes.unflatten(1, (num_steps + 1, kr))[:, first:].flatten(1, 2),
        giver=scores.detach().flatten(1, 2).argmax(1),
        fold_fused=fold_fused,
    )


class RolloutModule(torch.nn.Module):
    """A whole batch of episodes as one forward pass: what ``DistributedDataParallel`` wraps.

    ``rollout`` calls the agent several times per episode; wrapping the rollout rather than the
    agent gives DDP one forward and one backward per iteration.
    """

    def __init__(self, agent: RARLAgent):
        super().__init__()
        self.agent = agent

    def forward(self, feature_maps: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> Rollout:
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


__all__ = ["Rollout", "RolloutModule", "rollout"]

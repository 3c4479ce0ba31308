"""Batched RARL episodes on feature maps, and the paper's hybrid loss.

The trainer runs episodes directly on the functional core (:mod:`rarl_gym.glimpse`,
:mod:`rarl_gym.reward`) rather than through ``gym.Env.step``: the same functions, but B images
per tensor operation and differentiable end to end (the classification loss reaches a fine-tuned
backbone through the bilinear crop). ``tests/test_rarl.py`` checks that an agent rolled out here
and through ``GlimpseEnv`` in ``mode="joint"`` gets the same scores and reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agents.rarl.model import AgentOutput, RARLAgent
from rarl_gym.glimpse import (
    CENTER_POLICIES,
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    FIXED_GRID,
    anchor_boxes,
    crop,
    fuse,
    view_to_image,
    whole_image_boxes,
)
from rarl_gym.reward import ADAPTIVE, topk_overlap


@dataclass
class Rollout:
    fused: torch.Tensor  # [B, L] category-wise max of the region scores of steps 1..T (and 0 if fused)
    reward: torch.Tensor  # [B] top-k overlap of `fused`
    log_prob: torch.Tensor  # [B, T] log-probability of each sampled centre (0 if not sampled)
    baseline: torch.Tensor  # [B, T] baseline predicted when each centre was chosen
    centers: torch.Tensor  # [B, T, 2] the centres l_1..l_T
    fold_fused: torch.Tensor | None = None  # [B, F, L] the same max for the F cross-fitted reward heads


def candidate_centers(side: int, device=None) -> torch.Tensor:
    """``[side * side, 2]`` the centres of a ``side x side`` grid of cells over ``[-1, 1]^2`` (x fastest)."""
    c = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


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
    given_centers: torch.Tensor | None = None,
    repeat: int = 1,
    folds: torch.Tensor | None = None,
) -> Rollout:
    """Run B episodes of ``num_steps`` glimpses.

    Args:
        feature_maps: ``[B, C, H, W]``; labels: ``[B, L]`` (1 / 0 / -1).
        centers: ``"learned"`` (the agent's policy), ``"random"`` (uniform in [-1, 1]^2),
            ``"center"`` (always the image middle), ``"grid"`` (:data:`FIXED_GRID`, a fixed
            set of windows) or ``"given"`` (``given_centers [B, T, 2]``); the agent classifies
            in every case. ``"learned"`` with ``given_centers`` is teacher forcing: the episodes
            look at the given centres, and ``log_prob`` is the policy's log-probability of each
            (imitation of the oracle's sequences, ``TrainConfig.imitate``).
        sample: draw centres from the policy (training); ``False`` takes its mode (test).
        view: ``(windows [B, 4], flips [B])``: each episode sees only that (mirrored) window of
            its image (augmentation, ten-view test; :func:`rarl_gym.glimpse.random_views`).
            Centres and boxes are then in the view's coordinates.
        explore: with ``centers="learned"``, the fraction of episodes whose centres are drawn
            uniformly instead (their log-probabilities are zero, so REINFORCE ignores them).
            The classifier then learns regions everywhere, not only where the current policy
            looks, so that looking elsewhere is not punished by an untrained classifier.
        fuse_whole_image: fuse the scores of step 0 (the whole image) with those of steps 1..T
            (also when the agent was built with ``fuse_whole_image=True``).
        repeat: run ``repeat`` consecutive episodes of each image (the batch becomes
            ``B * repeat`` episodes; ``labels``, ``view`` and ``given_centers`` are per episode).
            The maps are projected once per image, then repeated.
        folds: ``[B * repeat]`` the fold of each training episode's image (``index % F``): the
            map locator then reads the scores of the cross-fitted head that never saw the image
            (the classifier's head 0 has learnt the training images, so its scores there would
            point the policy at what it remembers, not at what it sees); ``None`` (evaluation):
            head 0.
    """
    device = feature_maps.device
    k_regions = len(scales) * len(ratios)
    fuse_whole_image = fuse_whole_image or agent.fuse_whole_image
    maps, p = _glimpse_maps(agent, feature_maps, repeat)  # [B, P (+ (1+F)L (+ context)), H, W]
    b = maps.shape[0]
    windows = None
    if view is not None:
        maps, windows = _mirror(maps, *view)
    state = agent.initial_state(b, device)
    boxes = whole_image_boxes(b, k_regions, device=device)
    region_scores, fold_scores, log_probs, baselines, chosen = [], [], [], [], []
    explorer = None
    if explore > 0 and centers == "learned" and sample:
        explorer = torch.rand(b, generator=generator, device=device) < explore  # [B]
    if centers == "learned" and agent.locator_kind == "map":
        policy = _map_policy(
            agent,
            maps[:, p:],
            windows,
            folds,
            glimpse_size,
            scales,
            ratios,
            fuse_whole_image,
            sample,
            generator,
            given_centers,
        )
    else:
        policy = _center_policy(agent, centers, b, sample, generator, given_centers, device)
    context = None  # [B, 1+F, L] the whole-image context logits (agent.context)
    for t in range(num_steps + 1):
        image_boxes = boxes if windows is None else view_to_image(boxes, windows)
        glimpses = crop(maps, image_boxes, glimpse_size)  # [B, K, P (+ (1+F)L), s, s]
        q = p + (1 + agent.folds) * agent.num_classes  # region-head channels end here; context channels follow
        out = agent(glimpses[:, :, :p], state, projected=True, logits=glimpses[:, :, p:q] if agent.head == "linear" else None)
        if t == 0 and agent.context:
            context = agent.context_logits(glimpses[:, 0, q:])  # [B, 1+F, L]: step 0 shows the whole view
        state = out.state
        if t >= 1 or fuse_whole_image:
            region_scores.append(out.scores)
            if out.fold_scores is not None:
                fold_scores.append(out.fold_scores)
        if t == num_steps:
            break
        loc, log_prob = policy(t, out, context)
        if explorer is not None:  # these episodes look at uniform centres, and REINFORCE ignores them
            uniform = torch.rand(b, 2, generator=generator, device=device) * 2 - 1
            loc = torch.where(explorer[:, None], uniform, loc)
            log_prob = log_prob.masked_fill(explorer, 0.0)
        log_probs.append(log_prob)
        baselines.append(out.baseline)
        loc = loc.clamp(-1.0, 1.0)
        chosen.append(loc)
        boxes = anchor_boxes(loc, scales, ratios)
    fused = fuse(torch.stack(region_scores, dim=1), dims=(1, 2))  # [B,T(+1),K,L] -> [B,L]
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
        fold_fused=fold_fused,
    )


def _glimpse_maps(agent: RARLAgent, feature_maps: torch.Tensor, repeat: int) -> tuple[torch.Tensor, int]:
    """The maps an episode crops, ``[B * repeat, P (+ (1+F)L (+ (1+F)L)), H, W]``, and ``P``: the
    agent's projection of the (tail-continued) maps, then, for the linear head, the region and
    context heads' logit maps, so that one crop serves all of them (see ``RARLAgent.project``)."""
    feature_maps = agent.maps(feature_maps)  # a fine-tuned tail, if the agent has one
    maps = agent.project(feature_maps)  # crop P channels instead of C
    p = maps.shape[1]
    if agent.head == "linear":  # crop the P projected channels and the (1+F)*L logit channels in one pass
        maps = torch.cat([maps, agent.logit_maps(feature_maps)], dim=1)
    if repeat > 1:
        maps = maps.repeat_interleave(repeat, 0)
    return maps, p


#: A centre policy: ``(t, the agent's output at step t, the context logits or None) -> (centres
#: [B, 2] of step t + 1, their log-probabilities [B])`` (zero where nothing was sampled).
CenterPolicy = Callable[[int, AgentOutput, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def _center_policy(
    agent: RARLAgent,
    centers: str,
    b: int,
    sample: bool,
    generator: torch.Generator | None,
    given_centers: torch.Tensor | None,
    device: torch.device,
) -> CenterPolicy:
    """The policy named ``centers`` (but the map locator's: :func:`_map_policy`)."""
    zeros = torch.zeros(b, device=device)

    def learned(t: int, out: AgentOutput, context) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear locator: a Gaussian around its mean, or the mean (``sample=False``); with
        ``given_centers``, the given centre and its log-probability (teacher forcing)."""
        mean = agent.center_mean(out.loc_mean, t)
        if given_centers is not None:
            loc = given_centers[:, t]
            return loc, torch.distributions.Normal(mean, agent.sigma).log_prob(loc).sum(-1)
        if not sample:
            return mean.detach(), zeros
        noise = torch.randn(mean.shape, generator=generator, device=device)
        loc = (mean + agent.sigma * noise).detach()  # REINFORCE: no gradient through the sample
        return loc, torch.distributions.Normal(mean, agent.sigma).log_prob(loc).sum(-1)

    def random(t: int, out: AgentOutput, context) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(b, 2, generator=generator, device=device) * 2 - 1, zeros

    def center(t: int, out: AgentOutput, context) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor((0.0, 0.0), device=device).expand(b, 2), zeros

    def grid(t: int, out: AgentOutput, context) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(FIXED_GRID[t % len(FIXED_GRID)], device=device).expand(b, 2), zeros

    def given(t: int, out: AgentOutput, context) -> tuple[torch.Tensor, torch.Tensor]:
        return given_centers[:, t], zeros

    policies = {"learned": learned, "random": random, "center": center, "grid": grid}
    if given_centers is not None:
        policies["given"] = given
    if centers not in policies:
        raise ValueError(f"centers must be one of {CENTER_POLICIES} (or 'given' with given_centers), got {centers!r}")
    return policies[centers]


def _map_policy(
    agent: RARLAgent,
    logit_maps: torch.Tensor,
    windows: torch.Tensor | None,
    folds: torch.Tensor | None,
    glimpse_size: int,
    scales,
    ratios,
    fuse_whole_image: bool,
    sample: bool,
    generator: torch.Generator | None,
    given_centers: torch.Tensor | None = None,
) -> CenterPolicy:
    """The map locator's policy: a mixture of Gaussians over the candidate centres, weighted by the
    gains of looking there given what the locator's head has seen so far (fused) and the context;
    with ``given_centers [B, T, 2]``, their log-probabilities under it (teacher forcing).

    The locator reads head ``1 + folds % F`` (the cross-fitted head that never saw the image), or
    head 0 when ``folds`` is ``None`` (evaluation) or the agent has no folds.
    """
    b, device = logit_maps.shape[0], logit_maps.device
    head = (
        torch.zeros(b, dtype=torch.long, device=device) if folds is None or not agent.folds else 1 + folds.long() % agent.folds
    )  # [B]
    positions, gains_of = _candidates(agent, logit_maps, windows, glimpse_size, scales, ratios, head)
    seen_scores: list[torch.Tensor] = []  # [B, K, L] per step: the locator's head's region scores
    rows = torch.arange(b, device=device)

    def choose(t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        heads = (
            out.scores[:, :, None] if out.fold_scores is None else torch.cat([out.scores[:, :, None], out.fold_scores], 2)
        )  # [B,K,1+F,L]
        now = heads[rows, :, head].detach()  # [B, K, L]
        if t >= 1 or fuse_whole_image:
            seen_scores.append(now)
        seen = (
            fuse(torch.stack(seen_scores, 1), dims=(1, 2)) if seen_scores else now.amax(1)
        )  # step 0 stands in until something is fused
        belief = seen + context[rows, head].detach() if context is not None else seen  # the fused logits so far
        logits = agent.candidate_logits(gains_of(seen), belief, out.state[0], positions, t)  # [B, J]
        forced = None if given_centers is None else given_centers[:, t]
        return _mixture_step(logits, positions, agent.sigma, sample, generator, forced)

    return choose


def _candidates(agent: RARLAgent, logit_maps: torch.Tensor, windows, glimpse_size: int, scales, ratios, head: torch.Tensor):
    """The map locator's candidates: positions ``[J, 2]`` (view coordinates) and a function
    ``fused [B, L] -> gains [B, J, L]``, the rise of each class's fused logit if the anchors of
    candidate ``j`` were looked at (head ``head[b]`` of the linear classifier, ``[B]``, on the
    cropped logit maps)."""
    b, device = logit_maps.shape[0], logit_maps.device
    positions = candidate_centers(agent.candidates, device)  # [J, 2]
    j = positions.shape[0]
    boxes = anchor_boxes(positions.repeat(b, 1), scales, ratios).reshape(b, -1, 4)  # [B, J*K, 4]
    if windows is not None:
        boxes = view_to_image(boxes, windows)
    n_heads = 1 + agent.folds
    heads = logit_maps[:, : n_heads * agent.num_classes].detach()
    region = crop(heads, boxes, glimpse_size).mean(dim=(-2, -1)) + agent.region_head.bias.detach()  # [B, J*K, (1+F)*L]
    region = region.reshape(b, j, -1, n_heads, agent.num_classes)[
        torch.arange(b, device=head.device), :, :, head
    ]  # [B, J, K, L]
    best = region.amax(2)  # [B, J, L]
    return positions, lambda fused: torch.relu(best - fused[:, None, :])


def _mixture_step(
    logits: torch.Tensor, positions: torch.Tensor, sigma: float, sample: bool, generator, forced: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A centre from the mixture of Gaussians (std ``sigma``) at ``positions [J, 2]`` weighted by
    ``softmax(logits [B, J])``, and its log-probability ``[B]`` (the mode and 0 if not ``sample``);
    ``forced [B, 2]``: that centre and its log-probability."""
    b = logits.shape[0]
    if forced is not None:
        loc = forced
    elif not sample:
        return positions[logits.argmax(1)], logits.new_zeros(b)
    else:
        with torch.no_grad():
            pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]
            noise = torch.randn(b, 2, generator=generator, device=logits.device)
            loc = positions[pick] + sigma * noise
    component = torch.distributions.Normal(positions, sigma).log_prob(loc[:, None, :]).sum(-1)  # [B, J]
    return loc, torch.logsumexp(torch.log_softmax(logits, 1) + component, dim=1)


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


#: What REINFORCE maximises: the paper's top-k overlap, or the log-likelihood of the true labels
#: under the fused scores (dense: every change of a score counts, not only changes of the top k).
REWARDS = ("topk", "likelihood")


def rarl_loss(
    out: Rollout,
    labels: torch.Tensor,
    *,
    rl_weight: float = 1.0,
    output: str = "softmax",
    reward: str = "topk",
    folds: torch.Tensor | None = None,
    samples: int = 1,
    k: int | str = ADAPTIVE,
) -> dict[str, torch.Tensor]:
    """Hybrid objective: classification + REINFORCE with a baseline (+ baseline regression).

    The REINFORCE term sums ``-(R - b) log pi(l_t)`` over time and averages over the batch.

    Args:
        output: the classification loss, ``"softmax"`` (the paper's) or ``"sigmoid"`` (BCE).
        reward: what ``R`` is (:data:`REWARDS`).
        folds: ``[B]`` the fold of each image (``index % F``) when the agent has F cross-fitted
            reward heads: head ``f`` learns from the images of the other folds, and ``R`` is
            computed from the scores of the head that never saw the image (``out.fold_fused``).
        samples: the batch holds ``samples`` consecutive episodes of each image; with more
            than one, ``b`` is the mean return of the image's other episodes (leave-one-out),
            otherwise the learned baseline ``out.baseline``.
    """
    cls = -label_log_likelihood(out.fused, labels, output).mean()
    scores = out.fused
    if out.fold_fused is not None and folds is not None:
        f = out.fold_fused.shape[1]
        own = folds[:, None] == torch.arange(f, device=folds.device)  # [B, F]: head f must not see fold f
        per_head = -label_log_likelihood(out.fold_fused.flatten(0, 1), labels.repeat_interleave(f, 0), output).view(-1, f)
        cls = cls + (per_head * ~own).sum() / (~own).sum().clamp(min=1)
        scores = out.fold_fused[torch.arange(len(folds), device=folds.device), folds]  # [B, L] out of fold
    scores = scores.detach()
    ret = topk_overlap(scores, labels, k) if reward == "topk" else label_log_likelihood(scores, labels, output)  # [B]
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


__all__ = [
    "REWARDS",
    "Rollout",
    "RolloutModule",
    "candidate_centers",
    "classification_loss",
    "label_log_likelihood",
    "rarl_loss",
    "rollout",
]

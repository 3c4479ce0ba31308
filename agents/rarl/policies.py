"""Where the glimpses look: one object per centre source, all driven by the same rollout loop.

A centre policy is built once per batch of episodes from an :class:`EpisodeBatch` (the maps the
rollout crops, the views, the random generator, ...) and then called once per step::

    loc, log_prob = policy(t, out, context)   # centres [B, 2] of step t + 1, log pi [B] (0 if not sampled)

``out`` is the agent's :class:`~agents.rarl.model.AgentOutput` of step ``t`` and ``context`` the
whole-image context logits ``[B, 1+F, L]`` (or ``None``). :data:`POLICIES` maps each name of
:data:`rarl_gym.glimpse.CENTER_POLICIES` (and ``"given"``) to its class; ``"learned"`` is the
agent's own locator (:class:`LinearLocator`, :class:`MapLocator` or :class:`PeakLocator`, by
``agent.locator_kind``).

Coordinates are the episode's view coordinates (``[-1, 1]``, see :mod:`rarl_gym.glimpse`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from agents.rarl.model import AgentOutput, RARLAgent
from rarl_gym.glimpse import CENTER_POLICIES, FIXED_GRID, anchor_boxes, crop, fuse, view_to_image


@dataclass
class EpisodeBatch:
    """What a centre policy may read about the B episodes of one rollout."""

    agent: RARLAgent
    logit_maps: torch.Tensor | None  # [B, nL (+ nL context), H, W] the first n linear heads' maps (head="linear")
    heads: int  # n: the heads in logit_maps (1 + F in training, 1 in an evaluation: head 0)
    windows: torch.Tensor | None  # [B, 4] each episode's view of its image (None: the whole image)
    fold_of: torch.Tensor | None  # [B] the cross-fitted head that never saw each image (training), None: head 0
    glimpse_size: int
    scales: Sequence[float]
    ratios: Sequence[float]
    fuse_whole_image: bool
    sample: bool  # draw from the policy (training) or take its mode (test)
    generator: torch.Generator | None
    given_centers: torch.Tensor | None  # [B, T, 2] for "given"
    batch: int  # B
    device: torch.device

    def head_index(self) -> torch.Tensor:
        """``[B]`` the head each episode's locator reads (0, or ``1 + fold`` in training)."""
        if self.fold_of is None or not self.agent.folds:
            return torch.zeros(self.batch, dtype=torch.long, device=self.device)
        return 1 + self.fold_of.long() % self.agent.folds

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.batch, device=self.device)


class CenterPolicy:
    """A source of glimpse centres for one batch of episodes (see the module docstring)."""

    #: Whether the centres depend on nothing the episode sees (:class:`OpenLoopPolicy`).
    open_loop = False

    def __init__(self, ep: EpisodeBatch):
        self.ep = ep

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class OpenLoopPolicy(CenterPolicy):
    """A policy whose centres do not depend on what the episode sees (``at(t)`` alone gives
    step t + 1's centres ``[B, 2]``). With the linear head the rollout then plans every centre
    first and crops every step's regions at once, without the LSTM (:func:`agents.rarl.rollout.rollout`)."""

    open_loop = True

    def at(self, t: int) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.at(t), self.ep.zeros()


class RandomCenters(OpenLoopPolicy):
    """Uniform in ``[-1, 1]^2`` (seeded by the episode's generator)."""

    def at(self, t: int) -> torch.Tensor:
        ep = self.ep
        return torch.rand(ep.batch, 2, generator=ep.generator, device=ep.device) * 2 - 1


class MiddleCenters(OpenLoopPolicy):
    """Always the view's middle."""

    def at(self, t: int) -> torch.Tensor:
        return torch.tensor((0.0, 0.0), device=self.ep.device).expand(self.ep.batch, 2)


class GridCenters(OpenLoopPolicy):
    """:data:`rarl_gym.glimpse.FIXED_GRID` (step t: ``FIXED_GRID[t % 5]``)."""

    def at(self, t: int) -> torch.Tensor:
        return torch.tensor(FIXED_GRID[t % len(FIXED_GRID)], device=self.ep.device).expand(self.ep.batch, 2)


class GivenCenters(OpenLoopPolicy):
    """The centres ``given_centers [B, T, 2]`` of the episode batch (the oracle's candidates)."""

    def __init__(self, ep: EpisodeBatch):
        if ep.given_centers is None:
            raise ValueError("centers='given' needs given_centers [B, T, 2]")
        super().__init__(ep)

    def at(self, t: int) -> torch.Tensor:
        assert self.ep.given_centers is not None
        return self.ep.given_centers[:, t]


class LinearLocator(CenterPolicy):
    """The paper's locator: a Gaussian (std ``agent.sigma``) around a linear function of ``h_t``
    (plus the t-th grid centre with ``location_prior="grid"``); its mean at test."""

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ep, agent = self.ep, self.ep.agent
        mean = agent.center_mean(out.loc_mean, t)
        if not ep.sample:
            return mean.detach(), ep.zeros()
        noise = torch.randn(mean.shape, generator=ep.generator, device=ep.device)
        loc = (mean + agent.sigma * noise).detach()  # REINFORCE: no gradient through the sample
        return loc, torch.distributions.Normal(mean, agent.sigma).log_prob(loc).sum(-1)


def candidate_centers(side: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[side * side, 2]`` the centres of a ``side x side`` grid of cells over ``[-1, 1]^2`` (x fastest)."""
    c = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def candidate_region_logits(ep: EpisodeBatch, positions: torch.Tensor) -> torch.Tensor:
    """``[B, J, K, L]``: the logits of the K anchors around each candidate ``positions [J, 2]`` (view
    coordinates) under each episode's locator head (:meth:`EpisodeBatch.head_index`), cropped from the
    logit maps (the head is linear, so the crop of its map is its logit on the crop)."""
    agent, maps = ep.agent, ep.logit_maps
    assert maps is not None
    b, j = maps.shape[0], positions.shape[0]
    boxes = anchor_boxes(positions.repeat(b, 1), ep.scales, ep.ratios).reshape(b, -1, 4)  # [B, J*K, 4]
    if ep.windows is not None:
        boxes = view_to_image(boxes, ep.windows)
    n_heads = ep.heads
    heads = maps[:, : n_heads * agent.num_classes].detach()
    region = agent.region_logits(crop(heads, boxes, ep.glimpse_size)).detach().flatten(-2)  # [B, J*K, n*L]
    head = ep.head_index()
    return region.reshape(b, j, -1, n_heads, agent.num_classes)[torch.arange(b, device=head.device), :, :, head]


class SeenScores:
    """What a locator's head has seen so far in B episodes: the category-wise max of the region
    scores of the fused steps under each episode's locator head, and the belief (plus the context)."""

    def __init__(self, ep: EpisodeBatch):
        self.ep = ep
        self.head_index = ep.head_index()  # [B]
        self.rows = torch.arange(ep.batch, device=ep.device)
        self.scores: list[torch.Tensor] = []  # [B, K, L] per fused step

    def update(
        self, t: int, out: AgentOutput, context: torch.Tensor | None, empty: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add step ``t``'s region scores (if the step is fused); return ``(seen [B, L], belief [B, L])``.
        Before anything is fused, ``seen`` is ``empty`` (default: the max of step ``t``'s regions)."""
        rows, head = self.rows, self.head_index
        heads = (
            out.scores[:, :, None] if out.fold_scores is None else torch.cat([out.scores[:, :, None], out.fold_scores], 2)
        )  # [B,K,1+F,L]
        now = heads[rows, :, head].detach()  # [B, K, L]
        if t >= 1 or self.ep.fuse_whole_image:
            self.scores.append(now)
        if self.scores:
            seen = fuse(torch.stack(self.scores, 1), dims=(1, 2))
        else:
            seen = now.amax(1) if empty is None else empty
        belief = seen + context[rows, head].detach() if context is not None else seen  # the fused logits so far
        return seen, belief


def mixture_step(
    logits: torch.Tensor, positions: torch.Tensor, sigma: float, sample: bool, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A centre from the mixture of Gaussians (std ``sigma``) at ``positions`` (``[J, 2]`` shared, or
    ``[B, J, 2]`` per episode) weighted by ``softmax(logits [B, J])``, and its log-probability ``[B]``
    (the mode and 0 if not ``sample``)."""
    b = logits.shape[0]
    at = positions.expand(b, *positions.shape[-2:])  # [B, J, 2]
    rows = torch.arange(b, device=logits.device)
    if not sample:
        return at[rows, logits.argmax(1)], logits.new_zeros(b)
    with torch.no_grad():
        pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]
        noise = torch.randn(b, 2, generator=generator, device=logits.device)
        loc = at[rows, pick] + sigma * noise
    component = torch.distributions.Normal(positions, sigma).log_prob(loc[:, None, :]).sum(-1)  # [B, J]
    return loc, torch.logsumexp(torch.log_softmax(logits, 1) + component, dim=1)


class MapLocator(CenterPolicy):
    """The map locator: a mixture of Gaussians over the ``agent.candidates``-sided grid of centres,
    weighted by the gains of looking there given what the locator's head has seen so far (fused)
    and the context (:meth:`RARLAgent.candidate_logits`)."""

    def __init__(self, ep: EpisodeBatch):
        super().__init__(ep)
        self.positions = candidate_centers(ep.agent.candidates, ep.device)  # [J, 2]
        self.best = candidate_region_logits(ep, self.positions).amax(2)  # [B, J, L]
        self.seen = SeenScores(ep)

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ep, agent = self.ep, self.ep.agent
        seen, belief = self.seen.update(t, out, context)  # step 0 stands in until something is fused
        gains = torch.relu(self.best - seen[:, None, :])  # [B, J, L]
        logits = agent.candidate_logits(gains, belief, out.state[0], self.positions, t)  # [B, J]
        return mixture_step(logits, self.positions, agent.sigma, ep.sample, ep.generator)


def class_peaks(ep: EpisodeBatch, smooth: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's peak on its logit map under the locator's head: ``(positions [B, L, 2]`` of the
    peak cell's centre in view coordinates, ``heights [B, L]`` the logit there, bias included).

    The map is read through the view: every cell of an ``H x W`` grid over the view is cropped
    (one cell's box, so for the whole image the value is the cell's own logit). ``smooth=3``
    first averages each cell with its 3 x 3 neighbourhood: the peak of the smoothed map lies on the
    object more often than the single most telling cell (docs/design.md, "Where the labels are").
    """
    agent, maps = ep.agent, ep.logit_maps
    assert maps is not None
    side = maps.shape[-1]
    positions = candidate_centers(side, ep.device)  # [J, 2]
    b, j = maps.shape[0], positions.shape[0]
    half = positions.new_tensor([1.0 / side, 1.0 / side])
    boxes = torch.cat([positions - half, positions + half], -1).repeat(b, 1).reshape(b, j, 4)  # [B, J, 4]
    if ep.windows is not None:
        boxes = view_to_image(boxes, ep.windows)
    n_heads = ep.heads
    cells = agent.region_logits(crop(maps[:, : n_heads * agent.num_classes].detach(), boxes, 1)).detach()  # [B, J, n, L]
    head = ep.head_index()
    cells = cells.reshape(b, j, n_heads, agent.num_classes)[torch.arange(b, device=ep.device), :, head]  # [B, J, L]
    if smooth > 1:
        grid = cells.transpose(1, 2).reshape(b, agent.num_classes, side, side)  # [B, L, H, W] (J: x fastest)
        grid = torch.nn.functional.avg_pool2d(grid, smooth, 1, smooth // 2, count_include_pad=False)
        cells = grid.flatten(2).transpose(1, 2)  # [B, J, L]
    heights, at = cells.max(1)  # [B, L]
    return positions[at], heights


class PeakCenters(OpenLoopPolicy):
    """Training-free and label-free: glimpse ``t`` looks at the peak of the class ranked ``t`` by
    its peak height (:func:`class_peaks`): the t-th most likely class's most telling cell."""

    def __init__(self, ep: EpisodeBatch):
        if ep.logit_maps is None:
            raise ValueError("centers='peak' reads the linear head's logit maps: the agent needs head='linear'")
        super().__init__(ep)
        self.positions, heights = class_peaks(ep)  # [B, L, 2], [B, L]
        self.order = heights.argsort(1, descending=True)  # [B, L]
        self.rows = torch.arange(ep.batch, device=ep.device)

    def at(self, t: int) -> torch.Tensor:
        return self.positions[self.rows, self.order[:, t % self.order.shape[1]]]


class PeakLocator(CenterPolicy):
    """The peak locator: a mixture of Gaussians (std ``agent.sigma``) centred on the classes'
    smoothed peaks (:func:`class_peaks`, ``smooth=3``), one component per class, weighted by
    :meth:`RARLAgent.peak_logits` (the peak's height, what has been seen of the class so far, the
    LSTM state, a learned per-class bias), with inhibition of return: a class whose peak lies
    within :data:`INHIBITION` of an earlier centre is masked. Untrained, its mode looks at the
    most likely class not yet looked at; REINFORCE learns which classes are worth a glimpse. Every
    glimpse lands on a class's peak, so the regions that give the labels lie where the classifier
    locates the objects.
    """

    def __init__(self, ep: EpisodeBatch):
        if ep.logit_maps is None:
            raise ValueError("the peak locator reads the linear head's logit maps: the agent needs head='linear'")
        super().__init__(ep)
        self.peaks, self.heights = class_peaks(ep, smooth=PEAK_SMOOTH)  # [B, L, 2], [B, L]
        self.visited = torch.zeros_like(self.heights)  # [B, L] in [0, 1]: how near a chosen centre each peak is
        self.seen = SeenScores(ep)

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ep, agent = self.ep, self.ep.agent
        _, belief = self.seen.update(t, out, context, empty=self.heights.new_full(self.heights.shape, -10.0))
        logits = agent.peak_logits(self.heights, belief, out.state[0]).masked_fill(self.visited > 0.5, -1e4)  # [B, L]
        loc, log_prob = mixture_step(logits, self.peaks, agent.sigma, ep.sample, ep.generator)
        near = torch.exp(-((self.peaks - loc[:, None, :].clamp(-1, 1)) ** 2).sum(-1) / (2 * INHIBITION**2))  # [B, L]
        self.visited = torch.maximum(self.visited, near.detach())
        return loc, log_prob


#: Inhibition of return: a peak within about this distance of a chosen centre counts as looked at.
INHIBITION = 0.15
#: The peak locator's smoothing of the class maps (a 3 x 3 mean; see :func:`class_peaks`).
PEAK_SMOOTH = 3


def learned_policy(ep: EpisodeBatch) -> CenterPolicy:
    """The agent's own locator."""
    return {"linear": LinearLocator, "map": MapLocator, "peak": PeakLocator}[ep.agent.locator_kind](ep)


class Explore(CenterPolicy):
    """``policy`` with a fraction ``explore`` of the episodes looking at uniform centres instead
    (their log-probabilities are zero, so REINFORCE ignores them): the classifier then learns
    regions everywhere, not only where the current policy looks."""

    def __init__(self, policy: CenterPolicy, explore: float):
        super().__init__(policy.ep)
        self.policy = policy
        self.explorer = torch.rand(self.ep.batch, generator=self.ep.generator, device=self.ep.device) < explore  # [B]

    def __call__(self, t: int, out: AgentOutput, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_prob = self.policy(t, out, context)
        uniform = torch.rand(self.ep.batch, 2, generator=self.ep.generator, device=self.ep.device) * 2 - 1
        return torch.where(self.explorer[:, None], uniform, loc), log_prob.masked_fill(self.explorer, 0.0)


#: Centre policy name -> its constructor (``"learned"``: the agent's locator).
POLICIES: dict[str, Callable[[EpisodeBatch], CenterPolicy]] = {
    "learned": learned_policy,
    "random": RandomCenters,
    "center": MiddleCenters,
    "grid": GridCenters,
    "peak": PeakCenters,
    "given": GivenCenters,
}


def make_policy(name: str, ep: EpisodeBatch, explore: float = 0.0) -> CenterPolicy:
    """The centre policy ``name`` for the episode batch ``ep`` (``explore``: see :class:`Explore`)."""
    if name not in POLICIES:
        raise ValueError(f"centers must be one of {CENTER_POLICIES} (or 'given' with given_centers), got {name!r}")
    policy = POLICIES[name](ep)
    if explore > 0 and name == "learned" and ep.sample:
        policy = Explore(policy, explore)
    return policy


__all__ = [
    "POLICIES",
    "CenterPolicy",
    "EpisodeBatch",
    "Explore",
    "GivenCenters",
    "GridCenters",
    "LinearLocator",
    "MapLocator",
    "MiddleCenters",
    "OpenLoopPolicy",
    "PeakCenters",
    "PeakLocator",
    "RandomCenters",
    "candidate_centers",
    "candidate_region_logits",
    "class_peaks",
    "make_policy",
    "mixture_step",
]

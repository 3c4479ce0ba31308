"""The paper's recurrent attention-aware module (Chen et al. 2018, "Proposed Method").

Per region i of step t: a fully-connected layer embeds the cropped features, an LSTM cell takes
the embedding and the shared previous state ``(h_{t-1}, c_{t-1})`` and gives ``h_{t,i}``, and a
fully-connected classifier gives the region's label scores ``s_{t,i}``. The region states are
averaged into ``h_t`` (and ``c_t``, our reading: the paper only names ``h_t``); the localization
layer maps ``h_t`` to the mean of a Gaussian of standard deviation ``sigma = 0.11`` over the next
centre. A learned baseline ``b_t`` (Mnih et al. 2014) reads ``h_t`` without back-propagating into
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rarl_gym.features.backbones import build_tail
from rarl_gym.glimpse import FIXED_GRID

#: The paper's standard deviation of the location policy, in [-1, 1] image coordinates.
SIGMA = 0.11


@dataclass
class AgentOutput:
    """One step of the agent for a batch of B images and K regions."""

    scores: torch.Tensor  # [B, K, L] region label scores (logits)
    loc_mean: torch.Tensor  # [B, 2] mean of the next centre, in [-1, 1]
    baseline: torch.Tensor  # [B] predicted return
    state: tuple[torch.Tensor, torch.Tensor]  # (h_t, c_t), each [B, H]
    fold_scores: torch.Tensor | None = None  # [B, K, F, L] the cross-fitted reward heads' logits (head="linear", folds > 0)


class RARLAgent(nn.Module):
    """FC embed -> LSTM cell per region -> classifier; localization and baseline on the mean state.

    Args:
        channels: C, the backbone's channels.
        num_classes: L.
        glimpse_size: s, the side of each region's crop.
        proj_dim: the embedding is low-rank: a per-cell linear projection of the C channels
            to ``proj_dim`` (a 1x1 convolution), then a fully-connected layer over the
            ``proj_dim * s * s`` values. It is one fully-connected layer of rank ``proj_dim``,
            at a fraction of the cost for C = 1280; ``proj_dim=None`` uses a full FC layer.
        embed_dim, hidden_dim: the embedding and LSTM sizes.
        sigma: standard deviation of the Gaussian location policy.
        dropout: dropout on the region features before the embedding (training only).
        recurrent_classifier: classify from the LSTM state (the paper, "Ours-C"); ``False``
            classifies each region from its embedding alone while the LSTM still drives the
            location ("Ours-B" of the paper's Table 4).
        memory: carry the LSTM state across steps (the paper); ``False`` starts every step
            from a zero state, so classification and location depend on the current regions
            only ("Ours-A", no LSTM).
        location_prior: ``"grid"`` adds the localization output to the t-th centre of
            :data:`rarl_gym.glimpse.FIXED_GRID` (so an untrained agent looks like the fixed grid
            and REINFORCE learns where to deviate from it); ``"none"`` is the paper's absolute
            centre. With ``locator="map"``, ``"grid"`` adds a learned pull towards the t-th grid
            centre to the candidates' logits (:meth:`candidate_logits`).
        head: ``"lstm"`` (the paper): region scores from the LSTM state (or the embedding,
            ``recurrent_classifier=False``); ``"linear"``: a linear classifier on the region's
            mean over its ``s x s`` cells of the full C channels. A linear head commutes with
            the crop, so it is applied to the whole map once (:meth:`logit_maps`) and the
            rollout crops ``L`` logit channels; it memorises far less than the LSTM head on a
            few thousand images (see docs/design.md).
        folds: with ``head="linear"``, F extra cross-fitted heads (head ``f`` is trained only on
            the training images with ``index % F != f``) whose out-of-fold scores give the
            REINFORCE reward of a training image, so the policy is rewarded by a classifier
            that never saw the image. 0 = none.
        locator: ``"linear"`` (the paper): a Gaussian of standard deviation ``sigma`` whose
            mean is a linear function of ``h_t``; ``"map"``: a mixture of such Gaussians
            centred on a ``candidates x candidates`` grid of centres, weighted by a softmax over
            what the head would add there (per candidate and class, the gain of the fused
            score if its anchors were looked at), modulated per class by the belief so far and
            by ``h_t`` (see :meth:`candidate_logits`). The mean policy (test) takes the most
            likely candidate.
        candidates: the side of the candidate grid of ``locator="map"``.
        output: ``"softmax"`` (the paper's loss and scores) or ``"sigmoid"`` (binary
            cross-entropy per class): how fused scores become label probabilities.
        fuse_whole_image: the scores of step 0 (the whole image) join the category-wise max
            (also an env kwarg; the rollout fuses it when either asks).
        tail: fine-tuning on cached intermediate maps: the name of the cached backbone whose
            trainable tail (:func:`rarl_gym.features.backbones.build_tail`) the agent applies to
            the maps first, e.g. ``"efficientnet_lite0_s16"``; ``channels`` is then the tail's
            output. Its batch-norm statistics stay frozen (eval mode).
        context: with ``head="linear"``, a second linear head on the whole image (the view's
            mean feature) whose logits are *added* to the category-wise max of the regions:
            ``fused = g + max_{t,k} r_{t,k}``. The whole image gives the context (a strong
            global classifier), the glimpses the evidence it misses; unlike fusing the whole
            image into the max, every glimpse still moves the score, so the policy keeps a
            signal.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        *,
        glimpse_size: int = 1,
        proj_dim: int | None = 64,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        sigma: float = SIGMA,
        dropout: float = 0.2,
        recurrent_classifier: bool = True,
        memory: bool = True,
        location_prior: str = "grid",
        head: str = "lstm",
        folds: int = 0,
        locator: str = "linear",
        candidates: int = 7,
        output: str = "softmax",
        fuse_whole_image: bool = False,
        tail: str | None = None,
        context: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.glimpse_size = glimpse_size
        self.proj_dim = proj_dim
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.sigma = sigma
        self.recurrent_classifier = recurrent_classifier
        self.memory = memory
        if location_prior not in ("grid", "none"):
            raise ValueError(f"location_prior must be 'grid' or 'none', got {location_prior!r}")
        self.location_prior = location_prior
        for name, value, allowed in (
            ("head", head, ("lstm", "linear")),
            ("locator", locator, ("linear", "map", "peak")),
            ("output", output, ("softmax", "sigmoid")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if folds and head != "linear":
            raise ValueError("folds (cross-fitted reward heads) need head='linear'")
        if locator in ("map", "peak") and head != "linear":
            raise ValueError(
                f"the {locator} locator reads the linear head's logit maps: it needs head='linear' (or locator='linear')"
            )
        self.head, self.folds, self.locator_kind, self.candidates, self.output = (
            head,
            int(folds),
            locator,
            int(candidates),
            output,
        )
        self.fuse_whole_image = bool(fuse_whole_image)
        if context and head != "linear":
            raise ValueError("context (a whole-image head added to the regions' max) needs head='linear'")
        self.context = bool(context)
        self.tail_name = tail
        self.tail = build_tail(tail).to(memory_format=torch.channels_last) if tail is not None else None
        cells = glimpse_size * glimpse_size
        self.proj = nn.Conv2d(channels, proj_dim, 1) if proj_dim is not None else nn.Identity()
        self.embed = nn.Sequential(
            nn.Dropout(dropout), nn.Flatten(), nn.Linear((proj_dim or channels) * cells, embed_dim), nn.ReLU()
        )
        self.lstm = nn.LSTMCell(embed_dim, hidden_dim)
        if head == "lstm":
            self.classifier = nn.Linear(hidden_dim if recurrent_classifier else embed_dim, num_classes)
        if locator == "linear":
            self.locator = nn.Linear(hidden_dim, 2)
            nn.init.zeros_(self.locator.weight)  # start looking at the middle, spread by sigma
            nn.init.zeros_(self.locator.bias)
        self.baseline = nn.Linear(hidden_dim, 1)
        if head == "linear":
            # (1 + F) heads of L classes on the C channels: [(1+F)*L, C, 1, 1] (bias added after the crop)
            self.region_head = nn.Conv2d(channels, (1 + self.folds) * num_classes, 1)
        if self.context:
            self.context_head = nn.Conv2d(channels, (1 + self.folds) * num_classes, 1)
        if locator == "peak":
            self._init_peak_locator(num_classes, hidden_dim)
        if locator == "map":
            # attention over candidates: sum_l gain[j, l] * (w_l + u_l * p_l + (V h_t)_l) + pos(c_j) . q
            self.loc_gain = nn.Parameter(torch.zeros(num_classes))
            self.loc_belief = nn.Parameter(torch.zeros(num_classes))
            self.loc_state = nn.Linear(hidden_dim, num_classes)
            self.loc_pos = nn.Parameter(torch.zeros(5))
            # location_prior="grid": a learned pull towards the t-th fixed-grid centre (starts as the grid)
            self.loc_prior = nn.Parameter(torch.ones(1)) if location_prior == "grid" else None
            nn.init.zeros_(self.loc_state.weight)
            nn.init.zeros_(self.loc_state.bias)

    def peak_logits(self, heights: torch.Tensor, belief: torch.Tensor, h_t: torch.Tensor) -> torch.Tensor:
        """The peak locator's choice among the classes' peaks (``locator="peak"``).

        Args:
            heights: ``[B, L]`` each class's peak logit (smoothed map), detached.
            belief: ``[B, L]`` the fused logits so far (detached).
            h_t: ``[B, H]`` the LSTM state.

        Returns:
            ``[B, L]`` logits ``w_h * heights + b_l + w_b * sigmoid(belief) + (V h_t)_l`` (the policy
            masks the classes already looked at); untrained (``w_h = 4``, the rest 0) the most likely
            class wins.
        """
        return self.loc_height * heights + self.loc_class + self.loc_belief * torch.sigmoid(belief) + self.loc_state(h_t)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden_dim, device=device)
        return zeros, zeros.clone()

    def _init_peak_locator(self, num_classes: int, hidden_dim: int) -> None:
        self.loc_height = nn.Parameter(torch.tensor(4.0))
        self.loc_class = nn.Parameter(torch.zeros(num_classes))
        self.loc_belief = nn.Parameter(torch.zeros(1))
        self.loc_state = nn.Linear(hidden_dim, num_classes)
        nn.init.zeros_(self.loc_state.weight)
        nn.init.zeros_(self.loc_state.bias)

    def center_mean(self, loc_mean: torch.Tensor, t: int) -> torch.Tensor:
        """Mean ``[B, 2]`` of the centre chosen at step ``t`` (for step ``t + 1``), in [-1, 1]."""
        if self.location_prior == "none":
            return loc_mean
        prior = loc_mean.new_tensor(FIXED_GRID[t % len(FIXED_GRID)])
        return (prior + loc_mean).clamp(-1.0, 1.0)

    def train(self, mode: bool = True) -> RARLAgent:
        super().train(mode)
        if self.tail is not None:  # fine-tune the tail's weights, not its batch-norm statistics
            for m in self.tail.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def maps(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """The maps the agent looks at: ``feature_maps`` through the trainable tail, if any."""
        if self.tail is None:
            return feature_maps
        return self.tail(feature_maps.contiguous(memory_format=torch.channels_last)).contiguous()

    def logit_maps(self, feature_maps: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """The linear head on every map cell, bias excluded: ``[B, C, H, W] -> [B, n*L (+ n*L), H, W]``.

        ``heads``: how many of the ``n = 1 + F`` heads (head 0 first; default all): an
        evaluation reads head 0 only. With ``context`` the context heads' maps follow the
        region heads'. Cropping these maps and averaging over the ``s x s`` cells gives every
        region's logits (the head is linear and the crop's weights sum to one), at ``L / C`` of
        the cost of cropping the features.
        """
        rows = (heads or 1 + self.folds) * self.num_classes
        weight = self.region_head.weight[:rows, :, 0, 0]
        if self.context:  # [2 * n * L, C]: region heads, then context heads
            weight = torch.cat([weight, self.context_head.weight[:rows, :, 0, 0]])
        # the 1 x 1 convolution as one matrix product per map: 1.3-3x faster than conv2d on the CPU
        return torch.matmul(weight, feature_maps.flatten(2)).unflatten(2, feature_maps.shape[2:])  # [B, n*L(+n*L), H, W]

    def context_logits(self, cropped_context: torch.Tensor) -> torch.Tensor:
        """``[B, n*L, s, s]`` the whole view cropped from the context part of :meth:`logit_maps`
        (its first n heads) -> ``[B, n, L]`` context logits."""
        assert self.context_head.bias is not None  # a Conv2d with bias
        n = cropped_context.shape[-3]
        logits = cropped_context.mean(dim=(-2, -1)) + self.context_head.bias[:n]
        return logits.unflatten(-1, (n // self.num_classes, self.num_classes))

    def region_logits(self, cropped_logits: torch.Tensor) -> torch.Tensor:
        """``[B, K, n*L, s, s]`` cropped logit maps of the first n heads -> ``[B, K, n, L]`` region
        logits (head 0 is the classifier, heads 1..F the cross-fitted reward heads)."""
        assert self.region_head.bias is not None  # a Conv2d with bias
        n = cropped_logits.shape[-3]
        logits = cropped_logits.mean(dim=(-2, -1)) + self.region_head.bias[:n]
        return logits.unflatten(-1, (n // self.num_classes, self.num_classes))

    def probabilities(self, fused: torch.Tensor) -> torch.Tensor:
        """Label probabilities ``[B, L]`` of fused scores, as the agent was trained (softmax or sigmoid)."""
        return torch.sigmoid(fused) if self.output == "sigmoid" else torch.softmax(fused, dim=-1)

    def candidate_logits(
        self, gains: torch.Tensor, fused: torch.Tensor, h_t: torch.Tensor, positions: torch.Tensor, t: int = 0
    ) -> torch.Tensor:
        """The map locator's attention over candidate centres.

        Args:
            gains: ``[B, J, L]`` how much each candidate's anchors would raise each class's
                fused logit (``relu(max_k r[j, k, l] - fused_l)``, detached).
            fused: ``[B, L]`` fused logits so far (detached); ``p_l = sigmoid(fused_l)``.
            h_t: ``[B, H]`` the LSTM state.
            positions: ``[J, 2]`` the candidate centres.
            t: the step (with ``location_prior="grid"``, a learned pull ``-w ||c_j - g_t||^2 / (2 * 0.15^2)``
                towards the t-th centre of the fixed grid is added: the untrained locator looks
                like the grid, and REINFORCE learns where the gains are worth leaving it).

        Returns:
            ``[B, J]`` logits of the categorical choice of a candidate.
        """
        p = torch.sigmoid(fused)
        weight = self.loc_gain + self.loc_belief * p + self.loc_state(h_t)  # [B, L]
        x, y = positions.unbind(-1)
        pos = torch.stack([x, y, x * x, y * y, x * y], dim=-1) @ self.loc_pos  # [J]
        logits = torch.einsum("bjl,bl->bj", gains, weight) + pos
        if self.loc_prior is not None:
            grid = positions.new_tensor(FIXED_GRID[t % len(FIXED_GRID)])
            logits = logits - self.loc_prior * ((positions - grid) ** 2).sum(-1) / (2 * 0.15**2)
        return logits

    def project(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """The embedding's 1 x 1 projection applied to whole maps ``[B, C, H, W] -> [B, P, H, W]``.

        Bilinear cropping is linear and its weights sum to one inside the image, so cropping the
        projected map equals projecting the crops: the trainer projects each map once and crops
        P instead of C channels (``forward(..., projected=True)``).
        """
        return self.proj(feature_maps)

    def forward(
        self,
        glimpses: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        *,
        projected: bool = False,
        logits: torch.Tensor | None = None,
    ) -> AgentOutput:
        """One iteration.

        Args:
            glimpses: ``[B, K, C, s, s]`` region crops (``[B, K, P, s, s]`` if ``projected``).
            state: ``(h_{t-1}, c_{t-1})``, each ``[B, H]``.
            logits: ``[B, K, (1+F)*L, s, s]``, the same regions cropped from :meth:`logit_maps`
                (``head="linear"``, with ``projected``: the rollout crops both in one pass).
        """
        b, k = glimpses.shape[:2]
        crops = glimpses.flatten(0, 1)  # [B*K, C, s, s]
        x = self.embed(crops if projected else self.proj(crops))  # [B*K, E]
        if not self.memory:
            state = self.initial_state(b, glimpses.device)
        h_prev, c_prev = (s.repeat_interleave(k, dim=0) for s in state)  # [B*K, H]
        h, c = self.lstm(x, (h_prev, c_prev))
        h_t = h.reshape(b, k, -1).mean(1)  # [B,H]
        c_t = c.reshape(b, k, -1).mean(1)
        heads = None
        if self.head == "linear":
            if logits is None:  # full-channel crops (the env's observation): the head on each region's mean
                heads = self.region_head(glimpses.mean(dim=(-2, -1)).flatten(0, 1)[..., None, None]).reshape(
                    b, k, 1 + self.folds, -1
                )
            else:
                heads = self.region_logits(logits)  # [B,K,1+F,L]
            scores = heads[:, :, 0]
        else:
            scores = self.classifier(h if self.recurrent_classifier else x).reshape(b, k, -1)  # [B,K,L]
        return AgentOutput(
            scores=scores,
            loc_mean=torch.tanh(self.locator(h_t)) if self.locator_kind == "linear" else h_t.new_zeros(b, 2),
            baseline=self.baseline(h_t.detach()).squeeze(-1),
            state=(h_t, c_t),
            fold_scores=heads[:, :, 1:] if heads is not None and heads.shape[2] > 1 else None,
        )

    def config(self) -> dict:
        """The constructor arguments (stored in checkpoints to rebuild the agent)."""
        names = (
            "channels",
            "num_classes",
            "glimpse_size",
            "proj_dim",
            "embed_dim",
            "hidden_dim",
            "sigma",
            "dropout",
            "recurrent_classifier",
            "memory",
            "location_prior",
            "head",
            "folds",
            "candidates",
            "output",
            "fuse_whole_image",
            "context",
        )
        return {**{name: getattr(self, name) for name in names}, "locator": self.locator_kind, "tail": self.tail_name}


__all__ = ["SIGMA", "AgentOutput", "RARLAgent"]

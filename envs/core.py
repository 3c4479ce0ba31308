"""The episode logic shared by the single env and the vector env: B episodes in lockstep.

Every episode has exactly ``T + 1`` steps, so B episodes started together stay in lockstep, and
each step of all B is one batched crop (:func:`rarl_gym.glimpse.crop`) and, at the end, one
batched reward (:func:`rarl_gym.reward.topk_overlap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rarl_gym.glimpse import anchor_boxes, crop, fuse, whole_image_boxes
from rarl_gym.reward import topk_overlap
from rarl_gym.scorer import RegionScorer


class GlimpseEpisodes:
    """The state of B glimpse episodes.

    Step ``t`` (``0 <= t <= T``) takes the next centre and the scores of the regions shown at
    ``t``; the scores of steps ``1..T`` are fused by category-wise max (step 0 shows the whole
    image and only decides the first centre, as in the paper; ``fuse_whole_image=True`` fuses
    its scores too). After step ``T`` the episode ends
    with the top-k overlap reward of the fused scores.
    """

    def __init__(
        self,
        *,
        num_steps: int,
        glimpse_size: int,
        scales: Sequence[float],
        ratios: Sequence[float],
        k: int | str,
        scorer: RegionScorer | None = None,
        fuse_whole_image: bool = False,
    ):
        self.num_steps = num_steps
        self.glimpse_size = glimpse_size
        self.scales = tuple(scales)
        self.ratios = tuple(ratios)
        self.k = k
        self.scorer = scorer
        self.fuse_whole_image = fuse_whole_image
        self.num_regions = len(self.scales) * len(self.ratios)
        self.t = 0

    @classmethod
    def from_settings(cls, settings, *, progress: bool = True) -> GlimpseEpisodes:
        """The episodes of an env's :class:`rarl_gym.env_settings.EnvSettings`; ``mode="locate"``
        loads (or fits, once) the env's region scorer."""
        scorer = settings.source.region_scorer(progress=progress) if settings.mode == "locate" else None
        return cls(**settings.rollout_kwargs(), scorer=scorer)

    def reset(self, feature_maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Start B episodes on ``feature_maps [B, C, H, W]``; returns the glimpses ``[B, K, C, s, s]`` of step 0."""
        b = feature_maps.shape[0]
        self.feature_maps = feature_maps
        self.labels = labels
        self.t = 0
        self.fused = torch.full((b, labels.shape[1]), float("-inf"), device=feature_maps.device)
        self.boxes = whole_image_boxes(b, self.num_regions, device=feature_maps.device)  # [B,K,4]
        self.history: list[torch.Tensor] = []  # boxes of steps 1..t, each [B,K,4]
        self.centers: list[torch.Tensor] = []  # centres of steps 1..t, each [B,2]
        self.glimpses = crop(feature_maps, self.boxes, self.glimpse_size)
        return self.glimpses

    @property
    def done(self) -> bool:
        return self.t > self.num_steps

    def region_scores(self) -> torch.Tensor:
        """``[B, L]`` the env scorer's fused scores of the regions shown now (``locate`` mode)."""
        return fuse(self.scorer(self.glimpses))

    def step(self, centers: torch.Tensor, scores: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Advance all B episodes by one step.

        Args:
            centers: ``[B, 2]`` the next glimpse centre in ``[-1, 1]`` (ignored at the last step).
            scores: ``[B, L]`` label scores of the regions shown now; ``None`` lets the env's
                scorer score them.

        Returns:
            ``(glimpses, reward)``: the next glimpses ``[B, K, C, s, s]`` (``None`` after the last
            step) and the reward ``[B]`` (zero but at the last step).
        """
        if self.done:
            raise RuntimeError("the episodes are over: call reset() first")
        if self.t >= 1 or self.fuse_whole_image:
            step_scores = self.region_scores() if scores is None else scores
            self.fused = torch.maximum(self.fused, step_scores.to(self.fused.dtype))
        if self.t == self.num_steps:
            self.t += 1
            self.glimpses = None
            return None, topk_overlap(self.fused, self.labels, self.k)
        self.boxes = anchor_boxes(centers.to(self.feature_maps.dtype), self.scales, self.ratios)
        self.history.append(self.boxes)
        self.centers.append(centers)
        self.glimpses = crop(self.feature_maps, self.boxes, self.glimpse_size)
        self.t += 1
        return self.glimpses, torch.zeros(centers.shape[0], device=self.feature_maps.device)


__all__ = ["GlimpseEpisodes"]

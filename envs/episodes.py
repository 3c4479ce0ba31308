"""The episode logic shared by the single env and the vector env: B episodes in lockstep.

Every episode has exactly ``T + 1`` steps, so B episodes started together stay in lockstep, and
each step of all B is one batched crop (:func:`rarl_gym.glimpse.crop`) and, at the end, one
batched reward (:func:`rarl_gym.reward.topk_overlap`).

Speed (the env's hot path): the B feature maps are held channels-last for the episode, so the
compiled crop (:mod:`rarl_gym.native`) reads each map cell's channels contiguously; step 0 crops
the whole image once and repeats it over the K anchors (they are all the whole image); the env
scorer (linear on a region's mean over its bins) reads the region means that the crop computes
in the same pass, not the ``[B, K, C, s, s]`` glimpses again; and with ``reuse_buffers=True`` the
glimpses are written into two preallocated tensors used in turn (a fresh 100 MB tensor per step
costs as much as the crop, in page faults).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch

from rarl_gym.glimpse import anchor_boxes, crop, fuse, whole_image_boxes
from rarl_gym.reward import topk_overlap
from rarl_gym.scorer import CrossFitScorer, RegionScorer

if TYPE_CHECKING:
    from rarl_gym.env_settings import EnvSettings


def _single_threaded_after_fork() -> None:
    """A forked child (``AsyncVectorEnv``'s workers) runs torch on one thread, as PyTorch's own
    DataLoader workers do: the parent's OpenMP / MKL threads do not exist in the child, and the
    first multi-threaded op there would wait for them forever. Workers run side by side anyway."""
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_single_threaded_after_fork)


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
        scorer: RegionScorer | CrossFitScorer | None = None,
        fuse_whole_image: bool = False,
        reuse_buffers: bool = False,
        out_of_fold: bool = False,
        overview: int = 0,
    ):
        self.num_steps = num_steps
        self.glimpse_size = glimpse_size
        self.scales = tuple(scales)
        self.ratios = tuple(ratios)
        self.k = k
        self.scorer = scorer
        self.fuse_whole_image = fuse_whole_image
        self.num_regions = len(self.scales) * len(self.ratios)
        self.reuse_buffers = reuse_buffers
        self.out_of_fold = out_of_fold
        self.overview_side = overview
        self.overview: torch.Tensor | None = None  # [B, C, o, o] the whole map pooled (overview > 0)
        self.folds: torch.Tensor | None = None  # [B] the scorer fold of each image (out_of_fold)
        self.t = 0
        self._maps: torch.Tensor | None = None  # [B, C, H, W] channels-last, reused across episodes
        self._ring: list[torch.Tensor] = []  # two [B, K, C, s, s] output tensors (reuse_buffers)
        self._turn = 0

    @classmethod
    def from_settings(cls, settings: EnvSettings, *, progress: bool = True, reuse_buffers: bool = False) -> GlimpseEpisodes:
        """The episodes of an env's :class:`rarl_gym.env_settings.EnvSettings`; ``mode="locate"``
        loads (or fits, once) the env's region scorer."""
        scorer = settings.source.region_scorer(settings.split, progress=progress) if settings.mode == "locate" else None
        # the training split's images are scored by the cross-fitted scorer that never saw them
        out_of_fold = settings.split == settings.source.scorer_split(settings.split)
        return cls(
            **settings.rollout_kwargs(),
            scorer=scorer,
            reuse_buffers=reuse_buffers,
            out_of_fold=out_of_fold,
            overview=settings.overview,
        )

    @staticmethod
    def map_dtype(device: torch.device | str = "cpu") -> torch.dtype:
        """The dtype the maps are held in: float16 (the cache's precision, half the memory traffic)
        where the compiled CPU crop reads it, else float32."""
        if torch.device(device).type == "cpu":
            from rarl_gym import native

            if native.available():
                return torch.float16
        return torch.float32

    def map_buffer(self, shape: tuple[int, int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """A channels-last tensor of ``shape [B, C, H, W]`` and :meth:`map_dtype` for the next
        :meth:`reset`'s maps (the same memory episode after episode; a reader fills it in place)."""
        m = self._maps
        if m is None or tuple(m.shape) != tuple(shape) or m.device != torch.device(device):
            m = self._maps = torch.empty(shape, device=device, dtype=self.map_dtype(device)).contiguous(
                memory_format=torch.channels_last
            )
        return m

    def reset(self, feature_maps: torch.Tensor, labels: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Start B episodes on ``feature_maps [B, C, H, W]``; returns the glimpses ``[B, K, C, s, s]`` of step 0.

        The maps are used as given when they are channels-last in :meth:`map_dtype` (as
        :meth:`map_buffer` is), else copied into that layout (maps read from the float16 cache
        lose nothing). ``images [B]``: the images' indices in their split; with ``out_of_fold``
        and a :class:`rarl_gym.scorer.CrossFitScorer`, image ``i`` is scored by fold ``i % F``.
        """
        if feature_maps.dtype != self.map_dtype(feature_maps.device) or not feature_maps.is_contiguous(
            memory_format=torch.channels_last
        ):
            feature_maps = self.map_buffer(
                cast("tuple[int, int, int, int]", tuple(feature_maps.shape)), feature_maps.device
            ).copy_(feature_maps)
        b = feature_maps.shape[0]
        self.feature_maps = feature_maps
        self.labels = labels
        if self.overview_side:  # the whole map, average-pooled to o x o (the map itself when o is its side)
            self.overview = torch.nn.functional.adaptive_avg_pool2d(feature_maps.float(), self.overview_side).contiguous()
        folds = getattr(self.scorer, "folds", None)
        self.folds = (
            None
            if not (self.out_of_fold and folds and images is not None)
            else torch.as_tensor(images, dtype=torch.long) % folds
        )
        self.t = 0
        self.fused = torch.full((b, labels.shape[1]), float("-inf"), device=feature_maps.device)
        self.boxes = whole_image_boxes(b, self.num_regions, device=feature_maps.device)  # [B,K,4] float32
        self.history: list[torch.Tensor] = []  # boxes of steps 1..t, each [B,K,4]
        self.centers: list[torch.Tensor] = []  # centres of steps 1..t, each [B,2]
        c = feature_maps.shape[1]
        means = torch.empty(b, 1, c, device=feature_maps.device) if self.scorer is not None else None
        whole = crop(
            feature_maps, self.boxes[:, :1], self.glimpse_size, region_means=means
        )  # [B,1,C,s,s]: all K anchors are the whole image
        glimpses = self._output(whole.shape[2:]).copy_(whole.expand(-1, self.num_regions, -1, -1, -1))
        self.glimpses: torch.Tensor | None = glimpses
        self.region_means = None if means is None else means.expand(-1, self.num_regions, -1)  # [B,K,C]
        return glimpses

    def _output(self, glimpse_shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor the next glimpses ``[B, K, C, s, s]`` go to: fresh, or the next of two reused ones."""
        shape = (self.feature_maps.shape[0], self.num_regions, *glimpse_shape)
        if not self.reuse_buffers:
            return torch.empty(shape, device=self.feature_maps.device)
        if not self._ring or tuple(self._ring[0].shape) != shape or self._ring[0].device != self.feature_maps.device:
            self._ring = [torch.empty(shape, device=self.feature_maps.device) for _ in range(2)]
        self._turn = 1 - self._turn
        return self._ring[self._turn]

    @property
    def done(self) -> bool:
        return self.t > self.num_steps

    def region_scores(self) -> torch.Tensor:
        """``[B, L]`` the env scorer's fused scores of the regions shown now (``locate`` mode);
        equal to ``fuse(scorer(glimpses))``, from the region means the crop computed."""
        assert self.scorer is not None and self.region_means is not None  # locate mode: the env scorer
        return fuse(self.scorer.score_means(self.region_means, self.folds))

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
        self.boxes = anchor_boxes(centers.to(torch.float32), self.scales, self.ratios)
        self.history.append(self.boxes)
        self.centers.append(centers)
        b, c = self.feature_maps.shape[:2]
        s = self.glimpse_size
        means = torch.empty(b, self.num_regions, c, device=self.feature_maps.device) if self.scorer is not None else None
        self.glimpses = crop(self.feature_maps, self.boxes, s, out=self._output((c, s, s)), region_means=means)
        self.region_means = means  # [B, K, C] (locate mode)
        self.t += 1
        return self.glimpses, torch.zeros(centers.shape[0], device=self.feature_maps.device)


__all__ = ["GlimpseEpisodes"]

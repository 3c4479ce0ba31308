"""``GlimpseEnv``: multi-label recognition of one image as one episode of glimpses."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.common import GlimpseEnvSetup, check_actions
from rarl_gym.env_settings import check_index
from rarl_gym.errors import ConfigError, check_choice
from rarl_gym.glimpse import boxes_to_pixels


class GlimpseEnv(GlimpseEnvSetup, gym.Env):
    """
    ## Description
    Multi-label image recognition as a sequential decision problem, after "Recurrent Attentional
    Reinforcement Learning for Multi-label Image Recognition" (Chen et al., AAAI 2018). One image
    is one episode. A frozen CNN computed the image's feature map once (it is cached); at each
    step the agent sees the features of K = 9 anchor regions (3 scales x 3 aspect ratios) around
    its current glimpse centre, bilinearly cropped from the feature map, and chooses the next
    centre. The regions' label scores of iterations 1..T are fused by category-wise max, and the
    episode's only reward is the top-k overlap of the fused scores with the true labels.

    ## Action Space
    ``mode="locate"`` (default): ``Box(-1, 1, (2,), float32)``, the next glimpse centre ``(x, y)``
    in image coordinates (``(-1, -1)`` top-left, ``(1, 1)`` bottom-right). The env scores the
    regions it shows with its own linear region scorer, fitted once on the training split
    (multiple-instance learning on random regions, :data:`rarl_gym.sources.SCORER_FIT`) and
    saved beside the feature cache. It is cross-fitted: a training image is scored by the fold
    that never saw it (:class:`rarl_gym.scorer.CrossFitScorer`), other splits by the folds' mean.

    ``mode="joint"`` (the paper's formulation): ``Box(-1, 1, (2 + L,), float32)``: the centre,
    then the agent's label scores for the regions it was shown in this step's observation.

    An action of the wrong shape, with NaN or outside the bounds raises
    :class:`rarl_gym.errors.ActionError` (clip it, e.g. with ``gymnasium.wrappers.ClipAction``).

    ## Observation Space
    ``Dict(glimpses=Box(-inf, inf, (K, C, s, s), float32), step=Discrete(T + 1))``: the cropped
    features of the K regions (C backbone channels, ``s = glimpse_size``) and the step index.
    Step 0 shows the whole image in all K slots. With ``overview=o > 0`` the observation also holds
    ``overview=Box(-inf, inf, (C, o, o), float32)``: the whole image's feature map average-pooled to
    an ``o x o`` grid, the same at every step of the episode, so that a policy can plan where to
    look from the start (``o`` = the map's side, 10 at 320 px, gives the map itself: what the RARL
    agent's peak and map locators read, so they act through the env exactly as in the trainer).

    ## Rewards
    0 until the last step; then ``|top-k(fused scores) ∩ G| / k`` (discount 1, so the return is
    this one number, in [0, 1]). ``k = "adaptive"`` (default) uses the number of true labels G;
    an int fixes k. Difficult labels are left out of the ranking.

    ## Starting State
    ``reset`` takes the next image of the split in a seeded random order (``seed`` reshuffles);
    ``options={"index": i}`` picks image ``i``.

    ## Episode End
    The episode terminates after ``T + 1`` steps (step 0 chooses the first centre, steps 1..T
    score regions). There is no truncation. The final ``info`` holds ``labels`` ``[L]`` (1 / 0 / -1),
    ``scores`` ``[L]`` (fused), ``boxes`` ``[T, K, 4]`` (every region shown, in pixels of the
    original image), ``centers`` ``[T, 2]`` and ``image_id``.

    ## Arguments
    ``gym.make("RARL-Shapes-v0", **kwargs)`` (also ``RARL-VOC07-v0`` and ``RARL-COCO2014-v0``):

    * ``dataset``: ``"shapes"``, ``"voc07"`` or ``"coco"`` (set by the env id).
    * ``split``: the split to draw images from (default: the training split).
    * ``root``: the dataset root (default ``$RARL_DATA/<dataset>``; unused by Shapes).
    * ``backbone``, ``pretrained``, ``input_size``: the frozen feature extractor
      (default ``efficientnet_lite0``, ImageNet weights, 256 px for Shapes and 320 for VOC and COCO).
    * ``glimpse_size``: ``s``, the side of each region's crop (1, 3 or 7; default 3).
    * ``num_steps``: T (default 5). ``scales``, ``ratios``: the anchors (fractions of the image
      side; aspect ratios w:h). ``k``: the reward's k. ``fuse_whole_image``: fuse the scores of
      step 0 (the whole image) with those of the glimpses (default ``False``, the paper).
    * ``overview``: the side of the observation's whole-image overview (default 0: none).
    * ``mode``: ``"locate"`` or ``"joint"``. ``render_mode``: ``None`` or ``"rgb_array"``.
    * ``cache_dir``: the feature cache (default ``$RARL_CACHE`` or ``~/.cache/rarl_gym``).
    * ``dataset_kwargs``: passed to the dataset (Shapes: ``num_images``, ``image_size``, ``seed``).

    ## Vectorized environment
    Episodes have a fixed length, so B of them run in lockstep: ``envs.episodes.GlimpseEpisodes``
    steps B images with one batched crop. ``gym.make_vec(id, num_envs=B)`` returns the native
    :class:`envs.vector_env.GlimpseVectorEnv` (``vectorization_mode="vector_entry_point"``, the
    default for these ids; ``copy=False`` for its fastest mode); the sync and async vectorisers
    work too.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {  # type: ignore[misc]  # gymnasium declares it per instance
        "render_modes": ["rgb_array"],
        "render_fps": 2,
    }

    def __init__(self, render_mode: str | None = None, progress: bool = True, **kwargs: Any):
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        self.observation_space, self.action_space = self._open(kwargs, progress=progress)
        self.render_mode = render_mode
        self._order: np.ndarray | None = None  # the seeded image order, drawn at the first reset
        self._cursor = 0
        self._index = -1

    # -- Gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._order is None:
            self._order = self.np_random.permutation(len(self.store))
            self._cursor = 0
        options = options or {}
        if not isinstance(options, dict):
            raise ConfigError(f"options must be a dict, got {options!r}", "e.g. options={'index': 0}")
        if "index" in options:
            index = check_index(options["index"], len(self.store))
        else:
            index = int(self._order[self._cursor])
            self._cursor = (self._cursor + 1) % len(self._order)
        self._index = index
        maps = self.episodes.map_buffer((1, self.store.channels, *self.store.map_size))
        feats, labels = self.store.read_into([index], maps)  # [1, C, H, W] channels-last, [1, L]
        glimpses = self.episodes.reset(feats, labels, torch.tensor([index]))
        return self._obs(glimpses), {"image_id": self.store.image_ids[index]}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._index < 0 or self.episodes.done:
            raise RuntimeError("call reset() before step(): the episode is over or has not started")
        action = check_actions(action, cast(spaces.Box, self.action_space), self.mode)
        centers = torch.from_numpy(action[None, :2])
        scores = None if self.mode == "locate" else torch.from_numpy(action[None, 2:])
        glimpses, reward = self.episodes.step(centers, scores)
        terminated = self.episodes.done
        info: dict[str, Any] = {}
        if terminated:
            info = self._final_info()
            glimpses = torch.zeros((1, *self.observation_space["glimpses"].shape))
        assert glimpses is not None  # the next glimpses, or the zeros of the final observation
        return self._obs(glimpses), float(reward[0]), terminated, False, info

    def close(self) -> None:
        """Release the feature cache's open files (the env cannot step afterwards)."""
        self.store.close()
        super().close()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from rarl_gym.render import draw_glimpses

        image = self.data.load_image(self._index) if self._index >= 0 else None
        if image is None:
            return np.zeros((64, 64, 3), dtype=np.uint8)
        history = [b[0] for b in self.episodes.history] if self.episodes.history else []
        w, h = image.size
        return draw_glimpses(image, [boxes_to_pixels(b, w, h).numpy() for b in history])

    # -- helpers -------------------------------------------------------------------------------
    def _obs(self, glimpses: torch.Tensor) -> dict:
        step = min(self.episodes.t, self.episodes.num_steps)
        obs: dict[str, Any] = {"glimpses": glimpses[0].numpy().astype(np.float32, copy=False), "step": step}
        if self.episodes.overview is not None:
            obs["overview"] = self.episodes.overview[0].numpy().copy()  # a new array every step, as Gymnasium asks
        return obs

    def _final_info(self) -> dict:
        w, h = self.store.image_sizes[self._index]
        history = torch.stack([b[0] for b in self.episodes.history])  # [T,K,4]
        centers = torch.stack([c[0] for c in self.episodes.centers])  # [T,2]
        return {
            "labels": self.store.labels[self._index].copy(),
            "scores": self.episodes.fused[0].numpy().copy(),
            "boxes": boxes_to_pixels(history, float(w), float(h)).numpy(),
            "centers": centers.numpy(),
            "image_id": self.store.image_ids[self._index],
        }


__all__ = ["GlimpseEnv"]

"""``GlimpseVectorEnv``: B glimpse episodes in lockstep, one batched crop per step.

Every episode has exactly ``T + 1`` steps and all B sub-envs start together, so they end together
and stay in lockstep forever: each step is one call of :class:`envs.episodes.GlimpseEpisodes` on B
images: one batched crop of the K regions of all B maps (:func:`rarl_gym.glimpse.crop`: on the CPU
the compiled kernel of :mod:`rarl_gym.native` on the channels-last float16 maps, which also gives
the region means the env scorer reads; else a batched matrix product or ``roi_align``), and the
autoreset at the end of the episodes is one batched read of the B next feature maps into a reused
channels-last buffer. The results equal those of B :class:`envs.glimpse_env.GlimpseEnv`
in a ``SyncVectorEnv(..., autoreset_mode="SameStep")`` driven with the same actions and seeds.

:class:`agents.sb3.vec_env.SB3VecEnvAdapter` (or :func:`~agents.sb3.vec_env.to_sb3`) exposes it as a
Stable-Baselines3 ``VecEnv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.common import GlimpseEnvSetup, check_actions
from rarl_gym.env_settings import check_index
from rarl_gym.errors import ConfigError, check_choice
from rarl_gym.glimpse import boxes_to_pixels

ObsDict = dict[str, np.ndarray]


class GlimpseVectorEnv(GlimpseEnvSetup, VectorEnv):
    """B :class:`envs.glimpse_env.GlimpseEnv` episodes stepped as one batch (same-step autoreset).

    ``GlimpseVectorEnv(num_envs, render_mode=None, progress=True, **env_kwargs)`` takes the kwargs
    of ``GlimpseEnv``; ``gym.make_vec("RARL-Shapes-v0", num_envs=B, **kwargs)`` builds it (the ids
    register it as their ``vector_entry_point``; ``vectorization_mode="sync"`` still gives B
    single envs).

    Spaces: ``single_observation_space`` / ``single_action_space`` are GlimpseEnv's; the batched
    observation is ``{"glimpses": [B, K, C, s, s] float32, "step": [B] int64}`` and the action
    ``[B, 2]`` (``locate``) or ``[B, 2 + L]`` (``joint``).

    Autoreset (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``): the step that ends the
    episodes (step T, every T + 1 steps) returns ``terminated`` all True and already the step-0
    observation of the next images; ``infos`` then holds, as ``SyncVectorEnv`` does:

    * ``final_obs``: object array ``[B]`` of single-env observations (zero glimpses, step T);
    * ``final_info``: ``labels [B, L]`` int8, ``scores [B, L]``, ``boxes [B, T, K, 4]`` (pixels),
      ``centers [B, T, 2]``, ``image_id [B]`` (object), each with its ``_key`` mask;
    * ``image_id [B]``: the new episodes' images (also the info of ``reset``);
    * ``_final_obs``, ``_final_info``, ``_image_id``: boolean masks ``[B]`` (all True).

    Image order: sub-env ``i`` walks its own seeded permutation of the split cyclically, exactly
    like a ``GlimpseEnv`` reset with seed ``seed + i``. ``reset(options={"index": [i_0, ...]})``
    (or one int for all) picks the images instead. Partial resets (``reset_mask``) are refused:
    they would break the lockstep.

    Buffers (``copy``): with ``copy=True`` (the default) every step returns fresh glimpse arrays
    that nothing overwrites later. ``copy=False`` is the fast mode: the glimpses are written into
    two preallocated arrays used in turn, so an observation stays valid until the step after next
    (enough for Stable-Baselines3, which reads the previous observation once after the next step
    and copies it into its buffers; :func:`to_sb3` uses it). A fresh 100 MB array per step
    (B = 256 on VOC07) costs as much in page faults as the crop itself. Do not write into the
    returned arrays in either mode.
    """

    metadata: ClassVar[dict[str, Any]] = {  # type: ignore[misc]  # gymnasium declares it per instance
        "render_modes": ["rgb_array"],
        "render_fps": 2,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __new__(cls, *args: Any, **kwargs: Any) -> GlimpseVectorEnv:
        """``GlimpseVectorEnv(..., device=...)`` builds :class:`envs.torch_vector_env.TorchGlimpseVectorEnv`
        (episodes and outputs as torch tensors on that device); without ``device``, this numpy env."""
        if cls is GlimpseVectorEnv and kwargs.get("device") is not None:
            from envs.torch_vector_env import TorchGlimpseVectorEnv

            return super().__new__(TorchGlimpseVectorEnv)
        return super().__new__(cls)

    def __init__(
        self, num_envs: int, render_mode: str | None = None, progress: bool = True, copy: bool = True, **env_kwargs: Any
    ):
        if not (isinstance(num_envs, (int, np.integer)) and not isinstance(num_envs, bool) and num_envs >= 1):
            raise ConfigError(f"num_envs must be a positive int, got {num_envs!r}", "use e.g. num_envs=16")
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        if not isinstance(copy, bool):
            raise ConfigError(
                f"copy must be True or False, got {copy!r}",
                "copy=False reuses two output buffers (fast), copy=True returns fresh arrays",
            )
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_observation_space, self.single_action_space = self._open(
            env_kwargs, progress=progress, reuse_buffers=not copy
        )
        self._glimpse_shape = self.single_observation_space["glimpses"].shape
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # per sub-env: its seeded image order [B, N] (drawn at its first / seeded reset) and cursor [B]
        n = len(self.store)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._orders = np.zeros((self.num_envs, n), dtype=np.int32 if n < 2**31 else np.int64)
        self._cursor = np.zeros(self.num_envs, dtype=np.int64)
        self._index: np.ndarray | None = None  # [B] current images
        self._ids = np.asarray(self.store.image_ids, dtype=object)  # [N]
        self._sizes = self.store.image_sizes  # [N, 2] (w, h), read once

    @property
    def copy(self) -> bool:
        """Whether every step returns fresh glimpse arrays (see the class docstring); settable."""
        return not self.episodes.reuse_buffers

    @copy.setter
    def copy(self, value: bool) -> None:
        self.episodes.reuse_buffers = not value

    # -- Gymnasium VectorEnv API ---------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None) -> tuple[ObsDict, dict]:
        """Start B new episodes; returns the step-0 observations and ``{"image_id": [B], "_image_id": [B]}``."""
        b, n = self.num_envs, len(self.store)
        if isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))
            seeds: list[int | None] = [int(seed) + i for i in range(b)]
        else:
            seeds = [None] * b if seed is None else list(seed)
        if len(seeds) != b:
            raise ConfigError(f"got {len(seeds)} seeds for num_envs={b}", "pass one int, None, or a list of num_envs seeds")
        for i, s in enumerate(seeds):  # the only per-env loop: drawing the seeded orders (as GlimpseEnv.reset)
            if s is not None or self._rngs[i] is None:
                self._rngs[i] = rng = seeding.np_random(s)[0]
                self._orders[i] = rng.permutation(n)
                self._cursor[i] = 0
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None and not np.all(mask):
            raise ConfigError(
                "GlimpseVectorEnv cannot reset only some sub-envs (reset_mask)",
                "its episodes run in lockstep: reset all of them",
            )
        if "index" in options:
            given = options["index"]
            values = list(given) if isinstance(given, (list, tuple, np.ndarray)) else [given] * b
            if len(values) != b:
                raise ConfigError(
                    f"options['index'] holds {len(values)} indices for num_envs={b}",
                    "pass one index or a list of num_envs indices",
                )
            index = np.asarray([check_index(v, n) for v in values], dtype=np.int64)
            return self._start(index)
        return self._start(self._next_index())

    def step(self, actions: Any) -> tuple[ObsDict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step all B episodes with ``actions [B, A]``.

        Returns ``(obs, rewards [B] float64, terminated [B] bool, truncated [B] bool, infos)``;
        see the class docstring for the infos at the end of the episodes.
        """
        if self._index is None:
            raise RuntimeError("call reset() before step()")
        a = check_actions(actions, cast(spaces.Box, self.action_space), self.mode)
        centers = torch.from_numpy(a[:, :2])
        scores = None if self.mode == "locate" else torch.from_numpy(a[:, 2:])
        glimpses, reward = self.episodes.step(centers, scores)
        rewards = reward.numpy().astype(np.float64)
        terminated = np.full(self.num_envs, self.episodes.done)
        truncated = np.zeros(self.num_envs, dtype=bool)
        if not self.episodes.done:
            assert glimpses is not None  # the episodes go on
            return self._obs(glimpses), rewards, terminated, truncated, {}
        final_obs, final_info = self._final()
        obs, infos = self._start(self._next_index())
        ones = np.ones(self.num_envs, dtype=bool)
        infos = {"final_obs": final_obs, "_final_obs": ones, "final_info": final_info, "_final_info": ones.copy(), **infos}
        return obs, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Release the feature cache's open files (``close()`` calls this)."""
        self.store.close()

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: B images ``[H, W, 3]`` uint8 of the current episodes' glimpses so far."""
        if self.render_mode != "rgb_array":
            return None
        if self._index is None:
            return tuple(np.zeros((64, 64, 3), dtype=np.uint8) for _ in range(self.num_envs))
        from rarl_gym.glimpse import boxes_to_pixels
        from rarl_gym.render import draw_glimpses

        frames = []
        for i, index in enumerate(self._index.tolist()):  # rendering only: per-env PIL drawing
            image = self.data.load_image(index)
            w, h = image.size
            frames.append(draw_glimpses(image, [boxes_to_pixels(b[i], w, h).numpy() for b in self.episodes.history]))
        return tuple(frames)

    # -- helpers -------------------------------------------------------------------------------
    def _next_index(self) -> np.ndarray:
        """``[B]`` the next image of each sub-env's order (vectorised), advancing the cursors."""
        index = self._orders[np.arange(self.num_envs), self._cursor].astype(np.int64)
        self._cursor = (self._cursor + 1) % self._orders.shape[1]
        return index

    def _start(self, index: np.ndarray) -> tuple[ObsDict, dict]:
        self._index = index
        maps = self.episodes.map_buffer((len(index), self.store.channels, *self.store.map_size))
        feats, labels = self.store.read_into(index, maps)  # [B, C, H, W] channels-last, [B, L]
        glimpses = self.episodes.reset(feats, labels, torch.from_numpy(index))
        return self._obs(glimpses), {"image_id": self._ids[index], "_image_id": np.ones(self.num_envs, dtype=bool)}

    def _obs(self, glimpses: torch.Tensor) -> ObsDict:
        step = min(self.episodes.t, self.episodes.num_steps)
        obs: ObsDict = {
            "glimpses": glimpses.numpy().astype(np.float32, copy=False),
            "step": np.full(self.num_envs, step, dtype=np.int64),
        }
        if self.episodes.overview is not None:
            obs["overview"] = self.episodes.overview.numpy().copy()
        return obs

    def _final(self) -> tuple[np.ndarray, dict]:
        """The ended episodes' ``final_obs`` (object array ``[B]``) and batched ``final_info``."""
        b, ep = self.num_envs, self.episodes
        assert self._glimpse_shape is not None  # a Box's shape
        zeros = np.zeros((b, *self._glimpse_shape), dtype=np.float32)
        final_obs = np.empty(b, dtype=object)
        final_obs[:] = [
            {
                "glimpses": zeros[i],
                "step": ep.num_steps,
                **({} if ep.overview is None else {"overview": ep.overview[i].numpy()}),
            }
            for i in range(b)
        ]
        wh = torch.from_numpy(self._sizes[self._index]).to(torch.float32)  # [B, 2]
        boxes = boxes_to_pixels(torch.stack(ep.history, dim=1), wh[:, 0], wh[:, 1])  # [B, T, K, 4] pixels
        info = {
            "labels": self.store.labels[self._index],  # fancy indexing copies
            "scores": ep.fused.numpy().copy(),
            "boxes": boxes.numpy(),
            "centers": torch.stack(ep.centers, dim=1).numpy(),  # [B, T, 2]
            "image_id": self._ids[self._index],
        }
        for key in list(info):
            info[f"_{key}"] = np.ones(b, dtype=bool)
        return final_obs, info


__all__ = ["GlimpseVectorEnv"]

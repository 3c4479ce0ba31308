"""``TorchGlimpseVectorEnv``: the vector env whose episodes stay on a torch device.

:class:`envs.vector_env.GlimpseVectorEnv` returns numpy arrays: on a GPU every step would copy the
``[B, K, C, s, s]`` glimpses from the device to the host and a policy would copy them back. This
variant keeps everything of the episodes on ``device`` as torch tensors: the split's cached feature
maps (``preload``: read once into device memory, float16, so that the autoreset is a gather on
the device instead of a read from the memory-mapped cache), the crops, the env's region scorer,
the fused scores, boxes and centres, the labels; ``step`` takes a torch (or numpy) action batch
and returns torch tensors on ``device``. Only the image bookkeeping (each sub-env's seeded image
order, a few ints per episode) and the image ids stay on the host.

``GlimpseVectorEnv(num_envs, device="cuda", ...)`` and ``gym.make_vec(id, num_envs=B,
vectorization_mode="vector_entry_point", device="cuda")`` build it; ``device="cpu"`` gives torch
tensors on the CPU with the numpy env's numbers exactly (same seed, same actions).
"""

from __future__ import annotations

import copy as copy_module
from typing import Any

import numpy as np
import torch

from envs.vector_env import GlimpseVectorEnv
from rarl_gym.device import pick_device
from rarl_gym.errors import ActionError, ConfigError

TensorDict = dict[str, torch.Tensor]

#: Images per chunk when ``preload`` copies the cache onto the device.
_PRELOAD_CHUNK = 256


class TorchGlimpseVectorEnv(GlimpseVectorEnv):
    """:class:`envs.vector_env.GlimpseVectorEnv` with its episodes and outputs as torch tensors on ``device``.

    ``TorchGlimpseVectorEnv(num_envs, device="auto", preload=None, render_mode=None, progress=True,
    copy=True, **env_kwargs)``; ``device``: ``"auto"`` (CUDA when there is a GPU), ``"cpu"``,
    ``"cuda[:N]"``; ``preload`` (default: True off the CPU): hold the split's feature maps on the
    device (float16, ``N x C x H x W x 2`` bytes: 0.64 GB for VOC07 train at 320 px), else read
    each episode's B maps from the cache and copy them over.

    The API is the numpy env's (spaces, seeding, image order, ``options={"index": ...}``,
    same-step autoreset) with torch tensors on ``device`` in place of arrays:

    * ``reset`` -> ``({"glimpses": [B, K, C, s, s] float32, "step": [B] int64}, infos)``;
    * ``step(actions [B, A])`` (a tensor on any device, or an array; validated as the numpy env
      does, :class:`rarl_gym.errors.ActionError`) -> ``(obs, rewards [B] float32, terminated [B]
      bool, truncated [B] bool, infos)``;
    * at the end of the episodes ``infos["final_info"]`` holds ``labels [B, L]`` int8,
      ``scores [B, L]``, ``boxes [B, T, K, 4]`` (pixels), ``centers [B, T, 2]`` as tensors and
      ``image_id [B]`` (a numpy object array, as ``infos["image_id"]``); ``infos["final_obs"]``
      is one batched dict (zero glimpses, a view of one zero tensor; ``step`` = T) instead of the
      numpy env's object array of B dicts. The ``_key`` masks are numpy booleans.

    ``copy`` as in the numpy env: ``copy=False`` writes the glimpses into two device buffers used in
    turn (an observation stays valid until the step after next).
    """

    def __init__(
        self,
        num_envs: int,
        render_mode: str | None = None,
        progress: bool = True,
        copy: bool = True,
        device: str | torch.device = "auto",
        preload: bool | None = None,
        **env_kwargs: Any,
    ):
        self.device = pick_device(str(device))
        if preload is not None and not isinstance(preload, bool):
            raise ConfigError(f"preload must be True, False or None, got {preload!r}", "leave it out (None: True off the CPU)")
        super().__init__(num_envs, render_mode=render_mode, progress=progress, copy=copy, **env_kwargs)
        ep = self.episodes
        if ep.scorer is not None:  # a private copy: the source may hand the same scorer to other envs
            ep.scorer = copy_module.deepcopy(ep.scorer).to(self.device).eval().requires_grad_(False)
        self.preload = self.device.type != "cpu" if preload is None else preload
        self._labels_t = torch.from_numpy(np.asarray(self.store.labels)).to(self.device)  # [N, L] int8
        self._sizes_t = torch.from_numpy(self._sizes).to(self.device, torch.float32)  # [N, 2] (w, h)
        self._all_maps = self._load_maps() if self.preload else None  # [N, C, H, W] float16 channels-last

    def _load_maps(self) -> torch.Tensor:
        """The split's feature maps on the device, read through the cache's checked reader."""
        n, c, (h, w) = len(self.store), self.store.channels, self.store.map_size
        maps = torch.empty((n, c, h, w), dtype=torch.float16, device=self.device).contiguous(memory_format=torch.channels_last)
        staging = torch.empty((min(n, _PRELOAD_CHUNK), c, h, w), dtype=torch.float16).contiguous(
            memory_format=torch.channels_last
        )
        for lo in range(0, n, _PRELOAD_CHUNK):
            index = np.arange(lo, min(n, lo + _PRELOAD_CHUNK))
            chunk, _ = self.store.read_into(index, staging[: len(index)])
            maps[lo : lo + len(index)].copy_(chunk)
        return maps

    # -- the API, on the device ------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[TensorDict, torch.Tensor, torch.Tensor, torch.Tensor, dict]:  # type: ignore[override]
        """Step all B episodes with ``actions [B, A]``; see the class docstring for what comes back."""
        if self._index is None:
            raise RuntimeError("call reset() before step()")
        a = check_actions_torch(actions, tuple(self.action_space.shape or ()), self.mode, self.device)
        scores = None if self.mode == "locate" else a[:, 2:]
        glimpses, reward = self.episodes.step(a[:, :2], scores)
        b = self.num_envs
        rewards = reward.to(torch.float32)
        terminated = torch.full((b,), self.episodes.done, dtype=torch.bool, device=self.device)
        truncated = torch.zeros(b, dtype=torch.bool, device=self.device)
        if not self.episodes.done:
            assert glimpses is not None  # the episodes go on: the next glimpses
            return self._obs(glimpses), rewards, terminated, truncated, {}
        final_obs, final_info = self._final()
        obs, infos = self._start(self._next_index())
        ones = np.ones(b, dtype=bool)
        infos = {"final_obs": final_obs, "_final_obs": ones, "final_info": final_info, "_final_info": ones.copy(), **infos}
        return obs, rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: B images ``[H, W, 3]`` uint8 (drawn on the host)."""
        if self.render_mode != "rgb_array" or self._index is None:
            return super().render()
        history = self.episodes.history
        self.episodes.history = [b.cpu() for b in history]
        try:
            return super().render()
        finally:
            self.episodes.history = history

    # -- helpers ---------------------------------------------------------------------------------
    def _start(self, index: np.ndarray) -> tuple[TensorDict, dict]:  # type: ignore[override]
        self._index = index
        b, c, (h, w) = len(index), self.store.channels, self.store.map_size
        maps = self.episodes.map_buffer((b, c, h, w), self.device)
        index_t = torch.from_numpy(index).to(self.device)
        if self._all_maps is not None:
            maps.copy_(self._all_maps.index_select(0, index_t))
            labels = self._labels_t.index_select(0, index_t)
        else:
            maps, labels = self.store.read_into(index, maps)
        glimpses = self.episodes.reset(maps, labels, index_t)
        return self._obs(glimpses), {"image_id": self._ids[index], "_image_id": np.ones(self.num_envs, dtype=bool)}

    def _obs(self, glimpses: torch.Tensor) -> TensorDict:  # type: ignore[override]
        step = min(self.episodes.t, self.episodes.num_steps)
        obs = {
            "glimpses": glimpses if glimpses.dtype == torch.float32 else glimpses.to(torch.float32),
            "step": torch.full((self.num_envs,), step, dtype=torch.int64, device=self.device),
        }
        overview = getattr(self.episodes, "overview", None)  # [B, C, o, o] (env kwarg overview > 0)
        if overview is not None:
            obs["overview"] = overview.clone()
        return obs

    def _final(self) -> tuple[TensorDict, dict]:  # type: ignore[override]
        b, ep = self.num_envs, self.episodes
        index_t = torch.from_numpy(self._index).to(self.device)
        shape = tuple(self._glimpse_shape or ())
        zeros = torch.zeros((1, *shape), device=self.device).expand(b, *shape)
        final_obs = {"glimpses": zeros, "step": torch.full((b,), ep.num_steps, dtype=torch.int64, device=self.device)}
        overview = getattr(ep, "overview", None)
        if overview is not None:
            final_obs["overview"] = overview.clone()
        wh = self._sizes_t.index_select(0, index_t)  # [B, 2]
        scale = wh.repeat(1, 2)[:, None, None, :] / 2.0  # [B, 1, 1, 4] = (w, h, w, h) / 2
        info: dict[str, Any] = {
            "labels": self._labels_t.index_select(0, index_t),
            "scores": ep.fused.clone(),
            "boxes": (torch.stack(ep.history, dim=1) + 1.0) * scale,  # [B, T, K, 4] pixels
            "centers": torch.stack(ep.centers, dim=1),  # [B, T, 2]
            "image_id": self._ids[self._index],
        }
        for key in list(info):
            info[f"_{key}"] = np.ones(b, dtype=bool)
        return final_obs, info


def check_actions_torch(actions: Any, shape: tuple[int, ...], mode: str, device: torch.device) -> torch.Tensor:
    """:func:`envs.common.check_actions` for a batch ``[B, A]`` as a float32 tensor on ``device``:
    the same refusals (:class:`ActionError` for a wrong shape, NaN / inf, a value outside
    ``[-1, 1]`` beyond 1e-6, naming the sub-envs), one host sync per call; returns it clipped."""
    try:
        a = torch.as_tensor(actions, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ActionError(f"the actions {actions!r} are not numeric", "pass a float tensor or array") from err
    if tuple(a.shape) != tuple(shape):
        raise ActionError(
            f"the actions have shape {tuple(a.shape)}, the action space wants {tuple(shape)}",
            "pass one row per sub-env: the centre (x, y)" + ("" if mode == "locate" else " followed by the L label scores"),
        )
    bad = ~torch.isfinite(a).all(dim=-1)  # [B]
    out = ((a < -1.0 - 1e-6) | (a > 1.0 + 1e-6)).any(dim=-1) & ~bad
    if bool((bad | out).any()):  # the one sync
        if bad.any():
            rows = torch.nonzero(bad).flatten().tolist()
            raise ActionError(
                f"the actions of sub-env(s) {rows} contain NaN or inf: {a[bad]}", "check the policy's output for NaN"
            )
        rows = torch.nonzero(out).flatten().tolist()
        raise ActionError(
            f"the actions of sub-env(s) {rows} are outside the action space [-1, 1]: {a[out]}",
            "clip them (a.clamp(-1, 1) or gymnasium.wrappers.vector.ClipAction)",
        )
    return a.clamp(-1.0, 1.0)


def make_torch_vec(env_id: str, num_envs: int, device: str = "auto", **kwargs: Any) -> TorchGlimpseVectorEnv:
    """``TorchGlimpseVectorEnv`` of a registered id (its registered kwargs, then ``kwargs``)."""
    import gymnasium as gym

    return TorchGlimpseVectorEnv(num_envs, device=device, **{**gym.spec(env_id).kwargs, **kwargs})


__all__ = ["TorchGlimpseVectorEnv", "check_actions_torch", "make_torch_vec"]

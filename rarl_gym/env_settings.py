"""The settings of a glimpse env, validated in one place.

``GlimpseEnv(**kwargs)``, the RARL trainer (``--env ID`` plus overrides) and the evaluation
script all build an :class:`EnvSettings`, so an env id means the same features, anchors and
reward everywhere, and a wrong kwarg fails the same way everywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import gymnasium as gym
import numpy as np

from rarl_gym.errors import ConfigError, check_choice, check_names
from rarl_gym.features.store import MIN_INPUT_SIZE
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES
from rarl_gym.reward import ADAPTIVE
from rarl_gym.sources import FeatureSource

MODES = ("locate", "joint")
#: Env kwargs that are not settings: how an env reports, not what it computes (``gym.make(..., progress=True)``).
NOT_SETTINGS = ("progress",)
_EXAMPLES = {"backbone": "efficientnet_lite0", "split": "train", "root": "data/voc07", "cache_dir": "~/.cache/rarl_gym"}


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    """An ``int`` (numpy's too), not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """A real number (numpy's too), not a ``bool``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def settings_kwargs(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` without the kwargs that are not settings (:data:`NOT_SETTINGS`: ``progress``):
    what a run records and :meth:`EnvSettings.from_kwargs` accepts."""
    return {k: v for k, v in env_kwargs.items() if k not in NOT_SETTINGS}


def check_index(value: object, n: int, name: str = "options['index']") -> int:
    """``value`` as an image index of a split of ``n`` images: an integral number in ``[0, n)``
    (``2.0`` is accepted, ``2.7``, ``None`` or ``"2"`` are a :class:`ConfigError`)."""
    if _is_int(value):
        index = int(value)
    elif _is_number(value) and float(value).is_integer():
        index = int(value)
    else:
        raise ConfigError(f"{name}={value!r} is not an integer image index", f"use an int with 0 <= index < {n}")
    if not 0 <= index < n:
        raise ConfigError(f"{name}={index} is outside the split", f"use 0 <= index < {n}")
    return index


@dataclass(frozen=True)
class EnvSettings:
    """See :class:`envs.glimpse_env.GlimpseEnv` (section Arguments) for each field."""

    dataset: str = "shapes"
    split: str | None = None
    root: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: int | None = None
    glimpse_size: int = 3
    num_steps: int = 5
    mode: str = "locate"
    k: int | str = ADAPTIVE
    fuse_whole_image: bool = False
    overview: int = 0
    scales: tuple[float, ...] = DEFAULT_SCALES
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    cache_dir: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        self._check_overview()
        if not (_is_int(self.glimpse_size) and 1 <= self.glimpse_size <= 32):
            raise ConfigError(f"glimpse_size must be an int from 1 to 32, got {self.glimpse_size!r}", "use 1, 3 or 7")
        if not (_is_int(self.num_steps) and self.num_steps >= 1):
            raise ConfigError(f"num_steps must be a positive int, got {self.num_steps!r}", "use e.g. 5 (the paper's T)")
        if not (self.k == ADAPTIVE or (_is_int(self.k) and self.k >= 1)):
            raise ConfigError(f"k must be 'adaptive' or a positive int, got {self.k!r}", "use k='adaptive' or e.g. k=3")
        if self.input_size is not None and not (_is_int(self.input_size) and self.input_size >= MIN_INPUT_SIZE):
            raise ConfigError(
                f"input_size must be an int of at least {MIN_INPUT_SIZE} pixels (or None), got {self.input_size!r}",
                "use e.g. 224, 256 or 320",
            )
        for name in ("backbone", "split", "root", "cache_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, value := os.fspath(value))
            if not (isinstance(value, str) and value) and not (value is None and name != "backbone"):
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}", f"e.g. {name}={_EXAMPLES[name]!r}")
        for name in ("pretrained", "fuse_whole_image"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name} must be True or False, got {getattr(self, name)!r}", f"pass {name}=True or {name}=False"
                )
        for name in ("scales", "ratios"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(
                    f"{name} must be a non-empty list of positive numbers, got {values!r}",
                    f"e.g. {name}={list(getattr(EnvSettings, name))}",
                )
            if not all(_is_number(v) and math.isfinite(v) and v > 0 for v in values):
                raise ConfigError(
                    f"{name} must hold finite positive numbers, got {values!r}",
                    f"e.g. {name}={list(getattr(EnvSettings, name))}",
                )
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if not isinstance(self.dataset_kwargs, (dict, type(None))):
            raise ConfigError(
                f"dataset_kwargs must be a dict, got {self.dataset_kwargs!r}",
                "e.g. dataset_kwargs={'num_images': 200} (Shapes)",
            )
        object.__setattr__(self, "dataset_kwargs", dict(self.dataset_kwargs or {}))
        if self.split is None:
            object.__setattr__(self, "split", self.source.train_split)

    def _check_overview(self) -> None:
        if not (_is_int(self.overview) and 0 <= self.overview <= 64):
            raise ConfigError(
                f"overview must be an int from 0 (off) to 64, got {self.overview!r}",
                "use 0, a small grid such as 7, or the feature map's side (10 at 320 px) for the map itself",
            )

    @property
    def source(self) -> FeatureSource:
        return FeatureSource(
            dataset=self.dataset,
            root=self.root,
            backbone=self.backbone,
            pretrained=self.pretrained,
            input_size=self.input_size,
            cache_dir=self.cache_dir,
            dataset_kwargs=self.dataset_kwargs,
        )

    @property
    def num_regions(self) -> int:
        return len(self.scales) * len(self.ratios)

    def rollout_kwargs(self) -> dict[str, Any]:
        """The episode shape: what :func:`agents.rarl.rollout.rollout` needs."""
        return {
            "num_steps": self.num_steps,
            "glimpse_size": self.glimpse_size,
            "scales": self.scales,
            "ratios": self.ratios,
            "k": self.k,
            "fuse_whole_image": self.fuse_whole_image,
        }

    def to_dict(self) -> dict[str, Any]:
        """The settings as env kwargs (tuples as lists), a deep copy: editing it leaves the settings alone."""
        return copy.deepcopy(
            {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}
        )

    def replace(self, **changes: Any) -> EnvSettings:
        return EnvSettings.from_kwargs(**{**self.to_dict(), **changes})

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvSettings:
        """Build from env kwargs; an unknown kwarg is a :class:`ConfigError` with a suggestion."""
        valid = [f.name for f in dataclasses.fields(cls)]
        check_names(kwargs, valid, "unknown env argument(s)", f"valid arguments: {', '.join(valid)}")
        return cls(**kwargs)

    @classmethod
    def from_env_id(cls, env_id: str, overrides: Mapping[str, Any] | None = None) -> EnvSettings:
        """The registered kwargs of ``env_id`` with ``overrides`` (env kwargs) on top; kwargs that are
        not settings (``progress``, :func:`settings_kwargs`) are ignored."""
        import rarl_gym  # registers the ids

        try:
            spec = gym.spec(env_id)
        except gym.error.Error as err:
            raise ConfigError(f"unknown env id {env_id!r}", f"use one of {', '.join(rarl_gym.ENV_IDS)}") from err
        return cls.from_kwargs(**settings_kwargs({**spec.kwargs, **(overrides or {})}))


__all__ = ["MODES", "NOT_SETTINGS", "EnvSettings", "check_index", "settings_kwargs"]

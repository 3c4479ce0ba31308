"""The settings of a glimpse env, validated in one place.

``GlimpseEnv(**kwargs)``, the RARL trainer (``--env ID`` plus overrides) and the evaluation
script all build an :class:`EnvSettings`, so an env id means the same features, anchors and
reward everywhere, and a wrong kwarg fails the same way everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import gymnasium as gym

from rarl_gym.errors import ConfigError, check_choice, check_names
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES
from rarl_gym.reward import ADAPTIVE
from rarl_gym.sources import FeatureSource

MODES = ("locate", "joint")


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
    scales: tuple[float, ...] = DEFAULT_SCALES
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    cache_dir: str | None = None
    dataset_kwargs: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        if not (isinstance(self.glimpse_size, int) and self.glimpse_size >= 1):
            raise ConfigError(f"glimpse_size must be a positive int, got {self.glimpse_size!r}", "use 1, 3 or 7")
        if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
            raise ConfigError(f"num_steps must be a positive int, got {self.num_steps!r}", "use e.g. 5 (the paper's T)")
        if not (self.k == ADAPTIVE or (isinstance(self.k, int) and not isinstance(self.k, bool) and self.k >= 1)):
            raise ConfigError(f"k must be 'adaptive' or a positive int, got {self.k!r}", "use k='adaptive' or e.g. k=3")
        for name in ("scales", "ratios"):
            values = tuple(getattr(self, name))
            if not values or any(not (float(v) > 0) for v in values):
                raise ConfigError(f"{name} must be a non-empty list of positive numbers, got {values!r}", f"e.g. {name}={getattr(EnvSettings, name)}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        object.__setattr__(self, "dataset_kwargs", dict(self.dataset_kwargs or {}))
        if self.split is None:
            object.__setattr__(self, "split", self.source.train_split)

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

    def rollout_kwargs(self) -> dict:
        """The episode shape: what :func:`agents.rarl.rollout.rollout` needs."""
        return {
            "num_steps": self.num_steps,
            "glimpse_size": self.glimpse_size,
            "scales": self.scales,
            "ratios": self.ratios,
            "k": self.k,
            "fuse_whole_image": self.fuse_whole_image,
        }

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> EnvSettings:
        return EnvSettings.from_kwargs(**{**self.to_dict(), **changes})

    @classmethod
    def from_kwargs(cls, **kwargs) -> EnvSettings:
        """Build from env kwargs; an unknown kwarg is a :class:`ConfigError` with a suggestion."""
        valid = [f.name for f in dataclasses.fields(cls)]
        check_names(kwargs, valid, "unknown env argument(s)", f"valid arguments: {', '.join(valid)}")
        return cls(**kwargs)

    @classmethod
    def from_env_id(cls, env_id: str, overrides: dict | None = None) -> EnvSettings:
        """The registered kwargs of ``env_id`` with ``overrides`` on top."""
        import rarl_gym  # noqa: F401  (registers the ids)

        try:
            spec = gym.spec(env_id)
        except gym.error.Error as err:
            raise ConfigError(f"unknown env id {env_id!r}", f"use one of {', '.join(rarl_gym.ENV_IDS)}") from err
        return cls.from_kwargs(**{**spec.kwargs, **(overrides or {})})


__all__ = ["MODES", "EnvSettings"]

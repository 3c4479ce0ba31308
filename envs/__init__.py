"""Gymnasium environments of rarl-gym (registered by ``import rarl_gym``)."""

from envs.glimpse_env import GlimpseEnv

__all__ = ["GlimpseEnv"]

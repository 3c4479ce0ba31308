"""Gymnasium environments of rarl-gym (registered by ``import rarl_gym``)."""

from envs.glimpse_env import GlimpseEnv
from envs.vector_env import GlimpseVectorEnv

__all__ = ["GlimpseEnv", "GlimpseVectorEnv"]

"""The paper's agent: recurrent attention-aware module trained by REINFORCE + classification loss."""

from agents.rarl.loss import classification_loss, rarl_loss
from agents.rarl.model import SIGMA, RARLAgent
from agents.rarl.policy import RARLEnvPolicy
from agents.rarl.rollout import rollout

__all__ = ["SIGMA", "RARLAgent", "RARLEnvPolicy", "classification_loss", "rarl_loss", "rollout"]

"""The oracle of placement: for each image, the best of many centre sequences under a trained model.

"Best" means the highest log-likelihood of the image's true labels
(:func:`agents.rarl.loss.label_log_likelihood`), so the oracle needs the labels: its probabilities
are the headroom row of the comparison table, what any policy could get from this classifier by
looking in the right places (an upper bound, not a method). Imitating its sequences on the training
images was tried and measured worse (docs/design.md, lever G).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.rarl.loss import label_log_likelihood
from agents.rarl.model import RARLAgent
from agents.rarl.rollout import rollout
from rarl_gym.env_settings import EnvSettings
from rarl_gym.features.store import FeatureStore
from rarl_gym.glimpse import FIXED_GRID


def _candidate_sequences(
    agent: RARLAgent,
    feats: torch.Tensor,
    labels: torch.Tensor,
    settings: EnvSettings,
    samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``[B, S, T, 2]``: the learned policy's mode, the fixed grid and ``samples - 2`` uniformly random sequences."""
    b, steps, device = feats.shape[0], settings.num_steps, feats.device
    mode = rollout(agent, feats, labels, **settings.rollout_kwargs(), centers="learned", sample=False).centers  # [B, T, 2]
    grid = torch.tensor([FIXED_GRID[t % len(FIXED_GRID)] for t in range(steps)], device=device).expand(b, steps, 2)
    rand = torch.rand(b, max(samples - 2, 0), steps, 2, generator=generator, device=device) * 2 - 1
    return torch.cat([mode[:, None], grid[:, None], rand], dim=1)


@torch.no_grad()
def _best_of(
    agent: RARLAgent,
    feats: torch.Tensor,
    labels: torch.Tensor,
    settings: EnvSettings,
    samples: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image of the batch: the fused scores ``[B, L]`` of head 0 and the centres ``[B, T, 2]``
    of its best sequence."""
    given = _candidate_sequences(agent, feats, labels, settings, samples, generator)  # [B, S, T, 2]
    b, s = given.shape[:2]
    repeated = labels.repeat_interleave(s, 0)
    out = rollout(
        agent,
        feats,
        repeated,
        **settings.rollout_kwargs(),
        centers="given",
        given_centers=given.flatten(0, 1),
        sample=False,
        repeat=s,
    )
    ll = label_log_likelihood(out.fused, repeated, agent.output).view(b, s)
    best = ll.argmax(1)
    return out.fused.view(b, s, -1)[torch.arange(b), best], given[torch.arange(b), best]


@torch.no_grad()
def oracle(
    agent: RARLAgent,
    store: FeatureStore,
    settings: EnvSettings,
    *,
    samples: int = 64,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[np.ndarray, torch.Tensor]:
    """Each image's best of ``samples`` centre sequences (whole image, one view): the label
    probabilities of head 0 there ``[N, L]`` and the sequence ``[N, T, 2]``.

    The candidates are the learned policy's mode, the fixed grid and ``samples - 2`` uniformly
    random sequences. "Best" needs the labels, so the probabilities are the headroom row of the
    comparison table (an upper bound on what any policy could get from this classifier, not a
    method).
    """
    was_training = agent.training
    agent.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    probs, centres = [], []
    for lo in range(0, len(store), batch_size):
        index = torch.arange(lo, min(lo + batch_size, len(store)), device=device)
        feats, labels = store.batch(index.cpu().numpy(), device)
        fused, best = _best_of(agent, feats, labels, settings, samples, generator)
        probs.append(agent.probabilities(fused).cpu())
        centres.append(best.cpu())
    agent.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(centres)


__all__ = ["oracle"]

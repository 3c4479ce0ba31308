"""Centre policies that look where the labels are: the training-free peak policy, the learned peak
locator (smoothed peaks, inhibition of return), and the CSRA rival."""

import math

import numpy as np
import pytest
import torch

from agents.rarl import RARLAgent, rollout
from agents.rarl.loss import rarl_loss


def _agent(locator="peak", num_classes=3, channels=3, **kw):
    """Channel c carries class c: the region head is the identity (bias 0), so a class's logit map is
    its channel."""
    torch.manual_seed(0)
    agent = RARLAgent(
        channels,
        num_classes,
        glimpse_size=1,
        embed_dim=8,
        hidden_dim=8,
        dropout=0.0,
        head="linear",
        locator=locator,
        output="sigmoid",
        **kw,
    ).eval()
    with torch.no_grad():
        agent.region_head.weight.zero_()
        agent.region_head.bias.zero_()
        for c in range(num_classes):
            agent.region_head.weight[c, c] = 1.0
    return agent


def _cell(i, j, side=10):
    """Centre of cell (row i, column j) of a side x side map in [-1, 1] coordinates: (x, y)."""
    return [(j + 0.5) / side * 2 - 1, (i + 0.5) / side * 2 - 1]


def test_peak_policy_looks_at_the_peaks_of_the_classes_in_order_of_their_height():
    agent = _agent(locator="linear")
    feats = torch.zeros(1, 3, 10, 10)
    feats[0, 0, 1, 2] = 3.0  # class 0 peaks at row 1, column 2
    feats[0, 1, 8, 7] = 5.0  # class 1, higher, at row 8, column 7
    feats[0, 2] = -1.0
    feats[0, 2, 4, 4] = 1.0  # class 2, lowest
    out = rollout(agent, feats, torch.ones(1, 3), num_steps=3, centers="peak", sample=False)
    assert torch.allclose(out.centers[0], torch.tensor([_cell(8, 7), _cell(1, 2), _cell(4, 4)]), atol=1e-6)


def test_peak_locator_smooths_the_peaks_and_never_looks_twice():
    """Untrained, the peak locator looks at the most likely class's smoothed peak, then at the next
    class whose peak is elsewhere: class 1 shares class 0's peak and is skipped (inhibition of return)."""
    agent = _agent()
    feats = torch.zeros(1, 3, 10, 10)
    feats[0, 0, 2, 2] = 6.0  # class 0: a lone spike at (2, 2) ...
    feats[0, 0, 6:9, 6:9] = 4.0  # ... and a 3 x 3 plateau around (7, 7): the smoothed peak
    feats[0, 1, 6:9, 6:9] = 3.5  # class 1 at the same place
    feats[0, 2, 2:5, 2:5] = 1.0  # class 2 around (3, 3)
    out = rollout(agent, feats, torch.ones(1, 3), num_steps=2, sample=False)
    assert torch.allclose(out.centers[0], torch.tensor([_cell(7, 7), _cell(3, 3)]), atol=1e-6)


def test_peak_locator_log_prob_is_the_mixture_density_over_the_unvisited_peaks():
    agent = _agent()
    feats = torch.randn(2, 3, 10, 10)
    out = rollout(agent, feats, torch.ones(2, 3), num_steps=1, generator=torch.Generator().manual_seed(0))
    from agents.rarl.policies import EpisodeBatch, class_peaks

    ep = EpisodeBatch(
        agent,
        agent.logit_maps(feats),
        1 + agent.folds,
        None,
        None,
        1,
        (0.1,),
        (1.0,),
        False,
        False,
        None,
        None,
        2,
        torch.device("cpu"),
    )
    peaks, heights = class_peaks(ep, smooth=3)
    weights = torch.softmax(4.0 * heights, 1)  # untrained logits: 4 x the height
    loc = out.centers[:, 0]
    for b in range(2):
        density = sum(
            float(weights[b, c])
            * math.exp(-((loc[b] - peaks[b, c]) ** 2).sum().item() / (2 * 0.11**2))
            / (2 * math.pi * 0.11**2)
            for c in range(3)
        )
        assert out.log_prob[b, 0].item() == pytest.approx(math.log(density), rel=1e-4)


def test_reinforce_trains_the_peak_locators_class_preferences():
    agent = _agent().train()
    feats, labels = torch.randn(4, 3, 10, 10), torch.tensor([[1, 0, 0]] * 4)
    labels = labels.repeat_interleave(2, 0)
    out = rollout(agent, feats, labels, num_steps=2, repeat=2, generator=torch.Generator().manual_seed(1))
    rarl_loss(out, labels, output="sigmoid", rl_return="likelihood", samples=2)["reinforce"].backward()
    assert agent.loc_class.grad.abs().sum() > 0 and agent.loc_height.grad.abs() > 0


def test_peak_needs_the_linear_head():
    agent = RARLAgent(3, 2, embed_dim=8, hidden_dim=8)
    with pytest.raises(ValueError, match="linear head"):
        rollout(agent, torch.randn(1, 3, 4, 4), torch.ones(1, 2), centers="peak")
    with pytest.raises(ValueError, match="peak locator reads the linear head"):
        RARLAgent(3, 2, locator="peak")


def test_csra_head_is_mean_plus_lambda_max():
    from rarl_gym.csra import CSRAHead

    head = CSRAHead(2, 1, lam=0.5)
    with torch.no_grad():
        head.head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.head.bias.zero_()
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert head(maps).item() == pytest.approx(3.0 + 0.5 * 6.0)


def test_csra_chooses_lambda_on_the_training_split_and_learns(small_kwargs):
    from rarl_gym.csra import CSRA_LAMBDAS, fit_csra, predict_csra
    from rarl_gym.env_settings import EnvSettings
    from rarl_gym.metrics import mean_average_precision

    settings = EnvSettings.from_env_id("RARL-Shapes-v0", small_kwargs)
    train = settings.source.open_split("train", progress=False)[1]
    test = settings.source.open_split("test", progress=False)[1]
    model = fit_csra(train, lambdas=(0.0, 1.0), epochs=300, lr=0.03)
    assert model.lam in CSRA_LAMBDAS
    probs = predict_csra(model, train)  # the tiny random backbone carries little: the fit learns its training images
    chance = mean_average_precision(np.random.default_rng(0).random(probs.shape), train.labels)
    assert mean_average_precision(probs, train.labels) > chance + 0.1
    probs = predict_csra(model, test)
    assert probs.shape == (len(test), len(test.classes))
    ten = predict_csra(model, test, views=10)
    assert ten.shape == probs.shape and not np.allclose(ten, probs)


def test_object_boxes_are_in_glimpse_coordinates(small_kwargs):
    from rarl_gym.data import make_dataset, object_boxes

    dataset = make_dataset("shapes", "test", **small_kwargs["dataset_kwargs"])
    objects = object_boxes(dataset)
    pixels, classes = dataset.boxes(0)
    boxes, cls = objects[0]
    assert len(objects) == len(dataset) and cls.tolist() == classes.tolist()
    assert boxes == pytest.approx(pixels / 64 * 2 - 1)
    assert (boxes >= -1).all() and (boxes <= 1).all()

"""The pieces that make attention pay (issue 8): the linear head, the map locator, cross-fitted
rewards, the leave-one-out baseline, the oracle and the windows baseline."""

import math

import numpy as np
import pytest
import torch

from agents.rarl import RARLAgent, rollout
from agents.rarl.loss import label_log_likelihood, rarl_loss
from agents.rarl.policies import candidate_centers, mixture_step
from rarl_gym.glimpse import crop, whole_image_boxes
from rarl_gym.windows import predict_windows, sliding_windows


def _agent(channels=6, num_classes=4, **kw):
    """A small agent with the linear head, the map locator and sigmoid outputs (seed 0), ``kw`` on top."""
    torch.manual_seed(0)
    return RARLAgent(
        channels,
        num_classes,
        **{
            "glimpse_size": 3,
            "embed_dim": 8,
            "hidden_dim": 8,
            "dropout": 0.0,
            "head": "linear",
            "locator": "map",
            "output": "sigmoid",
            "candidates": 4,
            "location_prior": "none",
            **kw,
        },
    )


def test_linear_head_scores_equal_the_head_on_region_means():
    """Cropping the logit maps (the rollout) and the head on the crop's mean (the env) agree."""
    agent = _agent(folds=2).eval()
    feats = torch.randn(2, 6, 7, 7)
    boxes = torch.tensor([[[-1.0, -1.0, 0.2, 0.5]] * 9, [[-0.3, -0.6, 0.9, 1.0]] * 9])
    via_maps = agent.region_logits(crop(agent.logit_maps(feats), boxes, 3))  # [B, K, 1+F, L]
    out = agent(crop(feats, boxes, 3), agent.initial_state(2))  # full-channel crops
    assert via_maps.shape == (2, 9, 3, 4)
    assert torch.allclose(out.scores, via_maps[:, :, 0], atol=1e-5)
    assert torch.allclose(out.fold_scores, via_maps[:, :, 1:], atol=1e-5)
    manual = (
        agent.region_head.weight[:4, :, 0, 0] @ crop(feats, boxes, 3).mean(dim=(-2, -1))[0, 0] + agent.region_head.bias[:4]
    )
    assert torch.allclose(out.scores[0, 0], manual, atol=1e-5)


def test_mixture_log_prob_is_the_mixture_density():
    positions = candidate_centers(3)
    assert positions.shape == (9, 2) and positions[0].tolist() == pytest.approx([-2 / 3, -2 / 3])
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 1.0, -2.0, 0.3]])
    loc, log_prob = mixture_step(logits, positions, 0.11, True, torch.Generator().manual_seed(0))
    weights = torch.softmax(logits[0], 0)
    density = sum(
        float(w) * math.exp(-((loc[0] - c) ** 2).sum().item() / (2 * 0.11**2)) / (2 * math.pi * 0.11**2)
        for w, c in zip(weights, positions)
    )
    assert log_prob.item() == pytest.approx(math.log(density), rel=1e-5)
    mode, zero = mixture_step(logits, positions, 0.11, False, None)
    assert mode[0].tolist() == positions[0].tolist() and zero.item() == 0.0


def test_map_locator_samples_follow_the_attention():
    """With all weight on one candidate the samples land within a few sigma of it."""
    positions = candidate_centers(4)
    logits = torch.full((2000, 16), -30.0)
    logits[:, 5] = 30.0
    loc, _ = mixture_step(logits, positions, 0.11, True, torch.Generator().manual_seed(1))
    assert torch.allclose(loc.mean(0), positions[5], atol=0.01)
    assert loc.std(0).tolist() == pytest.approx([0.11, 0.11], rel=0.1)


def test_map_locator_looks_where_the_head_gains():
    """A gain weight on the one class that lives in the top-left corner sends the mode there."""
    agent = _agent().eval()
    feats = torch.zeros(1, 6, 8, 8)
    feats[0, 0, :2, :2] = 5.0
    with torch.no_grad():
        agent.region_head.weight.zero_()
        agent.region_head.bias.zero_()
        agent.region_head.weight[0, 0] = 1.0  # class 0 = channel 0
        agent.loc_gain[0] = 10.0
    out = rollout(agent, feats, torch.tensor([[1, 0, 0, 0]]), glimpse_size=3, sample=False, num_steps=2)
    assert out.centers[0, 0].tolist() == pytest.approx([-0.75, -0.75])  # the top-left candidate of the 4 x 4 grid


def test_cross_fitted_heads_learn_only_out_of_fold_and_give_the_reward():
    agent = _agent(folds=2)
    feats, labels = torch.randn(4, 6, 6, 6), torch.tensor([[1, 0, 0, 1]] * 4)
    folds = torch.tensor([0, 1, 0, 1])
    out = rollout(agent, feats, labels, glimpse_size=3, generator=torch.Generator().manual_seed(0), fold_of=folds)
    assert out.fold_fused.shape == (4, 2, 4)
    losses = rarl_loss(out, labels, output="sigmoid", rl_return="likelihood", fold_of=folds)
    oof = out.fold_fused[torch.arange(4), folds].detach()
    assert losses["return"].item() == pytest.approx(label_log_likelihood(oof, labels, "sigmoid").mean().item())
    g1 = torch.autograd.grad(losses["cls"], agent.region_head.weight, retain_graph=True)[0][8:12]
    assert g1.abs().sum() > 0


def test_fold_head_gradient_ignores_its_own_fold():
    """Head f's classification gradient is the same whether or not fold f's images are in the batch."""
    agent = _agent(folds=2)
    feats, labels = torch.randn(4, 6, 6, 6), torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    folds = torch.tensor([0, 1, 0, 1])

    def head1_grad(index):
        agent.zero_grad()
        out = rollout(agent, feats[index], labels[index], glimpse_size=3, centers="grid", fold_of=folds[index])
        rarl_loss(out, labels[index], output="sigmoid", rl_return="likelihood", fold_of=folds[index])["cls"].backward()
        return agent.region_head.weight.grad[8:12].clone() * len(
            index
        )  # the loss averages over (image, other-fold head) pairs

    # the head of fold 1 (rows 8:12) trains on fold 0 (images 0, 2): fold 1's images add nothing to it
    assert torch.allclose(head1_grad([0, 2]), head1_grad([0, 1, 2, 3]), atol=1e-6)


def test_leave_one_out_baseline():
    """With 3 episodes per image the advantage is the return minus the mean of the other two."""
    from agents.rarl.rollout import Rollout

    fused = torch.tensor([[3.0, -3.0], [-3.0, 3.0], [0.0, 0.0]])  # returns: high, low, middle
    labels = torch.tensor([[1, 0]] * 3)
    log_prob = torch.ones(3, 2, requires_grad=True)
    out = Rollout(
        fused=fused,
        reward=torch.zeros(3),
        log_prob=log_prob,
        baseline=torch.zeros(3, 2),
        centers=torch.zeros(3, 2, 2),
        regions=torch.zeros(3, 18, 4),
        giver=torch.zeros(3, 2, dtype=torch.long),
    )
    losses = rarl_loss(out, labels, output="sigmoid", rl_return="likelihood", samples=3)
    ret = label_log_likelihood(fused, labels, "sigmoid")
    advantage = ret - (ret.sum() - ret) / 2
    losses["reinforce"].backward()
    assert torch.allclose(log_prob.grad, -(advantage[:, None] / 3).expand(3, 2), atol=1e-6)


def test_label_log_likelihood_matches_bce_and_ignores_difficult():
    fused = torch.tensor([[1.0, -2.0, 0.5]])
    labels = torch.tensor([[1, 0, -1]])
    expected = -(torch.nn.functional.softplus(-torch.tensor(1.0)) + torch.nn.functional.softplus(torch.tensor(-2.0))) / 2
    assert label_log_likelihood(fused, labels, "sigmoid").item() == pytest.approx(expected.item())


def test_sliding_windows_cover_the_image():
    boxes = sliding_windows()
    assert boxes.shape == (102, 4)
    assert boxes[0].tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert boxes.min() >= -1.0 - 1e-6 and boxes.max() <= 1.0 + 1e-6
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # every map cell centre lies in some small window
    small = boxes[1:37]
    c = candidate_centers(10)
    inside = (
        (c[:, None, 0] >= small[:, 0])
        & (c[:, None, 0] <= small[:, 2])
        & (c[:, None, 1] >= small[:, 1])
        & (c[:, None, 1] <= small[:, 3])
    )
    assert inside.any(1).all()


class _Store:
    def __init__(self, feats, labels):
        self.features, self.labels = feats.numpy(), labels.numpy()

    def __len__(self):
        return len(self.features)

    def batch(self, index, device="cpu"):
        return torch.from_numpy(self.features[index]), torch.from_numpy(self.labels[index])


def test_windows_baseline_finds_a_small_object_the_whole_image_dilutes():
    """One class is a single bright cell: its windows score is the window max, not the image mean."""
    from rarl_gym.scorer import RegionScorer

    feats = torch.zeros(2, 2, 10, 10)
    feats[0, 0, 3, 3] = 1.0
    scorer = RegionScorer(2, 1)
    with torch.no_grad():
        scorer.linear.weight[:] = torch.tensor([[30.0, 0.0]])
        scorer.linear.bias[:] = -2.0
    probs = predict_windows(scorer, _Store(feats, torch.zeros(2, 1, dtype=torch.int8)))
    whole = torch.sigmoid(scorer(crop(feats, whole_image_boxes(2, 1), 1)))[:, 0, 0]
    assert probs[0, 0] > 0.5 > whole[0].item()  # a 0.3 x 0.3 window gives the cell ~1/9 of its weight, the image 1/100
    assert probs[1, 0] == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-6)
    ten = predict_windows(scorer, _Store(feats, torch.zeros(2, 1, dtype=torch.int8)), views=10)
    assert ten.shape == (2, 1) and np.isfinite(ten).all()


def test_context_head_adds_the_whole_image_to_the_regions_max():
    agent = _agent(folds=2, context=True).eval()
    feats, labels, folds = torch.randn(2, 6, 6, 6), torch.tensor([[1, 0, 0, 1]] * 2), torch.tensor([0, 1])
    out = rollout(agent, feats, labels, glimpse_size=3, centers="grid", fold_of=folds)
    plain = _agent(folds=2).eval()
    plain.load_state_dict({k: v for k, v in agent.state_dict().items() if not k.startswith("context_head")})
    regions = rollout(plain, feats, labels, glimpse_size=3, centers="grid", fold_of=folds)
    whole = agent.context_head(crop(feats, whole_image_boxes(2, 1), 3).mean(dim=(-2, -1))[:, 0, :, None, None]).flatten(
        1
    )  # [B, 3L]
    assert torch.allclose(out.fused, regions.fused + whole[:, :4], atol=1e-5)
    assert torch.allclose(out.fold_fused, regions.fold_fused + whole[:, 4:].reshape(2, 2, 4), atol=1e-5)


def test_tail_continues_the_cached_stride16_map_to_the_full_network():
    """Fine-tuning on the intermediate cache: the untrained tail gives Lite0's own map, and the
    agent's classification loss reaches the tail's weights."""
    from rarl_gym.features.backbones import TAILS, build_backbone, build_tail

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mid = build_backbone("efficientnet_lite0_s16")(x)
        full = build_backbone("efficientnet_lite0")(x)
        tail = build_tail("efficientnet_lite0_s16").eval()
        assert mid.shape == (2, 112, 4, 4) and full.shape == (2, *TAILS["efficientnet_lite0_s16"][:1], 2, 2)
        assert torch.allclose(tail(mid), full, atol=1e-4)
    agent = _agent(1280, 3, glimpse_size=1, candidates=2, tail="efficientnet_lite0_s16").train()
    assert all(not m.training for m in agent.tail.modules() if isinstance(m, torch.nn.BatchNorm2d))  # frozen statistics
    out = rollout(agent, mid, torch.tensor([[1, 0, 1]] * 2), num_steps=1, generator=torch.Generator().manual_seed(0))
    rarl_loss(out, torch.tensor([[1, 0, 1]] * 2), output="sigmoid")["cls"].backward()
    assert agent.tail[0][0].conv_pw.weight.grad.abs().sum() > 0


def test_map_locator_reads_the_out_of_fold_head_in_training():
    """In training the locator chases the gains of the head that never saw the image; at test, head 0's."""
    agent = _agent(folds=2).eval()
    feats = torch.zeros(1, 6, 8, 8)
    feats[0, 0, :2, :2] = 5.0  # channel 0 top-left
    feats[0, 1, 6:, 6:] = 5.0  # channel 1 bottom-right
    with torch.no_grad():
        agent.region_head.weight.zero_()
        agent.region_head.bias.zero_()
        agent.region_head.weight[0, 0] = 1.0  # head 0, class 0 <- channel 0
        agent.region_head.weight[8, 1] = 1.0  # head 2 (fold 1's), class 0 <- channel 1
        agent.loc_gain[0] = 10.0
    labels = torch.tensor([[1, 0, 0, 0]])
    test = rollout(agent, feats, labels, glimpse_size=3, sample=False, num_steps=1).centers[0, 0]
    train = rollout(agent, feats, labels, glimpse_size=3, sample=False, num_steps=1, fold_of=torch.tensor([1])).centers[0, 0]
    assert test.tolist() == pytest.approx([-0.75, -0.75]) and train.tolist() == pytest.approx([0.75, 0.75])


def test_map_locator_with_the_grid_prior_starts_as_the_grid():
    agent = RARLAgent(
        6, 4, glimpse_size=3, embed_dim=8, hidden_dim=8, head="linear", locator="map", output="sigmoid", candidates=7
    ).eval()
    out = rollout(
        agent, torch.randn(2, 6, 8, 8), torch.tensor([[1, 0, 0, 1]] * 2), glimpse_size=3, sample=False, centers="learned"
    )
    nearest = [
        [0.0, 0.0],
        [-4 / 7, -4 / 7],
        [4 / 7, -4 / 7],
        [-4 / 7, 4 / 7],
        [4 / 7, 4 / 7],
    ]  # the 7 x 7 candidates nearest the grid
    assert torch.allclose(out.centers[0], torch.tensor(nearest), atol=1e-6)


def test_oracle_keeps_the_most_likely_sequence():
    from agents.rarl.oracle import _best_of
    from rarl_gym.env_settings import EnvSettings

    settings = EnvSettings.from_env_id("RARL-Shapes-v0", {"num_steps": 3, "glimpse_size": 3})
    agent = _agent(folds=2).eval()
    feats, labels = torch.randn(4, 6, 6, 6), torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]])
    fused, best = _best_of(agent, feats, labels, settings, 16, torch.Generator().manual_seed(0))
    assert best.shape == (4, 3, 2) and fused.shape == (4, 4)
    kw = {**settings.rollout_kwargs(), "sample": False}
    chosen = rollout(agent, feats, labels, centers="given", given_centers=best, **kw)
    assert torch.allclose(chosen.fused, fused, atol=1e-5)  # head 0's scores of the kept sequence
    own = label_log_likelihood(chosen.fused, labels, "sigmoid")
    for other in ("grid", "learned"):  # both are among the candidates: the kept one is at least as likely
        alt = rollout(agent, feats, labels, centers=other, **kw)
        assert (own >= label_log_likelihood(alt.fused, labels, "sigmoid") - 1e-5).all()


@pytest.mark.parametrize("centers", ["random", "center", "grid", "peak", "given"])
@pytest.mark.parametrize(
    ("views", "fuse_whole_image", "train_folds"), [(1, False, False), (10, True, False), (1, False, True)]
)
def test_open_loop_policies_plan_every_step_at_once_with_the_step_loops_numbers(
    monkeypatch, centers, views, fuse_whole_image, train_folds
):
    """With the linear head an open-loop policy's rollout crops all steps in one call, without the
    LSTM: the same fused scores, reward, centres, regions and givers as the step loop (forced by
    declaring the policy closed-loop), with the fold heads' scores when ``fold_of`` is given."""
    from agents.rarl.evaluate import view_batch
    from agents.rarl.policies import POLICIES

    agent = _agent(folds=2, context=True, locator="peak").eval()
    feats = torch.randn(3, 6, 8, 8)
    reps = 2 * views
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1]]).repeat_interleave(reps, 0)
    kwargs = {
        "glimpse_size": 3,
        "centers": centers,
        "view": view_batch(3, views, 0.875, "cpu", repeat=2),
        "repeat": reps,
        "fuse_whole_image": fuse_whole_image,
        "given_centers": torch.rand(3 * reps, 5, 2) * 2 - 1,
        "fold_of": torch.arange(3 * reps) % 2 if train_folds else None,
    }

    def run():
        with torch.no_grad():
            return rollout(agent, feats, labels, generator=torch.Generator().manual_seed(0), **kwargs)

    planned = run()
    monkeypatch.setattr(POLICIES[centers], "open_loop", False)
    looped = run()
    for name in ("fused", "reward", "centers", "regions", "fold_fused"):
        a, b = getattr(planned, name), getattr(looped, name)
        assert (a is None) == (b is None) == (name == "fold_fused" and not train_folds)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5), name
    assert torch.equal(planned.giver, looped.giver)
    assert planned.fused.shape == (3 * reps, 4) and planned.regions.shape == (3 * reps, (5 + fuse_whole_image) * 9, 4)

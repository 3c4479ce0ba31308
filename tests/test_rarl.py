import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.rarl import RARLAgent, RARLEnvPolicy, classification_loss, rarl_loss, rollout
from rarl_gym.errors import ConfigError


def test_agent_shapes_and_state_sharing():
    agent = RARLAgent(20, 5, embed_dim=8, hidden_dim=6)
    glimpses = torch.randn(3, 9, 20, 1, 1)
    out = agent(glimpses, agent.initial_state(3))
    assert out.scores.shape == (3, 9, 5) and out.loc_mean.shape == (3, 2) and out.baseline.shape == (3,)
    assert out.state[0].shape == (3, 6)
    assert (out.loc_mean.abs() <= 1).all()
    # identical regions give identical scores (one LSTM cell, shared h_{t-1})
    same = agent.eval()(glimpses[:, :1].expand(3, 9, 20, 1, 1), agent.initial_state(3))
    assert torch.allclose(same.scores, same.scores[:, :1].expand_as(same.scores))


def test_classification_loss_is_the_papers():
    fused = torch.tensor([[2.0, 0.0, 1.0]])
    labels = torch.tensor([[1, 0, 1]])
    p = torch.softmax(fused, 1)[0]
    assert classification_loss(fused, labels).item() == pytest.approx(-(0.5 * p[0].log() + 0.5 * p[2].log()).item())
    # a difficult class is left out of the softmax
    hard = torch.tensor([[1, -1, 1]])
    q = torch.softmax(fused[:, [0, 2]], 1)[0]
    assert classification_loss(fused, hard).item() == pytest.approx(-(0.5 * q.log()).sum().item())


def test_rollout_and_loss_gradients():
    torch.manual_seed(0)
    agent = RARLAgent(4, 3, embed_dim=8, hidden_dim=8, dropout=0.0)
    feats, labels = torch.randn(5, 4, 6, 6), torch.tensor([[1, 0, 0]] * 5)
    out = rollout(agent, feats, labels, generator=torch.Generator().manual_seed(0))
    assert out.fused.shape == (5, 3) and out.log_prob.shape == out.baseline.shape == (5, 5)
    assert out.centers.shape == (5, 5, 2)
    losses = rarl_loss(out, labels)
    losses["reinforce"].backward(retain_graph=True)
    assert agent.locator.weight.grad.abs().sum() > 0  # REINFORCE trains the localization layer
    assert agent.baseline.weight.grad is None or agent.baseline.weight.grad.abs().sum() == 0
    agent.zero_grad()
    losses["baseline"].backward(retain_graph=True)
    assert agent.baseline.weight.grad.abs().sum() > 0 and agent.lstm.weight_ih.grad is None
    agent.zero_grad()
    losses["cls"].backward()
    assert agent.locator.weight.grad is None or agent.locator.weight.grad.abs().sum() == 0  # sampled centres are detached


def test_center_policies():
    agent = RARLAgent(4, 3, embed_dim=8, hidden_dim=8)
    feats, labels = torch.randn(2, 4, 6, 6), torch.ones(2, 3, dtype=torch.long)
    assert rollout(agent, feats, labels, centers="center").centers.abs().max() == 0
    rand = rollout(agent, feats, labels, centers="random", generator=torch.Generator().manual_seed(1)).centers
    assert rand.std() > 0.3
    grid = rollout(agent, feats, labels, centers="grid").centers
    assert grid[0].tolist() == [[0.0, 0.0], [-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="centers must be"):
        rollout(agent, feats, labels, centers="spiral")


@pytest.mark.parametrize("fuse_whole_image", [False, True])
def test_env_and_batched_rollout_agree(small_kwargs, fuse_whole_image):
    """The trainer's batched rollout and the agent acting through GlimpseEnv(mode='joint') are one thing."""
    env = gym.make("RARL-Shapes-v0", mode="joint", fuse_whole_image=fuse_whole_image, **small_kwargs)
    store = env.unwrapped.store
    torch.manual_seed(0)
    agent = RARLAgent(store.channels, len(store.classes), glimpse_size=3, embed_dim=16, hidden_dim=16).eval()
    policy = RARLEnvPolicy(agent)
    for index in (0, 5):
        obs, _ = env.reset(options={"index": index})
        done = False
        while not done:
            obs, reward, done, _, info = env.step(policy(obs))
        feats, labels = store.batch([index])
        with torch.no_grad():
            out = rollout(agent, feats, labels, glimpse_size=3, sample=False, fuse_whole_image=fuse_whole_image)
        assert np.allclose(info["scores"], torch.tanh(out.fused[0]).numpy(), atol=1e-5)
        assert reward == pytest.approx(out.reward.item())
        assert np.allclose(info["centers"], out.centers[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("locator", ["peak", "map"])
def test_the_default_agent_acts_through_the_env_as_in_the_trainer(small_kwargs, locator):
    """The linear head with a context head and a peak (the default) or map locator, through
    GlimpseEnv(mode='joint', overview=<map side>): the same centres, fused scores and reward as the
    trainer's rollout; without the overview the policy says what the env must show."""
    store = gym.make("RARL-Shapes-v0", **small_kwargs).unwrapped.store
    side = store.map_size[0]
    env = gym.make("RARL-Shapes-v0", mode="joint", overview=side, **small_kwargs)
    assert env.observation_space["overview"].shape == (store.channels, side, side)
    torch.manual_seed(0)
    agent = RARLAgent(
        store.channels,
        len(store.classes),
        glimpse_size=3,
        embed_dim=16,
        hidden_dim=16,
        head="linear",
        folds=2,
        context=True,
        locator=locator,
        output="sigmoid",
        candidates=3,
    ).eval()
    policy = RARLEnvPolicy(agent, settings=env.unwrapped.settings)
    for index in (0, 5):
        obs, _ = env.reset(options={"index": index})
        assert np.allclose(obs["overview"], store.batch([index])[0][0].numpy(), atol=1e-3)  # the map itself (float16 cache)
        done = False
        while not done:
            obs, reward, done, _, info = env.step(policy(obs))
        feats, labels = store.batch([index])
        with torch.no_grad():
            out = rollout(agent, feats, labels, glimpse_size=3, sample=False)
        assert np.allclose(info["centers"], out.centers[0].numpy(), atol=1e-5)
        assert np.allclose(info["scores"], torch.tanh(out.fused[0]).numpy(), atol=1e-4)
        assert reward == pytest.approx(out.reward.item())
    blind = gym.make("RARL-Shapes-v0", mode="joint", **small_kwargs)
    with pytest.raises(ConfigError, match="overview="):
        RARLEnvPolicy(agent)(blind.reset(options={"index": 0})[0])


def test_training_learns_a_tiny_problem():
    """Two classes, each a bright blob on one side of the map: the agent must beat chance quickly."""
    g = torch.Generator().manual_seed(0)
    n = 64
    labels = torch.zeros(n, 2, dtype=torch.long)
    labels[torch.arange(n), torch.arange(n) % 2] = 1
    feats = torch.randn(n, 4, 8, 8, generator=g) * 0.1
    feats[labels[:, 0] == 1, 0, 2:4, 1:3] += 3.0
    feats[labels[:, 1] == 1, 1, 5:7, 5:7] += 3.0
    torch.manual_seed(0)
    agent = RARLAgent(4, 2, embed_dim=16, hidden_dim=16, dropout=0.0)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = rollout(agent, feats, labels, generator=g)
        loss = rarl_loss(out, labels)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        first = first if first is not None else loss["cls"].item()
    with torch.no_grad():
        final = rollout(agent.eval(), feats, labels, sample=False)
    assert final.reward.mean().item() == 1.0
    assert classification_loss(final.fused, labels).item() < 0.2 * first

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from rarl_gym.errors import ActionError, ConfigError


@pytest.fixture(scope="module")
def env(small_kwargs):
    env = gym.make("RARL-Shapes-v0", render_mode="rgb_array", **small_kwargs)
    yield env
    env.close()


def run_episode(env, policy, seed=0):
    obs, info = env.reset(seed=seed)
    steps, rewards = [obs["step"]], []
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        rewards.append(reward)
        steps.append(obs["step"])
        if terminated or truncated:
            return steps, rewards, info


def test_spaces(env):
    u = env.unwrapped
    assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)
    assert env.observation_space["glimpses"].shape == (9, u.store.channels, 3, 3)
    assert env.observation_space["step"] == gym.spaces.Discrete(6)


def test_episode_contract(env):
    steps, rewards, info = run_episode(env, lambda obs: np.zeros(2, np.float32))
    assert len(rewards) == 6  # T + 1 steps
    assert steps[:6] == [0, 1, 2, 3, 4, 5]
    assert rewards[:5] == [0.0] * 5 and 0.0 <= rewards[5] <= 1.0
    assert set(info) >= {"labels", "scores", "boxes", "centers", "image_id"}
    assert info["boxes"].shape == (5, 9, 4) and info["centers"].shape == (5, 2)
    assert info["labels"].shape == info["scores"].shape == (12,)
    assert (info["boxes"] >= 0).all() and (info["boxes"] <= 64).all()  # pixels of a 64 px image
    # the reward is the top-k overlap of the fused scores
    g = np.flatnonzero(info["labels"] == 1)
    top = np.argsort(-info["scores"], kind="stable")[: len(g)]
    assert rewards[5] == pytest.approx(len(set(top) & set(g)) / len(g))


def test_step0_shows_the_whole_image_in_every_slot(env):
    obs, _ = env.reset(seed=1)
    g = obs["glimpses"]
    assert np.allclose(g, g[:1])
    obs, *_ = env.step(np.array([0.5, -0.5], np.float32))
    assert not np.allclose(obs["glimpses"], obs["glimpses"][:1])


def test_centre_moves_the_boxes(env):
    _, _, info = run_episode(env, lambda obs: np.array([-0.5, 0.25], np.float32))
    c = info["boxes"][0, 4]  # the middle anchor (1:1, scale 160/512) around (-0.5, 0.25)
    assert np.allclose([(c[0] + c[2]) / 2, (c[1] + c[3]) / 2], [16.0, 40.0], atol=1e-4)


def test_seeding_and_index_option(env):
    a = [env.reset(seed=3)[1]["image_id"] for _ in range(1)] + [env.reset()[1]["image_id"] for _ in range(3)]
    b = [env.reset(seed=3)[1]["image_id"] for _ in range(1)] + [env.reset()[1]["image_id"] for _ in range(3)]
    assert a == b and len(set(a)) == 4
    _, info = env.reset(options={"index": 7})
    assert info["image_id"] == env.unwrapped.store.image_ids[7]


def test_render_draws_the_glimpses(env):
    env.reset(options={"index": 0})
    before = env.render()
    env.step(np.zeros(2, np.float32))
    env.step(np.zeros(2, np.float32))
    after = env.render()
    assert before.shape == after.shape == (64, 64, 3) and before.dtype == np.uint8
    assert (before != after).any()


def test_gymnasium_and_sb3_checkers(small_kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for mode in ("locate", "joint"):
        env = gym.make("RARL-Shapes-v0", mode=mode, **small_kwargs)
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)


def test_joint_mode_scores_come_from_the_action(small_kwargs):
    env = gym.make("RARL-Shapes-v0", mode="joint", **small_kwargs)
    assert env.action_space.shape == (14,)
    env.reset(seed=0)
    labels = env.unwrapped.store.labels[env.unwrapped._index]
    perfect = np.concatenate([[0.0, 0.0], np.where(labels == 1, 1.0, -1.0)]).astype(np.float32)
    for _ in range(6):
        _obs, reward, terminated, _, info = env.step(perfect)
    assert terminated and reward == 1.0
    assert np.allclose(info["scores"], perfect[2:])


def test_fuse_whole_image_counts_the_scores_of_step_0(small_kwargs):
    scores = {}
    for fuse_whole in (False, True):
        env = gym.make("RARL-Shapes-v0", mode="joint", fuse_whole_image=fuse_whole, **small_kwargs)
        env.reset(options={"index": 2})
        labels = env.unwrapped.store.labels[2]
        perfect = np.concatenate([[0.0, 0.0], np.where(labels == 1, 1.0, -1.0)]).astype(np.float32)
        wrong = np.concatenate([[0.0, 0.0], np.where(labels == 1, -1.0, 0.0)]).astype(np.float32)
        for action in [perfect] + [wrong] * 5:
            _, reward, _, _, info = env.step(action)
        scores[fuse_whole] = (reward, info["scores"])
    assert scores[False][0] == 0.0 and np.allclose(scores[False][1], wrong[2:])
    assert scores[True][0] == 1.0 and np.allclose(scores[True][1], np.maximum(perfect[2:], wrong[2:]))


def test_bad_kwargs_and_actions(small_kwargs):
    with pytest.raises(ConfigError, match="did you mean 'glimpse_size'"):
        gym.make("RARL-Shapes-v0", glimpse_sise=3, **small_kwargs)
    with pytest.raises(ConfigError, match="unknown backbone"):
        gym.make("RARL-Shapes-v0", **{**small_kwargs, "backbone": "resnet9000"})
    with pytest.raises(ConfigError, match="unknown mode"):
        gym.make("RARL-Shapes-v0", mode="classify", **small_kwargs)
    env = gym.make("RARL-Shapes-v0", disable_env_checker=True, **small_kwargs).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(3,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ActionError, match="NaN"):
        env.step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(ActionError, match="outside the action space"):
        env.step(np.array([1.5, 0.0], np.float32))
    with pytest.raises(ConfigError, match="outside the split"):
        env.reset(options={"index": 10_000})

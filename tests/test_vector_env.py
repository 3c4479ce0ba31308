import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

from agents.sb3.vec_env import SB3VecEnvAdapter, to_sb3
from envs import GlimpseEnv, GlimpseVectorEnv
from rarl_gym.errors import ActionError, ConfigError


def assert_same(a, b, where="") -> None:
    """Recursive equality of vector-env outputs: dicts, object arrays, numeric arrays (to 1e-6)."""
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert np.asarray(b).dtype == a.dtype, f"{where}: dtype {a.dtype} != {np.asarray(b).dtype}"
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def venv(small_kwargs):
    env = gym.make_vec("RARL-Shapes-v0", num_envs=3, render_mode="rgb_array", **small_kwargs)
    yield env
    env.close()


def test_make_vec_spaces_and_metadata(venv, small_kwargs):
    assert isinstance(venv, GlimpseVectorEnv) and venv.num_envs == 3
    single = GlimpseEnv(**{"dataset": "shapes", **small_kwargs})
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    assert venv.observation_space == batch_space(single.observation_space, 3)
    assert venv.action_space == batch_space(single.action_space, 3)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs) and info["_image_id"].all()
    sync = gym.make_vec("RARL-Shapes-v0", num_envs=2, vectorization_mode="sync", **small_kwargs)
    assert isinstance(sync, SyncVectorEnv)


@pytest.mark.parametrize(
    "num_envs,mode,copy", [(3, "locate", True), (4, "locate", False), (3, "joint", False), (4, "joint", True)]
)
def test_equals_single_envs_across_autoresets(small_kwargs, num_envs, mode, copy):
    """Same obs, rewards, terminations and infos as B GlimpseEnvs in a same-step SyncVectorEnv."""
    kwargs = {"dataset": "shapes", "mode": mode, **small_kwargs}
    native = GlimpseVectorEnv(num_envs, copy=copy, **kwargs)
    ref = SyncVectorEnv([lambda: GlimpseEnv(**kwargs)] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    rng = np.random.default_rng(num_envs)
    ends = 0
    for seed in (7, None, [11, None, 5] + [None] * (num_envs - 3)):  # seeded, continued, partly reseeded
        assert_same(*(e.reset(seed=seed) for e in (ref, native)), "reset")
        for t in range(14):  # crosses two autoreset boundaries
            actions = rng.uniform(-1, 1, native.action_space.shape).astype(np.float32)
            a, b = ref.step(actions), native.step(actions)
            assert_same(a, b, f"seed={seed} t={t}")
            ends += bool(a[2].all())
    assert ends == 3 * 2
    # the image order: sub-env i walks np_random(seed + i).permutation(N)
    native.reset(seed=3)
    ids = [native.reset()[1]["image_id"] for _ in range(3)]
    for i in range(num_envs):
        single = GlimpseEnv(**kwargs)
        want = [single.reset(seed=3 + i)[1]["image_id"]] + [single.reset()[1]["image_id"] for _ in range(2)]
        assert want[1:] == [x[i] for x in ids[:2]]  # reset(seed=3) took want[0]


def test_copy_false_reuses_two_buffers(small_kwargs):
    """copy=False: observations alternate between two arrays and stay valid until the step after next."""
    fast = GlimpseVectorEnv(2, copy=False, dataset="shapes", **small_kwargs)
    safe = GlimpseVectorEnv(2, dataset="shapes", **small_kwargs)
    assert not fast.copy and safe.copy
    acts = np.zeros((2, 2), dtype=np.float32)
    history = [(fast.reset(seed=0)[0], safe.reset(seed=0)[0])]
    for _ in range(9):
        history.append((fast.step(acts)[0], safe.step(acts)[0]))
        (f_prev, s_prev), (f_now, s_now) = history[-2], history[-1]
        np.testing.assert_array_equal(f_prev["glimpses"], s_prev["glimpses"])  # still intact one step later
        np.testing.assert_array_equal(f_now["glimpses"], s_now["glimpses"])
        assert not np.shares_memory(f_prev["glimpses"], f_now["glimpses"])
        assert not np.shares_memory(s_prev["glimpses"], s_now["glimpses"])
    assert np.shares_memory(history[-1][0]["glimpses"], history[-3][0]["glimpses"])  # the ring of two
    assert not any(np.shares_memory(history[-1][1]["glimpses"], h[1]["glimpses"]) for h in history[:-1])
    with pytest.raises(ConfigError, match="copy must be"):
        GlimpseVectorEnv(2, copy="no", dataset="shapes", **small_kwargs)


def test_final_info_and_options(venv):
    obs, info = venv.reset(options={"index": [5, 6, 7]})
    assert list(info["image_id"]) == [venv.store.image_ids[i] for i in (5, 6, 7)]
    assert (obs["step"] == 0).all() and obs["glimpses"].shape == (3, 9, venv.store.channels, 3, 3)
    for _ in range(6):
        obs, reward, terminated, truncated, info = venv.step(np.zeros((3, 2), np.float32))
    assert terminated.all() and not truncated.any() and (obs["step"] == 0).all()
    fi = info["final_info"]
    assert fi["labels"].shape == fi["scores"].shape == (3, 12) and fi["labels"].dtype == np.int8
    assert fi["boxes"].shape == (3, 5, 9, 4) and fi["centers"].shape == (3, 5, 2)
    assert list(fi["image_id"]) == [venv.store.image_ids[i] for i in (5, 6, 7)]
    assert all(fi[f"_{k}"].all() for k in ("labels", "scores", "boxes", "centers", "image_id"))
    assert info["_final_obs"].all() and info["final_obs"][1]["step"] == 5
    assert ((reward >= 0) & (reward <= 1)).all()
    obs, _ = venv.reset(options={"index": 4})  # one int: the same image everywhere
    assert np.allclose(obs["glimpses"], obs["glimpses"][:1])


def test_bad_actions_and_arguments(venv, small_kwargs):
    fresh = GlimpseVectorEnv(2, **small_kwargs)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.zeros((2, 2), np.float32))
    venv.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(3, 3\)"):
        venv.step(np.zeros((3, 3), np.float32))
    with pytest.raises(ActionError, match=r"shape \(2,\)"):
        venv.step(np.zeros(2, np.float32))
    with pytest.raises(ActionError, match=r"sub-env\(s\) \[1\] contain NaN"):
        venv.step(np.array([[0, 0], [np.nan, 0], [0, 0]], np.float32))
    with pytest.raises(ActionError, match=r"sub-env\(s\) \[0, 2\] are outside the action space"):
        venv.step(np.array([[1.5, 0], [0, 0], [0, -2]], np.float32))
    with pytest.raises(ActionError, match="not numeric"):
        venv.step("left")
    venv.step(np.full((3, 2), 1.0 + 1e-7, np.float32))  # within tolerance: clipped
    with pytest.raises(ConfigError, match="outside the split"):
        venv.reset(options={"index": [0, 1, 10_000]})
    with pytest.raises(ConfigError, match="lockstep"):
        venv.reset(options={"reset_mask": np.array([True, False, True])})
    with pytest.raises(ConfigError, match="3 seeds"):
        fresh.reset(seed=[1, 2, 3])
    with pytest.raises(ConfigError, match="num_envs"):
        GlimpseVectorEnv(0, **small_kwargs)
    with pytest.raises(ConfigError, match="did you mean 'glimpse_size'"):
        gym.make_vec("RARL-Shapes-v0", num_envs=2, glimpse_sise=3, **small_kwargs)


def test_render(venv):
    venv.reset(seed=0)
    before = venv.render()
    venv.step(np.zeros((3, 2), np.float32))
    after = venv.render()
    assert isinstance(after, tuple) and len(after) == 3
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in after)
    assert (before[0] != after[0]).any()


def test_sb3_adapter_equals_dummy_vec_env(small_kwargs):
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecEnv

    kwargs = {"dataset": "shapes", **small_kwargs}
    adapter = to_sb3(GlimpseVectorEnv(3, render_mode="rgb_array", **kwargs))
    assert isinstance(adapter, SB3VecEnvAdapter) and isinstance(adapter, VecEnv)
    dummy = DummyVecEnv([lambda: GlimpseEnv(render_mode="rgb_array", **kwargs)] * 3)
    check_env(dummy.envs[0], warn=False)  # the sub-env contract SB3 relies on
    assert adapter.observation_space == dummy.observation_space and adapter.action_space == dummy.action_space
    for env in (adapter, dummy):
        env.seed(4)
    assert_same(dummy.reset(), adapter.reset())
    assert [i["image_id"] for i in adapter.reset_infos] == [i["image_id"] for i in dummy.reset_infos]
    rng = np.random.default_rng(0)
    for _ in range(13):
        actions = rng.uniform(-1, 1, (3, 2)).astype(np.float32)
        (o1, r1, d1, i1), (o2, r2, d2, i2) = dummy.step(actions), adapter.step(actions)
        assert_same(dict(o1), o2)
        assert_same(r1, r2)
        assert_same(d1, d2)
        assert len(i1) == len(i2) == 3
        for x, y in zip(i1, i2):
            assert_same(x, y)
        assert [i["image_id"] for i in adapter.reset_infos] == [i["image_id"] for i in dummy.reset_infos]
    adapter.set_options({"index": 2})
    adapter.reset()
    assert [i["image_id"] for i in adapter.reset_infos] == [adapter.venv.store.image_ids[2]] * 3
    assert adapter.get_attr("mode") == ["locate"] * 3 and adapter.env_is_wrapped(gym.Wrapper) == [False] * 3
    assert adapter.render().ndim == 3  # tiled frames
    checked = VecCheckNan(adapter, raise_exception=True)  # raises on a NaN or inf in what passes through
    checked.reset()
    obs, rewards, dones, infos = checked.step(np.zeros((3, 2), np.float32))
    assert obs["glimpses"].shape[0] == 3 and np.isfinite(obs["glimpses"]).all()
    assert rewards.shape == dones.shape == (3,) and not dones.any() and len(infos) == 3


def test_sb3_ppo_smoke(small_kwargs):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    env = VecMonitor(to_sb3(GlimpseVectorEnv(4, dataset="shapes", **small_kwargs)))  # its speed: benchmarks/unit_timings.py
    model = PPO("MultiInputPolicy", env, n_steps=12, batch_size=12, n_epochs=1, seed=0, device="cpu")
    model.learn(24)
    assert model.num_timesteps >= 24 and len(model.ep_info_buffer) > 0


def test_async_vectorisation_equals_sync(small_kwargs):
    """gym.make_vec(..., vectorization_mode="async") forks workers after this process has used
    the compiled crop (with its 2-thread work pool); the workers' results equal the sync ones."""
    import torch

    kwargs = {"dataset": "shapes", **small_kwargs}
    torch.set_num_threads(2)
    try:
        warm = GlimpseEnv(**kwargs)
        warm.reset(seed=0)
        warm.step(np.zeros(2, np.float32))  # the parent's pool exists now
        sync = gym.make_vec("RARL-Shapes-v0", num_envs=2, vectorization_mode="sync", **kwargs)
        asyn = gym.make_vec(
            "RARL-Shapes-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"context": "fork"}, **kwargs
        )
        try:
            asyn.reset_async(seed=4)
            assert_same(sync.reset(seed=4), asyn.reset_wait(timeout=60), "reset")  # a hung worker fails, not blocks
            rng = np.random.default_rng(0)
            for t in range(7):  # across an autoreset
                actions = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
                asyn.step_async(actions)
                a, b = sync.step(actions), asyn.step_wait(timeout=60)
                for x, y in zip(a[:4], b[:4]):
                    assert_same(x, y, f"t={t}")
        finally:
            asyn.close()
            sync.close()
    finally:
        torch.set_num_threads(1)


def test_making_and_stepping_an_env_imports_no_agent_code():
    """Imports point one way: an env never imports Stable-Baselines3 or anything under agents."""
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, rarl_gym\n"
        "env = gym.make('RARL-Shapes-v0', backbone='tiny', input_size=64, progress=False, mode='joint',\n"
        "               dataset_kwargs={'num_images': 4, 'image_size': 64})\n"
        "env.reset(seed=0); env.step(env.action_space.sample())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('stable_baselines3', 'sb3_contrib', 'agents')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

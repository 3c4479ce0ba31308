"""The torch vector env (envs/torch_vector_env.py): the numpy env's numbers as torch tensors on the device."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.torch_vector_env import TorchGlimpseVectorEnv
from envs.vector_env import GlimpseVectorEnv
from rarl_gym.errors import ActionError, ConfigError

B = 5


def _play(env, actions: np.ndarray, as_tensor: bool) -> list[tuple[str, object]]:
    """``reset(seed=3)`` then one step per row of ``actions [steps, B, A]``: every output as
    ``(name, numpy array or list)`` (the final observations apart: they differ in form by design)."""

    def np_(x):
        return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    obs, info = env.reset(seed=3)
    out: list[tuple[str, object]] = [(key, np_(obs[key])) for key in sorted(obs)]
    out.append(("image_id", list(info["image_id"])))
    for a in actions:
        obs, reward, terminated, truncated, infos = env.step(torch.from_numpy(a) if as_tensor else a)
        out += [(key, np_(obs[key])) for key in sorted(obs)] + [("reward", np_(reward))]
        out += [("terminated", np_(terminated)), ("truncated", np_(truncated))]
        if "final_info" in infos:
            fi = infos["final_info"]
            out += [(key, np_(fi[key])) for key in ("labels", "scores", "boxes", "centers")]
            out += [("final image_id", list(fi["image_id"])), ("image_id", list(infos["image_id"]))]
    return out


@pytest.mark.parametrize(
    ("mode", "preload", "extra"),
    [("locate", False, {}), ("locate", True, {}), ("joint", False, {}), ("locate", False, {"overview": 2})],
)
def test_cpu_torch_env_gives_the_numpy_env_numbers(small_kwargs, mode, preload, extra):
    """Same seed, same actions: every observation, reward, flag and final info equal (two episodes + autoreset)."""
    from rarl_gym.env_settings import EnvSettings

    if any(key not in {f.name for f in dataclasses.fields(EnvSettings)} for key in extra):
        pytest.skip(f"this version of the env has no {sorted(extra)}")
    kwargs = {**small_kwargs, "dataset": "shapes", "mode": mode, **extra}
    numpy_env = GlimpseVectorEnv(B, **kwargs)
    torch_env = TorchGlimpseVectorEnv(B, device="cpu", preload=preload, **kwargs)
    steps = 2 * (numpy_env.episodes.num_steps + 1) + 2
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *numpy_env.action_space.shape)).astype(np.float32)
    expected, got = _play(numpy_env, actions, False), _play(torch_env, actions, True)
    assert [name for name, _ in expected] == [name for name, _ in got]
    assert sum(name == "labels" for name, _ in got) == 2  # two episodes ended
    for (name, x), (_, y) in zip(expected, got):
        if isinstance(x, list):
            assert x == y, name
        else:
            assert x.shape == y.shape, name
            np.testing.assert_array_equal(x.astype(np.float64), y.astype(np.float64), err_msg=name)
    assert sum(float(x.sum()) for name, x in got if name == "reward") > 0  # real rewards at the ends
    numpy_env.close()
    torch_env.close()


def test_outputs_are_tensors_on_the_device_and_the_constructors(small_kwargs):
    kwargs = dict(small_kwargs)
    env = GlimpseVectorEnv(3, device="cpu", dataset="shapes", **kwargs)
    assert type(env) is TorchGlimpseVectorEnv and env.device == torch.device("cpu") and not env.preload
    assert type(GlimpseVectorEnv(3, dataset="shapes", **kwargs)) is GlimpseVectorEnv  # numpy for everyone else
    venv = gym.make_vec("RARL-Shapes-v0", num_envs=3, vectorization_mode="vector_entry_point", device="cpu", **kwargs)
    assert isinstance(venv, TorchGlimpseVectorEnv)
    obs, _ = venv.reset(seed=0, options={"index": [0, 1, 2]})
    k, c, s, _ = venv.single_observation_space["glimpses"].shape
    assert obs["glimpses"].shape == (3, k, c, s, s) and obs["glimpses"].dtype == torch.float32
    assert obs["step"].tolist() == [0, 0, 0] and obs["step"].dtype == torch.int64
    obs, reward, terminated, truncated, infos = venv.step(torch.zeros(3, 2))
    assert isinstance(reward, torch.Tensor) and reward.dtype == torch.float32 and reward.shape == (3,)
    assert terminated.dtype == torch.bool and not terminated.any() and not truncated.any()
    assert obs["step"].tolist() == [1, 1, 1] and infos == {}
    for _ in range(venv.episodes.num_steps):
        obs, reward, terminated, truncated, infos = venv.step(np.zeros((3, 2), np.float32))  # numpy actions too
    assert terminated.all() and obs["step"].tolist() == [0, 0, 0]
    fi = infos["final_info"]
    assert fi["boxes"].shape == (3, venv.episodes.num_steps, k, 4) and isinstance(fi["boxes"], torch.Tensor)
    assert fi["labels"].dtype == torch.int8 and list(fi["image_id"]) == list(venv.store.image_ids[:3])
    assert infos["final_obs"]["glimpses"].shape == (3, k, c, s, s) and not infos["final_obs"]["glimpses"].any()
    assert infos["final_obs"]["step"].tolist() == [venv.episodes.num_steps] * 3
    venv.close()


def test_bad_actions_are_action_errors_naming_the_sub_envs(small_kwargs):
    env = TorchGlimpseVectorEnv(3, device="cpu", dataset="shapes", **small_kwargs)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(3, 3\)") as err:
        env.step(torch.zeros(3, 3))
    assert "one row per sub-env" in err.value.fix
    bad = torch.zeros(3, 2)
    bad[1, 0] = float("nan")
    with pytest.raises(ActionError, match=r"sub-env\(s\) \[1\] contain NaN"):
        env.step(bad)
    bad = torch.zeros(3, 2)
    bad[2, 1] = 1.5
    with pytest.raises(ActionError, match=r"sub-env\(s\) \[2\] are outside") as err:
        env.step(bad)
    assert "clamp" in err.value.fix
    with pytest.raises(ActionError, match="not numeric"):
        env.step("left")
    env.step(torch.full((3, 2), 1.0 + 1e-7))  # within the tolerance: clipped, accepted
    with pytest.raises(ConfigError, match="preload"):
        TorchGlimpseVectorEnv(3, device="cpu", preload="yes", dataset="shapes", **small_kwargs)
    with pytest.raises(ConfigError, match="unknown device"):
        TorchGlimpseVectorEnv(3, device="gpu", dataset="shapes", **small_kwargs)
    env.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_torch_env_stays_on_the_gpu_and_matches_the_cpu(small_kwargs):
    """On CUDA (float32 maps, the torch crop) the numbers match the CPU env's (float16 maps, the kernel)."""
    kwargs = {**small_kwargs, "dataset": "shapes"}
    cpu = TorchGlimpseVectorEnv(B, device="cpu", **kwargs)
    gpu = TorchGlimpseVectorEnv(B, device="cuda", **kwargs)
    assert gpu.preload and gpu._all_maps.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in gpu.episodes.scorer.parameters())
    a_cpu, _ = cpu.reset(seed=1)
    a_gpu, _ = gpu.reset(seed=1)
    assert a_gpu["glimpses"].device.type == "cuda"
    torch.testing.assert_close(a_gpu["glimpses"].cpu(), a_cpu["glimpses"], atol=2e-3, rtol=2e-3)
    actions = torch.rand(gpu.episodes.num_steps + 1, B, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for a in actions:
        _, r_cpu, *_, i_cpu = cpu.step(a)
        o_gpu, r_gpu, *_, i_gpu = gpu.step(a.cuda())
        assert o_gpu["glimpses"].device.type == "cuda" and r_gpu.device.type == "cuda"
    torch.testing.assert_close(i_gpu["final_info"]["scores"].cpu(), i_cpu["final_info"]["scores"], atol=2e-3, rtol=2e-3)
    assert (r_gpu.cpu() == r_cpu).float().mean() >= 0.8  # top-k of nearly equal scores: ties may flip
    cpu.close()
    gpu.close()

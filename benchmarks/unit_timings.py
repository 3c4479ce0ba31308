#!/usr/bin/env python
"""Wall-clock timings that the unit tests used to assert, measured here instead.

A test that fails because the machine is busy says nothing about the code, so the tests check
behaviour only and this script times the same operations, on the tests' small Shapes split with
the tiny random backbone and one torch thread (as ``pytest -n 2`` runs them), against the limits
the tests once asserted:

- ``reopen cache``: :func:`rarl_gym.features.store.extract_features` on a finished entry (it only
  opens the memory map; the backbone is never built) (tests/test_store.py, limit 0.5 s);
- ``tiny forward``: the tiny backbone on a ``[4, 3, 128, 128]`` batch (tests/test_backbones.py, 1 s);
- ``vgg16 unavailable``: ``build_backbone("vgg16")`` failing with a ConfigError when its weights
  are not cached and the network is unreachable (tests/test_backbones.py, 30 s; skipped when the
  download would start, or the weights are cached);
- ``ppo smoke``: ``GlimpseVectorEnv(4)`` through ``to_sb3`` and ``VecMonitor``, PPO built and
  trained for 24 steps, feature cache and scorer already on disk (tests/test_vector_env.py, 20 s).

Each row is the median of ``--repeat`` runs. Exit status 1 with ``--strict`` when a row is over
its limit.

    python benchmarks/unit_timings.py              # about half a minute on 2 cores
    python benchmarks/unit_timings.py --strict --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The tests' small split (tests/conftest.py's ``SMALL``).
SMALL = {"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 40, "image_size": 64}}


def seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reopen_cache(cache_dir: str, repeat: int) -> float:
    from rarl_gym.data.shapes import ShapesDataset
    from rarl_gym.features.store import extract_features

    ds = ShapesDataset("train", num_images=10, image_size=64)

    def extract():
        return extract_features(ds, "tiny", 64, cache_dir=cache_dir, batch_size=4, progress=False)

    extract().close()  # the first call extracts; the timed ones reopen
    return seconds(lambda: extract().close(), repeat)


def tiny_forward(repeat: int) -> float:
    import torch

    from rarl_gym.features import build_backbone

    net = build_backbone("tiny")
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.inference_mode():
            net(x)

    return seconds(forward, repeat)


def vgg16_unavailable(repeat: int) -> float | str:
    """Seconds until ``build_backbone("vgg16")`` raises, or why the row is skipped."""
    import torch

    from rarl_gym.errors import ConfigError
    from rarl_gym.features import build_backbone, weights_probe

    if os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", "vgg16-397923af.pth")):
        return "skipped: the VGG16 weights are cached (it builds)"
    if weights_probe.reachable("https://download.pytorch.org/")[0]:
        return "skipped: the network is reachable (it would download 528 MB)"

    def fail():
        try:
            build_backbone("vgg16")
        except ConfigError:
            return
        raise RuntimeError("build_backbone('vgg16') did not fail")

    return seconds(fail, repeat)


def ppo_smoke(cache_dir: str, repeat: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.sb3.vec_env import to_sb3
    from envs import GlimpseVectorEnv

    kwargs = {**SMALL, "cache_dir": cache_dir, "progress": False}
    GlimpseVectorEnv(4, dataset="shapes", **kwargs).close()  # extracts the split and fits the scorer once

    def smoke():
        env = VecMonitor(to_sb3(GlimpseVectorEnv(4, dataset="shapes", **kwargs)))
        model = PPO("MultiInputPolicy", env, n_steps=12, batch_size=12, n_epochs=1, seed=0, device="cpu")
        model.learn(24)
        env.close()

    return seconds(smoke, repeat)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="runs per row; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as each test worker)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: a temporary folder, removed after)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a row is over its former test limit")
    args = p.parse_args(argv)

    import torch

    import rarl_gym  # noqa: F401  (registers the env ids)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="rarl-timings-") as tmp:
        cache_dir = args.cache_dir or tmp
        rows: list[tuple[str, float | str, float]] = [
            ("reopen cache", reopen_cache(cache_dir, args.repeat), 0.5),
            ("tiny forward", tiny_forward(args.repeat), 1.0),
            ("vgg16 unavailable", vgg16_unavailable(args.repeat), 30.0),
            ("ppo smoke", ppo_smoke(cache_dir, args.repeat), 20.0),
        ]
    over = 0
    print(f"{'operation':<20}{'seconds':>10}{'limit':>8}  verdict")
    for name, value, limit in rows:
        if isinstance(value, str):
            print(f"{name:<20}{'-':>10}{limit:>8.1f}  {value}")
            continue
        ok = value < limit
        over += not ok
        print(f"{name:<20}{value:>10.3f}{limit:>8.1f}  {'ok' if ok else 'OVER'}")
    return 1 if args.strict and over else 0


if __name__ == "__main__":
    sys.exit(main())

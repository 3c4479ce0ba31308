#!/usr/bin/env python
"""Env steps per second: one GlimpseEnv, SB3 DummyVecEnv of 16, the native GlimpseVectorEnv at B = 16, 64, 256.

The native rows use ``copy=False`` (two reused output buffers, what ``to_sb3`` uses); the last
row repeats the largest B with ``copy=True`` (a fresh observation array every step).

Each row times ``--steps`` calls of ``step`` with fixed random actions (policy cost excluded) after
a warm-up, autoresets included. "write limit" is the env-step rate at which merely writing the
observations would saturate memory: a plain ``buf[:] = 1.0`` on a ``[B, K, C, s, s]`` float32
buffer, timed, divided by the bytes of one observation. ``% limit`` = env steps/s / write limit.

Examples:
    python benchmarks/env_speed.py
    python benchmarks/env_speed.py --env RARL-VOC07-v0 --env-kwargs '{"glimpse_size": 3}' --steps 300
    python benchmarks/env_speed.py \
        --env-kwargs '{"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 40, "image_size": 64}}'
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym
import numpy as np
import torch

import rarl_gym  # noqa: F401  (registers the ids)
from rarl_gym.cli import env_overrides, run_cli


def timed(step: Callable[[], object], calls: int, warmup: int = 12) -> float:
    """Seconds per call of ``step`` (median of 3 chunks, after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    chunks = []
    for n in (calls // 3, calls // 3, calls - 2 * (calls // 3)):
        start = time.perf_counter()
        for _ in range(max(n, 1)):
            step()
        chunks.append((time.perf_counter() - start) / max(n, 1))
    return float(np.median(chunks))


def write_limit(shape: tuple[int, ...], calls: int) -> float:
    """Bytes per second of ``buf[:] = 1.0`` on a float32 buffer of ``shape``."""
    buf = np.zeros(shape, dtype=np.float32)

    def fill() -> None:
        buf[:] = 1.0

    return buf.nbytes / timed(fill, calls)


def main(args: argparse.Namespace) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.sb3.vec_env import to_sb3

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {**env_overrides(args.env_kwargs), "progress": False}
    rng = np.random.default_rng(0)
    rows: list[tuple[str, int, float, float | None]] = []  # (name, B, env steps/s, write-limit steps/s)

    single = gym.make(args.env, disable_env_checker=True, **kwargs).unwrapped
    space = single.observation_space["glimpses"]
    obs_bytes = int(np.prod(space.shape)) * 4 + 8  # glimpses float32 + step int64

    single_action = rng.uniform(-1, 1, single.action_space.shape).astype(np.float32)

    def run_single(env=single, a=single_action) -> None:
        if env.step(a)[2]:
            env.reset()

    single.reset(seed=0)
    rows.append(("GlimpseEnv", 1, 1 / timed(run_single, args.steps), None))

    b = 16
    dummy = DummyVecEnv([lambda: gym.make(args.env, disable_env_checker=True, **kwargs)] * b)
    dummy.reset()
    acts = rng.uniform(-1, 1, (b, *single.action_space.shape)).astype(np.float32)
    rows.append((f"DummyVecEnv({b} x GlimpseEnv)", b, b / timed(lambda: dummy.step(acts), max(args.steps // 4, 3)), None))
    dummy.close()

    for b, copy in [(b, False) for b in args.batch_sizes] + [(max(args.batch_sizes), True)]:
        venv = gym.make_vec(args.env, num_envs=b, vectorization_mode="vector_entry_point", copy=copy, **kwargs)
        venv.reset(seed=0)
        acts = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
        rate = b / timed(lambda venv=venv, acts=acts: venv.step(acts), args.steps)
        limit = write_limit((b, *space.shape), args.steps) / obs_bytes
        rows.append((f"GlimpseVectorEnv(B={b}, copy={copy})", b, rate, limit))
        if b == 16 and not copy:
            sb3 = to_sb3(venv)
            sb3.reset()
            rows.append(
                (f"SB3VecEnvAdapter(B={b})", b, b / timed(lambda sb3=sb3, acts=acts: sb3.step(acts), args.steps), limit)
            )
        venv.close()

    print(
        f"\n{args.env} {kwargs}: one observation = {space.shape} float32 "
        f"= {obs_bytes} B; torch threads = {torch.get_num_threads()}\n"
    )
    print("| env | B | env steps/s | µs / env step | obs MB/s | write limit (steps/s) | % limit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, b, rate, limit in rows:
        lim = f"{limit:,.0f} | {100 * rate / limit:.1f}%" if limit else "- | -"
        print(f"| {name} | {b} | {rate:,.0f} | {1e6 / rate:.1f} | {rate * obs_bytes / 1e6:,.1f} | {lim} |")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="RARL-Shapes-v0")
    p.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs")
    p.add_argument("--steps", type=int, default=300, help="timed step() calls per row (DummyVecEnv: a quarter)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256], help="B of the native vector env")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(parse_args())))

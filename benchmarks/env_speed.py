#!/usr/bin/env python
"""Env steps per second: one GlimpseEnv, SB3 DummyVecEnv of 16, the native GlimpseVectorEnv at B = 16, 64, 256.

The native rows use ``copy=False`` (two reused output buffers, what ``to_sb3`` uses); the last
row repeats the largest B with ``copy=True`` (a fresh observation array every step).

Each row times ``--steps`` calls of ``step`` with fixed random actions (policy cost excluded) after
a warm-up, autoresets included. "write limit" is the env-step rate at which merely writing the
observations would saturate memory: a plain ``buf[:] = 1.0`` on a ``[B, K, C, s, s]`` float32
buffer, timed, divided by the bytes of one observation. ``% limit`` = env steps/s / write limit.

``--device DEV`` adds, per B, the torch vector env (:class:`envs.torch_vector_env.TorchGlimpseVectorEnv`:
episodes, observations and rewards as torch tensors on DEV; actions a tensor on DEV; on the CPU
with and without ``preload``) and the "crop alone" limit: one :func:`rarl_gym.glimpse.crop` of the
B x K regions with their means on random maps of the env's shape, i.e. the env steps/s if a step
cost nothing but its crop. ``--vector-only`` skips the single-env, DummyVecEnv, SB3 and
``copy=True`` rows; ``--json`` writes the rows.

Examples:
    python benchmarks/env_speed.py
    python benchmarks/env_speed.py --env RARL-VOC07-v0 --env-kwargs '{"glimpse_size": 3}' --steps 300
    python benchmarks/env_speed.py \
        --env-kwargs '{"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 40, "image_size": 64}}'
    python benchmarks/env_speed.py --device cuda --vector-only --batch-sizes 16 256 1024 \
        --env RARL-VOC07-v0 --env-kwargs '{"root": "../shared/data/voc07"}'
"""

from __future__ import annotations

import argparse
import json
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
from rarl_gym.device import pick_device


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


def crop_step(b: int, env, device: str) -> Callable[[], object]:
    """One env step's crop alone: :func:`rarl_gym.glimpse.crop` of B x K anchor boxes (with the
    region means the env scorer reads) on B random maps of the env's shape and dtype, into a
    reused output; its rate is the ceiling of any env built on it (the "limit" rows)."""
    from envs.episodes import GlimpseEpisodes
    from rarl_gym.glimpse import anchor_boxes, crop

    k, c, s, _ = env.observation_space["glimpses"].shape
    dev = torch.device(device)
    maps = torch.randn(b, c, *env.store.map_size, device=dev).to(GlimpseEpisodes.map_dtype(dev))
    maps = maps.contiguous(memory_format=torch.channels_last)
    boxes = anchor_boxes(torch.rand(b, 2, device=dev) * 2 - 1, env.episodes.scales, env.episodes.ratios)
    out = torch.empty(b, k, c, s, s, device=dev)
    means = torch.empty(b, k, c, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return lambda: (crop(maps, boxes, s, out=out, region_means=means), sync())


def alternated(calls: dict, steps: int, rounds: int, warmup: int = 12) -> dict:
    """Seconds per call of each of ``calls`` (name -> function): ``rounds`` rounds, each timing
    ``steps / rounds`` calls of every function in turn, the median round per function (a load
    that comes and goes hits them all alike)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    per = max(steps // rounds, 1)
    times: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(per):
                fn()
            times[name].append((time.perf_counter() - start) / per)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {**env_overrides(args.env_kwargs), "progress": False}
    rng = np.random.default_rng(0)
    rows: list[dict] = []  # kind, env, B, steps_per_s, write_limit (steps/s or None)

    def add(kind: str, name: str, b: int, rate: float, limit: float | None = None) -> None:
        rows.append(
            {"kind": kind, "env": name, "B": b, "steps_per_s": round(rate, 1), "write_limit": limit and round(limit, 1)}
        )
        print(f"{name}: {rate:,.0f} env steps/s", flush=True)

    single = gym.make(args.env, disable_env_checker=True, **kwargs).unwrapped
    space = single.observation_space["glimpses"]
    obs_bytes = int(np.prod(space.shape)) * 4 + 8  # glimpses float32 + step int64
    map_size = single.store.map_size
    if not args.vector_only:
        from stable_baselines3.common.vec_env import DummyVecEnv

        single_action = rng.uniform(-1, 1, single.action_space.shape).astype(np.float32)

        def run_single(env=single, a=single_action) -> None:
            if env.step(a)[2]:
                env.reset()

        single.reset(seed=0)
        add("single", "GlimpseEnv", 1, 1 / timed(run_single, args.steps))
        b = 16
        dummy = DummyVecEnv([lambda: gym.make(args.env, disable_env_checker=True, **kwargs)] * b)
        dummy.reset()
        acts = rng.uniform(-1, 1, (b, *single.action_space.shape)).astype(np.float32)
        add("dummy", f"DummyVecEnv({b} x GlimpseEnv)", b, b / timed(lambda: dummy.step(acts), max(args.steps // 4, 3)))
        dummy.close()

    copies = [(b, False) for b in args.batch_sizes] + ([] if args.vector_only else [(max(args.batch_sizes), True)])
    for b, copy in copies:
        venv = gym.make_vec(args.env, num_envs=b, vectorization_mode="vector_entry_point", copy=copy, **kwargs)
        venv.reset(seed=0)
        acts = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
        rate = b / timed(lambda venv=venv, acts=acts: venv.step(acts), args.steps)
        limit = write_limit((b, *space.shape), args.steps) / obs_bytes
        add("numpy", f"GlimpseVectorEnv(B={b}, copy={copy})", b, rate, limit)
        if b == 16 and not copy and not args.vector_only:
            from agents.sb3.vec_env import to_sb3

            sb3 = to_sb3(venv)
            sb3.reset()
            add("sb3", f"SB3VecEnvAdapter(B={b})", b, b / timed(lambda sb3=sb3, acts=acts: sb3.step(acts), args.steps), limit)
        venv.close()
        if args.device and not copy:  # the numpy env, the torch env(s) and the crop, alternated round by round
            dev = str(pick_device(args.device))
            sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
            numpy_env = gym.make_vec(args.env, num_envs=b, vectorization_mode="vector_entry_point", copy=False, **kwargs)
            numpy_env.reset(seed=0)
            contenders: dict[tuple[str, str], Callable[[], object]] = {
                ("numpy", f"GlimpseVectorEnv(B={b}), alternated"): lambda e=numpy_env, a=acts: e.step(a)
            }
            envs = [numpy_env]
            for preload in (False, True) if dev == "cpu" else (True,):
                tenv = gym.make_vec(
                    args.env,
                    num_envs=b,
                    vectorization_mode="vector_entry_point",
                    copy=False,
                    device=dev,
                    preload=preload,
                    **kwargs,
                )
                tenv.reset(seed=0)
                envs.append(tenv)
                tacts = torch.from_numpy(acts).to(dev)
                key = (
                    f"torch {dev}" + (", preload" if preload else ""),
                    f"TorchGlimpseVectorEnv(B={b}, {dev}, preload={preload})",
                )
                contenders[key] = lambda e=tenv, a=tacts, sync=sync: (e.step(a), sync())
            for d in dict.fromkeys(["cpu", dev]):
                contenders[(f"crop {d}", f"crop alone, B={b}, {d} (the limit)")] = crop_step(b, single, d)
            for (kind, name), seconds in alternated(contenders, args.steps, args.rounds).items():
                add(kind, name, b, b / seconds)
            for e in envs:
                e.close()

    print(
        f"\n{args.env} {kwargs}: one observation = {space.shape} float32 "
        f"= {obs_bytes} B; maps {map_size}; torch threads = {torch.get_num_threads()}\n"
    )
    print("| env | B | env steps/s | µs / env step | obs MB/s | write limit (steps/s) | % limit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate, limit = r["steps_per_s"], r["write_limit"]
        lim = f"{limit:,.0f} | {100 * rate / limit:.1f}%" if limit else "- | -"
        print(f"| {r['env']} | {r['B']} | {rate:,.0f} | {1e6 / rate:.1f} | {rate * obs_bytes / 1e6:,.1f} | {lim} |")
    single.close()
    if args.json:
        info = {"env": args.env, "env_kwargs": kwargs, "obs_bytes": obs_bytes, "threads": torch.get_num_threads()}
        Path(args.json).write_text(json.dumps({**info, "rows": rows}, indent=1, default=str))
        print(f"\nJSON: {args.json}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="RARL-Shapes-v0")
    p.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs")
    p.add_argument("--steps", type=int, default=300, help="timed step() calls per row (DummyVecEnv: a quarter)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256], help="B of the native vector env")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--device",
        default=None,
        help="also time the torch vector env (envs/torch_vector_env.py) on this device (cpu, cuda, auto) and the crop there",
    )
    p.add_argument("--rounds", type=int, default=5, help="--device: alternated rounds (the median is reported)")
    p.add_argument("--vector-only", action="store_true", help="skip the GlimpseEnv, DummyVecEnv, SB3 and copy=True rows")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(parse_args())))

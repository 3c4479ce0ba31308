"""Shared fixtures: a small Shapes split on the tiny random backbone, cached per test worker."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rarl_gym  # noqa: F401  (registers the env ids)
from rarl_gym.env_settings import settings_kwargs

torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores

#: Env kwargs of a small, fast RARL-Shapes-v0: 40 train / 40 test images of 64 px, tiny backbone.
SMALL = {"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 40, "image_size": 64}}


def c_compiler() -> str | None:
    """The C compiler :mod:`rarl_gym.native` would build its kernel with (the same lookup: ``$CC``,
    then ``cc``, ``gcc``, ``clang`` on the PATH), or ``None``."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _no_native_kernel() -> str | None:
    """Why the compiled crop cannot run here, or ``None`` when it can."""
    if os.environ.get("RARL_NATIVE", "1") in ("0", "false", "no"):
        return "the compiled crop is switched off (RARL_NATIVE=0)"
    if c_compiler() is None:
        return "no C compiler (cc, gcc, clang or $CC): the compiled crop of rarl_gym.native cannot be built"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_c_compiler: tests of the compiled crop (rarl_gym/native.py), skipped where it cannot be built"
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked ``needs_c_compiler`` are skipped, with the reason, where there is no C compiler."""
    reason = _no_native_kernel()
    skip = pytest.mark.skipif(reason is not None, reason=reason or "")
    for item in items:
        if item.get_closest_marker("needs_c_compiler"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """A feature cache private to this test worker (``RARL_CACHE`` points at it)."""
    path = tmp_path_factory.mktemp("rarl-cache")
    os.environ["RARL_CACHE"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def small_kwargs(cache_dir) -> dict:
    return {**SMALL, "cache_dir": cache_dir, "progress": False}


@pytest.fixture(scope="session")
def train_argv(small_kwargs) -> Callable[..., list[str]]:
    """scripts/train_agent.py's arguments for a small RARL run of the small env: ``(run_dir, *extra) -> argv``
    (batch size 16, no progress bar, then ``extra``)."""
    env_kwargs = json.dumps(settings_kwargs(small_kwargs))

    def argv(run_dir: Path, *extra: str) -> list[str]:
        return ["--env-kwargs", env_kwargs, "--run-dir", str(run_dir), "--batch-size", "16", "--no-progress", *extra]

    return argv


@pytest.fixture(scope="session")
def train_small_sb3(small_kwargs) -> Callable[..., dict]:
    """``agents.sb3.train.train_sb3`` on the small env, seed 0, on the CPU, without a progress bar:
    ``(algo, run_dir, total_timesteps, *, n_envs, overrides) -> summary``."""

    def train(algo: str, run_dir: Path, total_timesteps: int, *, n_envs: int, overrides: dict) -> dict:
        from agents.sb3.train import train_sb3

        return train_sb3(
            algo,
            "RARL-Shapes-v0",
            settings_kwargs(small_kwargs),
            run_dir,
            total_timesteps=total_timesteps,
            seed=0,
            device="cpu",
            n_envs=n_envs,
            progress=False,
            overrides=overrides,
        )

    return train


def coco_layout(root: Path, splits: tuple[str, ...] = ("train2017", "val2017"), n: int = 4) -> Path:
    """A tiny COCO layout under ``root``: ``n`` random 48 x 40 images per split, 3 categories, one box each."""
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    rng = np.random.default_rng(0)
    for s, split in enumerate(splits):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            image_id = 100 * s + i + 1
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / split / f"{image_id:012d}.jpg")
            images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 48, "height": 40})
            anns.append(
                {"id": image_id, "image_id": image_id, "category_id": cats[i % 3]["id"], "bbox": [1, 1, 9, 9], "iscrowd": 0}
            )
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )
    return root


def edited_coco(root: Path, edit: Callable[[dict], object], split: str = "train2017") -> Path:
    """A :func:`coco_layout` of one split whose annotation JSON went through ``edit(data)`` (in place)."""
    coco_layout(root, splits=(split,))
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return root

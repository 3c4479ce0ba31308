"""Shared fixtures: a small Shapes split on the tiny random backbone, cached per test worker."""

from __future__ import annotations

import os

import pytest
import torch

import rarl_gym  # noqa: F401  (registers the env ids)

torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores

#: Env kwargs of a small, fast RARL-Shapes-v0: 40 train / 40 test images of 64 px, tiny backbone.
SMALL = {"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 40, "image_size": 64}}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """A feature cache private to this test worker (``RARL_CACHE`` points at it)."""
    path = tmp_path_factory.mktemp("rarl-cache")
    os.environ["RARL_CACHE"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def small_kwargs(cache_dir) -> dict:
    return {**SMALL, "cache_dir": cache_dir, "progress": False}

"""The CUDA paths, where a GPU is visible (skipped elsewhere): float16 extraction from pinned
memory, training and prediction on the device. ``benchmarks/gpu_check.sh`` runs every test named
``*cuda*`` (``pytest -k cuda``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rarl_gym.data.shapes import ShapesDataset
from rarl_gym.features.store import extract_features

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_cuda_fp16_extraction_matches_the_cpu(tmp_path):
    """The same cache from the GPU (float16 autocast, channels-last, pinned memory) as from the CPU, to float16 noise."""
    ds = ShapesDataset("train", num_images=24, image_size=64)
    cpu = extract_features(ds, "efficientnet_lite0", 64, cache_dir=tmp_path / "cpu", batch_size=8, progress=False)
    gpu = extract_features(
        ds, "efficientnet_lite0", 64, cache_dir=tmp_path / "gpu", batch_size=8, progress=False, device="cuda"
    )
    a, b = np.asarray(cpu.features, np.float32), np.asarray(gpu.features, np.float32)
    assert a.shape == b.shape == (24, 1280, 2, 2) and np.isfinite(b).all()
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    np.testing.assert_array_equal(cpu.labels, gpu.labels)


def test_cuda_training_and_prediction_run_on_the_gpu(train_argv, tmp_path):
    """One epoch of the default agent with ``--device cuda``, then the predictor on CUDA, equal to the CPU's."""
    from agents.cli import train as train_agent
    from agents.predict import Predictor

    run = tmp_path / "run"
    assert train_agent.main([*train_argv(run), "--epochs", "1", "--device", "cuda"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["policies"]["learned"]["mAP_area"] <= 1
    on_gpu = Predictor.from_run(run, device="cuda")
    on_cpu = Predictor.from_run(run, device="cpu")
    assert on_gpu.device.type == "cuda"
    ds = ShapesDataset("test", num_images=40, image_size=64)
    images = [ds.load_image(i) for i in range(4)]
    p_gpu, p_cpu = on_gpu.predict(images), on_cpu.predict(images)
    assert len(p_gpu) == len(p_cpu) == 4
    for g, c in zip(p_gpu, p_cpu):  # float16 maps on both (the GPU's from autocast): close, not equal
        np.testing.assert_allclose(g.probs, c.probs, atol=0.05)

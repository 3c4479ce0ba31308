"""The command-line scripts end to end, on the small tiny-backbone Shapes split."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evaluate  # noqa: E402
import train_agent  # noqa: E402
import visualize  # noqa: E402


@pytest.fixture
def train_args(small_kwargs, tmp_path):
    kwargs = {k: v for k, v in small_kwargs.items() if k != "progress"}

    def args(run, *extra):
        # a small oracle (the best of 4 centre sequences per image) keeps the tests fast
        return [
            "--env-kwargs",
            json.dumps(kwargs),
            "--run-dir",
            str(tmp_path / run),
            "--batch-size",
            "16",
            "--no-progress",
            "--hyperparams",
            '{"oracle_samples": 4}',
            *extra,
        ]

    return args


def test_train_writes_a_run_and_prints_the_table(train_args, tmp_path, capsys):
    assert train_agent.main(train_args("a", "--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "mAP (area)" in out and "mAP (VOC07 11-point)" in out and "CF1 (top-3" in out
    assert "learned" in out and "random" in out and "center" in out
    run = tmp_path / "a"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "rng", "step", "config", "settings"}
    assert list((run / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        set(metrics["policies"]) == {"learned", "random", "center", "grid", "oracle", "global", "windows"}
        and len(metrics["reward_curve"]) == 2
    )
    # the oracle keeps, per image, the best of its centre sequences (the learned mode and the grid among them)
    assert metrics["policies"]["oracle"]["mAP_area"] >= min(metrics["policies"][c]["mAP_area"] for c in ("learned", "grid"))
    assert 0.0 <= metrics["policies"]["learned"]["mAP_area"] <= 1.0

    # a second run into the same folder is refused, and the first run is untouched
    before = (run / "checkpoint.pt").read_bytes()
    assert train_agent.main(train_args("a", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (run / "checkpoint.pt").read_bytes() == before

    # resuming with another configuration is refused
    assert train_agent.main(train_args("a", "--resume", "--lr", "0.1", "--epochs", "3")) == 2
    assert "another configuration" in capsys.readouterr().err

    # evaluate.py prints the same table and writes JSON
    assert evaluate.main([str(run / "checkpoint.pt"), "--out", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "mAP (area)" in out
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["mAP_area"] == pytest.approx(metrics["policies"]["learned"]["mAP_area"])
    assert evaluate.main([str(run), "--views", "10", "--out", str(tmp_path / "e10.json")]) == 0
    assert json.loads((tmp_path / "e10.json").read_text())["views"] == 10
    assert evaluate.main([str(run), "--compare", "--out", str(tmp_path / "cmp.json")]) == 0
    assert "global" in capsys.readouterr().out
    compared = json.loads((tmp_path / "cmp.json").read_text())["policies"]
    assert compared["learned"]["mAP_area"] == pytest.approx(metrics["policies"]["learned"]["mAP_area"])
    assert compared["global"]["mAP_area"] == pytest.approx(metrics["policies"]["global"]["mAP_area"])

    # visualize.py draws Figure 2: one PNG per image, the regions on the picture
    assert visualize.main([str(run), "--images", "0", "3", "--out", str(tmp_path / "fig")]) == 0
    pngs = sorted((tmp_path / "fig").glob("*.png"))
    assert [p.name for p in pngs] == ["shapes-test-000000.png", "shapes-test-000003.png"]
    from PIL import Image

    from rarl_gym.data.shapes import ShapesDataset

    fig = np.asarray(Image.open(pngs[0]))
    original = np.asarray(ShapesDataset("test", num_images=40, image_size=64).load_image(0))
    assert fig.shape == (64 + 30, 64, 3) and (fig[:64] != original).any()
    assert visualize.main([str(run), "--images", "99"]) == 2


def test_resume_continues_exactly(train_args, tmp_path):
    assert train_agent.main(train_args("full", "--epochs", "2")) == 0
    assert train_agent.main(train_args("cut", "--epochs", "1")) == 0
    assert train_agent.main(train_args("cut", "--resume", "--epochs", "2")) == 0
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert cut["epoch"] == 2 and cut["step"] == full["step"]
    for name, value in full["model"].items():
        assert torch.allclose(value, cut["model"][name]), name
    assert cut["reward_curve"] == full["reward_curve"]


def test_clean_errors(train_args, tmp_path, capsys):
    assert train_agent.main(["--env", "RARL-Nope-v0", "--run-dir", str(tmp_path / "x")]) == 2
    assert "unknown env id" in capsys.readouterr().err
    assert train_agent.main(["--env-kwargs", "{nope", "--run-dir", str(tmp_path / "x")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert train_agent.main(train_args("y", "--resume")) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert evaluate.main([str(tmp_path / "junk.pt")]) == 2
    assert "not a readable rarl-gym checkpoint" in capsys.readouterr().err


def test_ablate_prints_the_papers_tables(small_kwargs, tmp_path, capsys):
    import ablate

    kwargs = json.dumps({k: v for k, v in small_kwargs.items() if k != "progress"})
    args = [
        "--env-kwargs",
        kwargs,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "abl"),
        "--only",
        "base",
        "no-lstm",
        "one-region",
        "T1",
    ]
    assert ablate.main(args) == 0
    out = capsys.readouterr().out
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "random centres", "fixed grid", "Ours-A", "T = 1"):
        assert title in out
    ckpt = torch.load(tmp_path / "abl" / "T1" / "checkpoint.pt", weights_only=False)
    assert ckpt["settings"]["num_steps"] == 1
    assert torch.load(tmp_path / "abl" / "no-lstm" / "checkpoint.pt", weights_only=False)["agent_config"]["memory"] is False
    assert (
        ckpt["settings"]["scales"]
        != torch.load(tmp_path / "abl" / "one-region" / "checkpoint.pt", weights_only=False)["settings"]["scales"]
    )
    # a second call reuses the finished runs
    before = (tmp_path / "abl" / "base" / "metrics.json").stat().st_mtime_ns
    assert ablate.main(args) == 0
    assert (tmp_path / "abl" / "base" / "metrics.json").stat().st_mtime_ns == before


def test_torchrun_data_parallel(small_kwargs, tmp_path):
    """Two CPU ranks (gloo) under torchrun: each takes half of every epoch's batches."""
    import subprocess

    kwargs = json.dumps({k: v for k, v in small_kwargs.items() if k != "progress"})
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "scripts" / "train_agent.py")]
    cmd += ["--env-kwargs", kwargs, "--epochs", "2", "--batch-size", "8", "--run-dir", str(run), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4  # 40 images / batch 8 = 5 batches -> 4, 2 per rank
    assert "mAP (area)" in done.stdout

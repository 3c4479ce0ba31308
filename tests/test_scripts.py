"""The commands (``rarl-gym train`` / ``evaluate`` / ``visualize`` / ``ablate``, agents/cli, which
scripts/*.py wrap) end to end, on the small tiny-backbone Shapes split."""

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.cli import evaluate, visualize
from agents.cli import train as train_agent
from rarl_gym.env_settings import settings_kwargs

ROOT = Path(__file__).resolve().parents[1]


def _train_argv(small_kwargs: dict, folder: Path, run: str, *extra: str) -> list[str]:
    """train_agent.py's arguments for a small RARL run in ``folder / run``."""
    # a small oracle (the best of 4 centre sequences per image) keeps the tests fast
    return [
        "--env-kwargs",
        json.dumps(settings_kwargs(small_kwargs)),
        "--run-dir",
        str(folder / run),
        "--batch-size",
        "16",
        "--no-progress",
        "--hyperparams",
        '{"oracle_samples": 4}',
        *extra,
    ]


@pytest.fixture
def train_args(small_kwargs, tmp_path):
    return lambda run, *extra: _train_argv(small_kwargs, tmp_path, run, *extra)


@pytest.fixture(scope="module")
def trained(small_kwargs, tmp_path_factory) -> SimpleNamespace:
    """One RARL run of 2 epochs, trained once for the tests of this module that only read it (or
    are refused before writing): its ``folder``, ``run`` folder, printed ``out`` and ``metrics``.
    Under ``pytest -n`` mark its users ``xdist_group("trained")`` so that one worker trains it.
    """
    folder = tmp_path_factory.mktemp("trained")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_agent.main(_train_argv(small_kwargs, folder, "a", "--epochs", "2")) == 0
    run = folder / "a"
    return SimpleNamespace(folder=folder, run=run, out=out.getvalue(), metrics=json.loads((run / "metrics.json").read_text()))


uses_trained = pytest.mark.xdist_group("trained")


@uses_trained
def test_train_prints_the_table(trained):
    assert "mAP (area)" in trained.out and "mAP (VOC07 11-point)" in trained.out and "CF1 (top-3" in trained.out
    assert "learned" in trained.out and "random" in trained.out and "center" in trained.out


@uses_trained
def test_train_writes_the_checkpoint_logs_and_metrics(trained):
    ckpt = torch.load(trained.run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "rng", "step", "config", "settings"}
    assert list((trained.run / "tb").glob("events.out.tfevents.*"))
    policies = trained.metrics["policies"]
    assert set(policies) == {"learned", "random", "center", "grid", "peak", "oracle", "global", "csra", "windows"}
    assert len(trained.metrics["reward_curve"]) == 2
    # the oracle keeps, per image, the best of its centre sequences (the learned mode and the grid among them)
    assert policies["oracle"]["mAP_area"] >= min(policies[c]["mAP_area"] for c in ("learned", "grid"))
    assert 0.0 <= policies["learned"]["mAP_area"] <= 1.0


@uses_trained
def test_a_second_run_into_the_folder_is_refused_and_leaves_it_untouched(trained, small_kwargs, capsys):
    before = (trained.run / "checkpoint.pt").read_bytes()
    assert train_agent.main(_train_argv(small_kwargs, trained.folder, "a", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (trained.run / "checkpoint.pt").read_bytes() == before


@uses_trained
def test_resuming_with_another_configuration_is_refused(trained, small_kwargs, capsys):
    before = (trained.run / "checkpoint.pt").read_bytes()
    argv = _train_argv(small_kwargs, trained.folder, "a", "--resume", "--lr", "0.1", "--epochs", "3")
    assert train_agent.main(argv) == 2
    assert "another configuration" in capsys.readouterr().err
    assert (trained.run / "checkpoint.pt").read_bytes() == before


@uses_trained
def test_evaluate_prints_the_table_and_writes_json(trained, tmp_path, capsys):
    assert evaluate.main([str(trained.run / "checkpoint.pt"), "--out", str(tmp_path / "e.json")]) == 0
    assert "mAP (area)" in capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["mAP_area"] == pytest.approx(trained.metrics["policies"]["learned"]["mAP_area"])
    assert evaluate.main([str(trained.run), "--views", "10", "--out", str(tmp_path / "e10.json")]) == 0
    assert json.loads((tmp_path / "e10.json").read_text())["views"] == 10


@uses_trained
def test_evaluate_compare_gives_the_rows_of_the_training(trained, tmp_path, capsys):
    assert evaluate.main([str(trained.run), "--compare", "--out", str(tmp_path / "cmp.json")]) == 0
    assert "global" in capsys.readouterr().out
    compared = json.loads((tmp_path / "cmp.json").read_text())["policies"]
    for row in ("learned", "global"):
        assert compared[row]["mAP_area"] == pytest.approx(trained.metrics["policies"][row]["mAP_area"])


@uses_trained
def test_visualize_draws_figure_2(trained, tmp_path):
    """One PNG per image, the regions drawn on the picture; an image outside the split is an error."""
    from PIL import Image

    from rarl_gym.data.shapes import ShapesDataset

    assert visualize.main([str(trained.run), "--images", "0", "3", "--out", str(tmp_path / "fig")]) == 0
    pngs = sorted((tmp_path / "fig").glob("*.png"))
    assert [p.name for p in pngs] == ["shapes-test-000000.png", "shapes-test-000003.png"]
    fig = np.asarray(Image.open(pngs[0]))
    original = np.asarray(ShapesDataset("test", num_images=40, image_size=64).load_image(0))
    assert fig.shape == (64 + 30, 64, 3) and (fig[:64] != original).any()
    assert visualize.main([str(trained.run), "--images", "99"]) == 2


@uses_trained
def test_resume_continues_exactly(trained, train_args, tmp_path):
    """1 epoch, then --resume to 2, ends where the uninterrupted 2-epoch run ended."""
    assert train_agent.main(train_args("cut", "--epochs", "1")) == 0
    assert train_agent.main(train_args("cut", "--resume", "--epochs", "2")) == 0
    full = torch.load(trained.run / "checkpoint.pt", weights_only=False)
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
    from agents.cli import ablate

    kwargs = json.dumps(settings_kwargs(small_kwargs))
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
        "paper",
        "--hyperparams",
        '{"oracle_samples": 0}',
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
    # --hyperparams reaches every variant; --epochs wins over the paper's own 15 epochs
    paper = torch.load(tmp_path / "abl" / "paper" / "checkpoint.pt", weights_only=False)["config"]
    assert paper["epochs"] == 1 and paper["head"] == "lstm" and paper["oracle_samples"] == 0
    assert "oracle" not in json.loads((tmp_path / "abl" / "base" / "metrics.json").read_text())["policies"]
    # a second call reuses the finished runs
    before = (tmp_path / "abl" / "base" / "metrics.json").stat().st_mtime_ns
    assert ablate.main(args) == 0
    assert (tmp_path / "abl" / "base" / "metrics.json").stat().st_mtime_ns == before


def test_torchrun_data_parallel(small_kwargs, tmp_path):
    """Two CPU ranks (gloo) under torchrun: each takes half of every epoch's batches."""
    import subprocess

    kwargs = json.dumps(settings_kwargs(small_kwargs))
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "scripts" / "train_agent.py")]
    cmd += ["--env-kwargs", kwargs, "--epochs", "2", "--batch-size", "8", "--run-dir", str(run), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4  # 40 images / batch 8 = 5 batches -> 4, 2 per rank
    assert "mAP (area)" in done.stdout

"""TensorBoard outputs of a training run besides the scalars: Figure 2 images, PR curves, hparams."""

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rarl_gym.data.shapes import CLASSES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_agent  # noqa: E402


def tags(folder: Path) -> dict:
    """Every tag of the event files directly in ``folder``, by kind."""
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_a_rarl_run_logs_figure2_pr_curves_and_hparams(train_argv, tmp_path):
    run = tmp_path / "rarl"
    assert train_agent.main(train_argv(run, "--epochs", "2", "--device", "cpu")) == 0
    acc = tags(run / "tb")
    images = acc.Tags()["images"]
    assert sorted(images) == [f"figure2/{i}" for i in range(4)]
    steps = [e.step for e in acc.Images("figure2/0")]
    assert len(steps) == 2 and steps[0] < steps[1]  # one per epoch
    picture = acc.Images("figure2/0")[0]
    assert picture.width == 64 and picture.height > 64  # the image and the labels below it
    pr = [t for t in acc.Tags()["tensors"] if t.startswith("pr/")]
    assert sorted(pr) == sorted(f"pr/{c}" for c in CLASSES)
    hp = tags(run / "tb" / "hparams")
    assert "hparam/mAP_area_learned" in hp.Tags()["scalars"]


def test_an_sb3_run_logs_figure2_pr_curves_and_hparams(train_small_sb3, tmp_path):
    run = tmp_path / "ppo"
    train_small_sb3("ppo", run, 192, n_envs=4, overrides={"n_steps": 24, "batch_size": 48, "n_epochs": 1})
    (sb3_dir,) = [p for p in (run / "tb").iterdir() if p.is_dir() and p.name.startswith("ppo")]
    during = tags(sb3_dir)
    assert "figure2/0" in during.Tags()["images"] and len(during.Images("figure2/0")) >= 2
    final = tags(run / "tb")
    assert {t for t in final.Tags()["tensors"] if t.startswith("pr/")} >= {"pr/circle", "pr/bowtie"}
    assert "figure2/0" in final.Tags()["images"]
    assert "hparam/mAP_area_learned" in tags(run / "tb" / "hparams").Tags()["scalars"]

"""benchmarks/figures.py: learning curves, the comparison chart and the per-label gallery, drawn
from tiny run folders made here (a RARL run and an SB3 PPO run of the small Shapes env)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("figures", ROOT / "benchmarks" / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


@pytest.fixture(scope="module")
def runs(train_argv, train_small_sb3, tmp_path_factory):
    """A 2-epoch RARL run and a 96-step PPO run of the small env."""
    from agents.cli import train as train_agent

    folder = tmp_path_factory.mktemp("figure-runs")
    assert train_agent.main([*train_argv(folder / "rarl"), "--epochs", "2"]) == 0
    train_small_sb3("ppo", folder / "ppo", 96, n_envs=4, overrides={"n_steps": 24, "batch_size": 48, "n_epochs": 1})
    return folder / "rarl", folder / "ppo"


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_curves_come_from_the_event_files(runs):
    rarl, ppo = runs
    c = figures.curves(rarl, figures.read_metrics(rarl))
    assert c["units"] == "2 epochs" and c["reward"][0] == [50.0, 100.0]  # train/reward, one per epoch
    tb = figures.read_scalars(rarl)
    assert [v for _, v in tb["train/reward"]] == c["reward"][1]
    assert c["map"][0] == [50.0, 100.0] and c["map"][1][-1] == pytest.approx(  # val mAP every epoch (trainer)
        figures.read_metrics(rarl)["policies"]["learned"]["mAP_area"]
    )
    p = figures.curves(ppo, figures.read_metrics(ppo))
    assert p["units"] == "96 env steps" and len(p["reward"][0]) >= 1 and p["reward"][0][-1] == 100.0  # rollout/ep_rew_mean


def test_the_command_draws_curves_and_chart_and_skips_the_gallery_without_boxes(runs, tmp_path, capsys):
    rarl, ppo = runs
    out = tmp_path / "fig"
    assert figures.main(["--runs", str(rarl), str(ppo), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gallery skipped" in printed
    w, h = _png(out / "learning_curves.png")
    assert w > 600 and h > 200
    assert _png(out / "comparison.png")[0] > _png(out / "learning_curves.png")[0] // 2
    assert not (out / "gallery.png").exists()
    # a folder that is no run: a clean error, exit status 2, nothing drawn
    assert figures.main(["--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "f2")]) == 2
    assert "holds no metrics.json" in capsys.readouterr().err and not (tmp_path / "f2").exists()


def test_the_chart_has_the_grounding_bars_when_the_rows_have_them(runs, tmp_path, monkeypatch):
    rarl, _ = runs
    run = tmp_path / "grounded"
    shutil.copytree(rarl, run)
    metrics = json.loads((run / "metrics.json").read_text())
    for i, row in enumerate(metrics["policies"].values()):
        row.update(pointing=0.5 + 0.01 * i, corloc=None if i == 0 else 0.3)
    (run / "metrics.json").write_text(json.dumps(metrics))
    drawn = []
    import matplotlib.axes

    real_bar = matplotlib.axes.Axes.bar

    def bar(self, x, height, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(height)))
        return real_bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    figures.comparison([run], tmp_path, 60)
    by = dict(drawn)
    n = len(metrics["policies"])
    assert set(by) == {"mAP (area)", "pointing", "CorLoc"}
    assert by["pointing"] == pytest.approx([100 * (0.5 + 0.01 * i) for i in range(n)])
    assert by["CorLoc"] == pytest.approx([30.0] * (n - 1))  # the row without CorLoc has no bar
    assert by["mAP (area)"] == pytest.approx([100 * r["mAP_area"] for r in metrics["policies"].values()])


def test_gallery_draws_the_label_boxes_of_predict_lines(tmp_path, capsys):
    Image.new("RGB", (120, 90), (30, 90, 160)).save(tmp_path / "a.jpg")
    Image.new("RGB", (100, 100), (200, 40, 40)).save(tmp_path / "b.png")
    lines = [
        {"image": "a.jpg", "labels": [{"label": "cat", "score": 0.9}], "label_boxes": {"cat": [10, 10, 60, 50]}},
        {"image": str(tmp_path / "b.png"), "labels": [{"label": "dog", "score": 0.7, "box": [5, 5, 50, 50]}]},
        {"image": "missing.jpg", "labels": [{"label": "dog", "score": 0.7, "box": [5, 5, 50, 50]}]},
    ]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert figures.label_boxes(lines[0]) == {"cat": ([10, 10, 60, 50], 0.9)}
    assert figures.label_boxes(lines[1]) == {"dog": ([5, 5, 50, 50], 0.7)}
    path = figures.gallery(preds, tmp_path, 8, 60)
    assert path == tmp_path / "gallery.png" and _png(path)[0] > 100
    assert "missing.jpg not found" in capsys.readouterr().out
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"image": "a.jpg", "labels": [{"label": "cat", "score": 0.9}]}) + "\n")
    assert figures.gallery(bare, tmp_path / "none", 8, 60) is None
    assert "gallery skipped" in capsys.readouterr().out


def test_gallery_from_the_predict_script_output(runs, tmp_path, capsys):
    """Whatever predict writes: the gallery is drawn when its lines carry boxes, else skipped with the message."""
    from agents.cli import predict
    from rarl_gym.data.shapes import ShapesDataset

    rarl, _ = runs
    ds = ShapesDataset("test", num_images=40, image_size=64)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        ds.load_image(i).save(folder / f"{i}.png")
    out = tmp_path / "preds.jsonl"
    assert predict.main([str(folder), "--run", str(rarl), "--out", str(out), "--device", "cpu"]) == 0
    lines = [json.loads(t) for t in out.read_text().splitlines()]
    has_boxes = any(figures.label_boxes(x) for x in lines)
    print("predict lines with boxes:", has_boxes)
    capsys.readouterr()
    path = figures.gallery(out, tmp_path, 8, 60)
    assert (path is not None) == has_boxes
    if not has_boxes:
        assert "gallery skipped" in capsys.readouterr().out

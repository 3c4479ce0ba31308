"""agents.predict and scripts/predict.py: new images in, labels out, equal to the evaluation on the cache."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.predict import Predictor
from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import predict as predict_script  # noqa: E402
import train_agent  # noqa: E402

INDICES = [0, 3, 5, 6, 11]


@pytest.fixture(scope="module")
def rarl_run(train_argv, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("predict") / "rarl"
    assert train_agent.main(train_argv(run, "--epochs", "1", "--device", "cpu")) == 0
    return run


@pytest.fixture(scope="module")
def test_images(small_kwargs, tmp_path_factory) -> list[Path]:
    """Some test-split images of the small Shapes env, as PNG files (lossless: the cache's pixels)."""
    settings = EnvSettings.from_env_id("RARL-Shapes-v0", settings_kwargs(small_kwargs))
    dataset = settings.source.make_dataset("test")
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in INDICES:
        paths.append(folder / f"{dataset.image_id(i)}.png")
        dataset.load_image(i).save(paths[-1])
    return paths


def cached_probs(run: Path, views: int) -> np.ndarray:
    """What scripts/evaluate.py computes for the test split (agents.rarl.trainer.predict on the cache)."""
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint, predict

    ckpt = load_checkpoint(run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    _, store = settings.source.open_split("test", progress=False)
    probs, _ = predict(agent_from_checkpoint(ckpt), store, settings, views=views, crop=ckpt["config"]["augment_crop"])
    return probs[INDICES]


@pytest.mark.parametrize("views", [1, 10])
def test_predict_equals_the_evaluation_on_the_cache(rarl_run, test_images, views):
    predictor = Predictor.from_run(rarl_run, device="cpu")
    preds = predictor.predict(test_images, views=views)
    probs = np.stack([p.probs for p in preds])
    np.testing.assert_allclose(probs, cached_probs(rarl_run, views), rtol=1e-3, atol=1e-5)
    settings = predictor.settings
    p = preds[0]
    assert p.source == str(test_images[0]) and p.size == (64, 64) and len(p.classes) == len(p.probs) == 12
    assert p.boxes.shape == (views, settings.num_steps, settings.num_regions, 4)
    assert (p.boxes >= -1e-4).all() and (p.boxes <= 64 + 1e-4).all()
    assert (p.boxes[..., 2] > p.boxes[..., 0]).all() and (p.boxes[..., 3] > p.boxes[..., 1]).all()
    assert p.labels == [c for c, q in p.top(3) if q >= 0.1]
    json.dumps(p.to_dict())
    # PIL images and a tensor batch give the same numbers as the files
    pil = [Image.open(path).convert("RGB") for path in test_images]
    tensor = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil])
    for other in (predictor.predict(pil, views=views), predictor.predict(tensor, views=views)):
        np.testing.assert_allclose(np.stack([q.probs for q in other]), probs, rtol=1e-5, atol=1e-7)
        assert np.allclose(other[1].boxes, preds[1].boxes)
    assert predictor.predict(tensor[:2], views=views)[1].source == "<image 1>"


def test_the_boxes_are_the_evaluation_centres(rarl_run, test_images):
    """Single view: the pixel boxes are the anchors around the centres the rollout takes on the cache."""
    from agents.rarl.rollout import rollout
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym.glimpse import anchor_boxes, boxes_to_pixels

    ckpt = load_checkpoint(rarl_run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    _, store = settings.source.open_split("test", progress=False)
    feats, labels = store.batch(INDICES)
    with torch.no_grad():
        out = rollout(agent_from_checkpoint(ckpt), feats, labels, **settings.rollout_kwargs(), sample=False)
    want = boxes_to_pixels(anchor_boxes(out.centers[2], settings.scales, settings.ratios), 64, 64).numpy()
    got = Predictor.from_run(rarl_run, device="cpu").predict(test_images[2:3])[0].boxes[0]
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_a_mismatched_backbone_is_an_error(rarl_run, monkeypatch):
    with pytest.raises(ConfigError, match="trained on 'tiny' features"):
        Predictor.from_run(rarl_run, backbone="efficientnet_lite0")
    with pytest.raises(ConfigError, match="64 px"):
        Predictor.from_run(rarl_run, input_size=128)
    import agents.predict as predict_mod
    from rarl_gym.features.backbones import build_backbone

    def other_weights(*args, **kwargs):  # a backbone that loads other weights than the cached features had
        net = build_backbone(*args, **kwargs)
        net.weights = "imagenet:something-else"
        return net

    monkeypatch.setattr(predict_mod, "build_backbone", other_weights)
    with pytest.raises(CheckpointError, match="something-else"):
        Predictor.from_run(rarl_run)
    with pytest.raises(CheckpointError, match="no trained run"):
        Predictor.from_run(rarl_run / "tb")


def test_an_env_trained_agent_predicts_as_it_is_evaluated(small_kwargs, tmp_path, test_images):
    """CEM (through the env): predict on the files == the env's evaluation episodes on the cache."""
    from agents.common.evaluation import evaluate_policy_on_split
    from agents.custom.cem import load_cem, train_cem

    env_kwargs = settings_kwargs(small_kwargs)
    run = tmp_path / "cem"
    train_cem("RARL-Shapes-v0", env_kwargs, run, total_timesteps=600, seed=0, progress=False, population=4, episodes=4)
    policy, _config = load_cem(run)
    want = evaluate_policy_on_split(policy, "RARL-Shapes-v0", env_kwargs, "test").probs[INDICES]
    preds = Predictor.from_run(run, device="cpu").predict(test_images)
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), want, rtol=1e-3, atol=1e-5)
    assert preds[0].boxes.shape[:2] == (1, 5)
    with pytest.raises(ConfigError, match="whole image"):
        Predictor.from_run(run).predict(test_images[:1], views=10)


def test_an_sb3_model_predicts_as_it_is_evaluated(small_kwargs, train_small_sb3, tmp_path, test_images):
    from agents.common.evaluation import evaluate_policy_on_split
    from agents.sb3.train import load_model

    env_kwargs = settings_kwargs(small_kwargs)
    run = tmp_path / "ppo"
    train_small_sb3("ppo", run, 96, n_envs=4, overrides={"n_steps": 24, "batch_size": 48, "n_epochs": 1})
    model, _ = load_model(run, "cpu")
    want = evaluate_policy_on_split(model, "RARL-Shapes-v0", env_kwargs, "test").probs[INDICES]
    preds = Predictor.from_run(run / "model.zip", device="cpu").predict(test_images)
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_script_labels_a_folder_and_skips_bad_files(rarl_run, test_images, tmp_path, capsys, workers):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in test_images[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    Image.open(test_images[3]).convert("RGB").save(folder / "photo.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(Image.open(test_images[4]).tobytes()[:300])  # not a JPEG at all
    jpeg = (folder / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.txt").write_text("not an image")
    out, draw = tmp_path / "preds.jsonl", tmp_path / "fig"
    args = [
        str(folder),
        "--run",
        str(rarl_run),
        "--out",
        str(out),
        "--draw",
        str(draw),
        "--device",
        "cpu",
        "--workers",
        str(workers),
        "--batch-size",
        "2",
    ]
    assert predict_script.main(args) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in lines) == sorted([p.name for p in test_images[:3]] + ["photo.jpg"])
    assert all(len(r["boxes"]) == 1 and len(r["boxes"][0]) == 5 and set(r["probs"]) == set(lines[0]["probs"]) for r in lines)
    assert "4 image(s) labelled, 3 skipped" in captured.out
    for bad in ("broken.jpg", "truncated.jpg", "notes.txt"):
        assert f"skipped {folder / bad}" in captured.err
    assert sorted(p.name for p in draw.iterdir()) == sorted([p.stem + ".png" for p in test_images[:3]] + ["photo.png"])
    assert Image.open(draw / "photo.png").size[1] > 64  # the picture and the labels below it


def test_the_script_refuses_what_it_cannot_do(rarl_run, tmp_path, capsys):
    assert predict_script.main([str(tmp_path / "nothing-here"), "--run", str(rarl_run)]) == 2
    assert "no file or folder" in capsys.readouterr().err
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 10)
    assert predict_script.main([str(tmp_path / "junk.bin"), "--run", str(rarl_run), "--no-progress"]) == 2
    assert "no image could be read" in capsys.readouterr().err

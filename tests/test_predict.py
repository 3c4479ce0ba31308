"""agents.predict and ``rarl-gym predict`` (agents/cli/predict.py): new images in, labels out, equal to the
evaluation on the cache."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.cli import predict as predict_script
from agents.cli import train as train_agent
from agents.predict import Predictor
from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]

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


def cached_probs(run: Path, views: int, centers: str = "learned") -> np.ndarray:
    """What rarl-gym evaluate computes for the test split (agents.rarl.evaluate.predict on the cache)."""
    from agents.rarl.evaluate import predict
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    _, store = settings.source.open_split("test", progress=False)
    agent = agent_from_checkpoint(ckpt)
    probs = predict(agent, store, settings, centers=centers, views=views, view_crop=ckpt["config"]["augment_crop"]).probs
    return probs[INDICES]


def test_predict_looks_where_it_is_told(rarl_run, test_images):
    """``centers="learned"`` predicts with the agent's own policy (the default is the peak policy of the
    same model), as evaluate does; an unknown choice is a ConfigError naming the valid ones."""
    from rarl_gym.errors import ConfigError

    assert Predictor.from_run(rarl_run, device="cpu").centers == "peak"
    preds = Predictor.from_run(rarl_run, device="cpu", centers="learned").predict(test_images)
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), cached_probs(rarl_run, 1), rtol=1e-3, atol=1e-5)
    with pytest.raises(ConfigError, match="use one of learned"):
        Predictor.from_run(rarl_run, device="cpu", centers="spiral")


@pytest.mark.parametrize("views", [1, 10])
def test_predict_equals_the_evaluation_on_the_cache(rarl_run, test_images, views):
    predictor = Predictor.from_run(rarl_run, device="cpu")
    preds = predictor.predict(test_images, views=views)
    probs = np.stack([p.probs for p in preds])
    np.testing.assert_allclose(probs, cached_probs(rarl_run, views, "peak"), rtol=1e-3, atol=1e-5)  # the default: peak
    settings = predictor.settings
    p = preds[0]
    assert p.source == str(test_images[0]) and p.size == (64, 64) and len(p.classes) == len(p.probs) == 12
    assert p.boxes.shape == (views, settings.num_steps, settings.num_regions, 4)
    assert (p.boxes >= -1e-4).all() and (p.boxes <= 64 + 1e-4).all()
    assert (p.boxes[..., 2] > p.boxes[..., 0]).all() and (p.boxes[..., 3] > p.boxes[..., 1]).all()
    assert p.labels == [c for c, q in p.top(5) if q >= 0.1]  # the default: top 5 with probability >= 0.1
    assert [e["label"] for e in p.scores] == p.labels
    assert [e["score"] for e in p.scores] == sorted((e["score"] for e in p.scores), reverse=True)
    row = json.loads(json.dumps(p.to_dict()))
    assert row["labels"] == p.scores and set(row["probs"]) == set(p.classes)  # probabilities by class kept
    # PIL images and a tensor batch give the same numbers as the files
    pil = [Image.open(path).convert("RGB") for path in test_images]
    tensor = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil])
    for other in (predictor.predict(pil, views=views), predictor.predict(tensor, views=views)):
        np.testing.assert_allclose(np.stack([q.probs for q in other]), probs, rtol=1e-5, atol=1e-7)
        assert np.allclose(other[1].boxes, preds[1].boxes)
    assert predictor.predict(tensor[:2], views=views)[1].source == "<image 1>"


def test_predict_averages_m_sampled_sequences_as_the_evaluation_does(rarl_run):
    """``samples=M`` averages M sequences sampled from the learned policy, as ``evaluate --samples M``
    does (the same maps, seed and draws); deterministic centres refuse it."""
    from agents.rarl.evaluate import predict
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym.features.store import FeatureStore

    ckpt = load_checkpoint(rarl_run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    _, store = settings.source.open_split("test", progress=False)
    sub = FeatureStore(path=store.path, features=np.asarray(store.features[:5]), labels=store.labels[:5], meta=store.meta)
    maps, sizes = torch.from_numpy(np.array(sub.features)), [(64, 64)] * 5  # the split's first 5 images
    predictor = Predictor.from_run(rarl_run, device="cpu", centers="learned")
    probs, boxes, _ = predictor.predict_maps(maps, sizes, samples=4)
    want = predict(agent_from_checkpoint(ckpt), sub, settings, samples=4, view_crop=ckpt["config"]["augment_crop"]).probs
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(probs, predictor.predict_maps(maps, sizes)[0], atol=1e-4)  # four sequences, not one
    assert boxes.shape == (5, 1, settings.num_steps, settings.num_regions, 4)
    with pytest.raises(ConfigError, match="the same every time"):
        Predictor.from_run(rarl_run, device="cpu").predict_maps(maps, sizes, samples=4)  # the default: peak
    with pytest.raises(ConfigError, match="samples must be a positive int"):
        predictor.predict(maps[:1].new_zeros(1, 3, 64, 64, dtype=torch.uint8), samples=0)


def test_the_boxes_are_the_evaluation_centres(rarl_run, test_images):
    """Single view: the pixel boxes are the anchors around the centres the rollout takes on the cache (peak: the default)."""
    from agents.rarl.rollout import rollout
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym.glimpse import anchor_boxes, boxes_to_pixels

    ckpt = load_checkpoint(rarl_run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    _, store = settings.source.open_split("test", progress=False)
    feats, labels = store.batch(INDICES)
    with torch.no_grad():
        out = rollout(agent_from_checkpoint(ckpt), feats, labels, **settings.rollout_kwargs(), centers="peak", sample=False)
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
    image = tmp_path / "one.png"
    Image.new("RGB", (64, 64)).save(image)
    assert predict_script.main([str(image), "--run", str(rarl_run), "--no-progress", "--samples", "4"]) == 2
    assert "the same every time" in capsys.readouterr().err  # the default centres (peak) never change
    assert predict_script.main([str(image), "--run", str(rarl_run), "--centers", "learned", "--samples", "4"]) == 0


# -- predict like the ecosystem: [{"label", "score"}] by score, top_k / threshold checked, formats --
def test_labels_as_the_ecosystem_gives_them(rarl_run, test_images):
    """Hugging Face's convention: per image ``[{"label", "score"}]`` sorted by score, at most top_k;
    the threshold cuts the list; ``predictor(images)`` gives the lists; every class's probability is kept."""
    predictor = Predictor.from_run(rarl_run, device="cpu")
    lists = predictor(test_images[:2], top_k=4, threshold=None)
    assert len(lists) == 2 and all(len(labels) == 4 for labels in lists)
    for labels, pred in zip(lists, predictor.predict(test_images[:2], top_k=4, threshold=None)):
        assert [{k: e[k] for k in ("label", "score")} for e in labels] == [
            {"label": c, "score": round(q, 6)} for c, q in pred.top(4)
        ]
        assert [e["score"] for e in labels] == sorted((e["score"] for e in labels), reverse=True)
    every = predictor.predict(test_images[:1], top_k=None, threshold=None)[0]
    assert len(every.scores) == len(every.classes)
    cut = predictor.predict(test_images[:1], top_k=None, threshold=0.5)[0]
    assert all(e["score"] >= 0.5 for e in cut.scores) and len(cut.scores) == int((every.probs >= 0.5).sum())


def test_each_label_has_the_box_of_the_region_that_gave_it(rarl_run, test_images):
    """A RARL run tells where each predicted label is: the region (one of the glimpses' T x K regions)
    whose score is the label's max, in pixels, in ``label_boxes``, as ``"box"`` in the label's entry and
    in the JSON; the picture draws one labelled box per label."""
    pred = Predictor.from_run(rarl_run, device="cpu").predict(test_images[:1], top_k=2, threshold=None)[0]
    assert set(pred.label_boxes) == set(pred.labels)
    regions = pred.boxes[0].reshape(-1, 4)  # [T * K, 4] pixels
    for entry in pred.scores:
        box = np.asarray(pred.label_boxes[entry["label"]])
        assert np.abs(regions - box).max(1).min() < 1e-3  # one of the regions looked at
        assert entry["box"] == pytest.approx(box.tolist(), abs=0.051)
    assert pred.to_dict()["label_boxes"] == {e["label"]: e["box"] for e in pred.scores}
    picture = np.asarray(pred.figure2())
    assert picture.shape[1] == pred.size[0] and picture.shape[0] > pred.size[1]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"top_k": 0}, "top_k must be a positive int"),
        ({"top_k": -1}, "top_k must be a positive int"),
        ({"top_k": 2.5}, "top_k must be a positive int"),
        ({"top_k": True}, "top_k must be a positive int"),
        ({"threshold": float("nan")}, "threshold must be a probability"),
        ({"threshold": -0.1}, "threshold must be a probability"),
        ({"threshold": 1.5}, "threshold must be a probability"),
        ({"threshold": "0.1"}, "threshold must be a probability"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"batch_size": -3}, "batch_size must be a positive int"),
    ],
)
def test_the_predictor_refuses_a_bad_label_rule(rarl_run, test_images, kwargs, word):
    predictor = Predictor.from_run(rarl_run, device="cpu")
    with pytest.raises(ConfigError, match=word):
        predictor.predict(test_images[:1], **kwargs)
    with pytest.raises(ConfigError, match=word):
        next(iter(predictor.predict_files(test_images[:1], **kwargs)))
    with pytest.raises(ConfigError, match="workers must be"):
        next(iter(predictor.predict_files(test_images[:1], workers=-1)))


def test_the_script_writes_jsonl_and_csv_and_prints_either(rarl_run, test_images, tmp_path, capsys):
    import csv

    base = [str(p) for p in test_images[:3]] + ["--run", str(rarl_run), "--device", "cpu", "--no-progress", "--top-k", "2"]
    assert predict_script.main([*base, "--out", str(tmp_path / "p.csv"), "--threshold", "0"]) == 0
    table = capsys.readouterr().out
    assert "labels (probability)" in table and "3 image(s) labelled" in table
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["image"] for r in rows] == [str(p) for p in test_images[:3]]
    assert list(rows[0])[:7] == ["image", "width", "height", "label_1", "score_1", "label_2", "score_2"]
    assert len(rows[0]) == 7 + 12 and float(rows[0]["score_1"]) >= float(rows[0]["score_2"])
    assert float(rows[0][rows[0]["label_1"]]) == pytest.approx(float(rows[0]["score_1"]))  # probs by class
    # --format jsonl: one JSON object per image on stdout and nothing else there (the summary goes to stderr)
    assert predict_script.main([*base, "--format", "jsonl"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 3 and all(
        1 <= len(r["labels"]) <= 2 and set(r["labels"][0]) == {"label", "score", "box"} for r in lines
    )
    assert "3 image(s) labelled" in captured.err
    assert predict_script.main([*base, "--format", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("image,width,height,label_1,score_1") and len(out) == 4


def test_the_script_never_draws_one_picture_over_another(rarl_run, test_images, tmp_path, capsys):
    """ok.jpg, ok.tiff and ok.webp (and OK.png on a case-insensitive disk) give a picture each."""
    folder = tmp_path / "same-stem"
    folder.mkdir()
    image = Image.open(test_images[0]).convert("RGB")
    for name, fmt in (("ok.jpg", "JPEG"), ("ok.tiff", "TIFF"), ("ok.webp", "WEBP"), ("OK.png", "PNG")):
        image.save(folder / name, format=fmt)
    out, draw = tmp_path / "p.jsonl", tmp_path / "fig"
    argv = [str(folder), "--run", str(rarl_run), "--device", "cpu", "--no-progress", "--out", str(out), "--draw", str(draw)]
    assert predict_script.main(argv) == 0
    pictures = sorted(p.name for p in draw.iterdir())
    assert len(pictures) == 4 and len({p.lower() for p in pictures}) == 4, pictures
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["picture"]).name for r in rows) == pictures  # each line names its picture
    assert predict_script.picture_names([Path("a/x.jpg"), Path("b/x.jpg"), Path("x.JPG")]) == [
        "x.png",
        "x_jpg.png",
        "x_jpg_2.png",
    ]

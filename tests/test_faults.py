"""Issue 9: bad input, full disks, crashes and concurrent runs. Each test would have caught one defect.

A full disk is simulated by making the system call that meets it fail with ``ENOSPC``
(``posix_fallocate``, ``fsync``); locks are taken by a second open file description in this
process (``flock`` locks conflict between descriptions, as between processes).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import coco_layout, edited_coco
from PIL import Image

from rarl_gym import io as rio
from rarl_gym.data import COCODataset
from rarl_gym.data.shapes import ShapesDataset
from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    DiskFullError,
    InUseError,
    NotWritableError,
    RarlGymError,
)
from rarl_gym.features import store as store_mod
from rarl_gym.features.store import FeatureStore, entry_path, extract_features
from rarl_gym.sources import FeatureSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evaluate  # noqa: E402
import train_agent  # noqa: E402


def extract(ds, cache, **kw):
    return extract_features(ds, "tiny", 64, cache_dir=cache, batch_size=4, progress=False, **kw)


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


# -- rarl_gym.io ---------------------------------------------------------------------------------
def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    rio.atomic_write_bytes(target, b"old")
    monkeypatch.setattr(rio.os, "fsync", enospc)
    with pytest.raises(DiskFullError, match="disk is full") as err:
        rio.atomic_write_bytes(target, b"new" * 1000, what="checkpoint")
    assert str(target) in str(err.value) and "Fix: free space" in str(err.value)
    with pytest.raises(DiskFullError):
        rio.atomic_torch_save({"x": torch.zeros(3)}, target)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    # a failure that is not a full disk propagates unchanged, and cleans up too
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):
        rio.atomic_write(target, lambda f: (f.write(b"partial"), 1 / 0))
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_reserve_space_names_a_full_disk_and_falls_back_to_a_free_space_check(tmp_path, monkeypatch):
    path = tmp_path / "features.f16"
    rio.reserve_space(path, 4096)
    assert path.stat().st_size == 4096 and path.stat().st_blocks * 512 >= 4096
    monkeypatch.setattr(rio.os, "posix_fallocate", enospc)
    with pytest.raises(DiskFullError, match=r"needs 1\.0 GiB") as err:
        rio.reserve_space(tmp_path / "big.f16", 1 << 30, what="feature cache")
    assert "feature cache" in str(err.value) and "free" in str(err.value)
    assert (tmp_path / "big.f16").stat().st_size == 0  # nothing half-reserved that looks complete

    def unsupported(*_a):
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(rio.os, "posix_fallocate", unsupported)
    monkeypatch.setattr(rio, "free_bytes", lambda _p: 100)
    with pytest.raises(DiskFullError):
        rio.reserve_space(tmp_path / "c.f16", 1 << 20)


def test_file_lock_names_its_holder_and_waits(tmp_path):
    lock_path = tmp_path / ".lock"
    with rio.FileLock(lock_path, "the thing"):
        with pytest.raises(InUseError, match=rf"the thing is in use by process {os.getpid()}") as err:
            rio.FileLock(lock_path, "the thing").acquire()
        assert "Fix:" in str(err.value)
    waited = []
    first = rio.FileLock(lock_path, "x").acquire()
    threading.Timer(0.3, first.release).start()
    start = time.monotonic()
    with rio.FileLock(lock_path, "x", blocking=True, on_wait=waited.append):
        assert time.monotonic() - start >= 0.2
    assert waited and f"process {os.getpid()}" in waited[0]


# -- 1. a full disk during extraction ------------------------------------------------------------
def test_a_full_disk_before_extraction_is_named_and_the_extraction_resumes_after(tmp_path, monkeypatch):
    ds = ShapesDataset("train", num_images=6, image_size=64)
    clean = extract(ds, tmp_path / "clean")
    monkeypatch.setattr(rio.os, "posix_fallocate", enospc)
    with pytest.raises(DiskFullError, match="needs") as err:
        extract(ds, tmp_path / "full")
    assert "features.f16" in str(err.value)
    (entry,) = (tmp_path / "full").iterdir()
    assert not (entry / "meta.json").exists()
    with pytest.raises(CorruptFileError, match="not finished"):
        FeatureStore.open(entry)
    monkeypatch.undo()  # space freed: the same call finishes the entry
    again = extract(ds, tmp_path / "full")
    assert again.path == entry and np.array_equal(again.features, clean.features)


def test_a_full_disk_while_recording_progress_is_named_and_resumable(tmp_path, monkeypatch):
    ds = ShapesDataset("train", num_images=6, image_size=64)
    real = store_mod._atomic_save_npy
    calls = []

    def full_on_second(path, array):
        calls.append(path.name)
        if len(calls) == 2:
            rio.atomic_write(path, lambda f: enospc(), what="feature cache file")
        real(path, array)

    monkeypatch.setattr(store_mod, "_atomic_save_npy", full_on_second)
    with pytest.raises(DiskFullError, match="progress.npy"):
        extract(ds, tmp_path)
    (entry,) = tmp_path.iterdir()
    assert not (entry / "meta.json").exists() and leftovers(entry) == []
    monkeypatch.undo()
    assert len(extract(ds, tmp_path)) == 6


# -- 2. COCO 2017 only ---------------------------------------------------------------------------
def test_coco_2017_alone_works_in_locate_mode(tmp_path):
    root = coco_layout(tmp_path / "coco")
    kwargs = {"root": str(root), "backbone": "tiny", "input_size": 64, "cache_dir": str(tmp_path / "cache"), "progress": False}
    source = FeatureSource(dataset="coco", root=str(root), backbone="tiny", input_size=64)
    assert (source.train_split, source.eval_split) == ("train2017", "val2017")
    assert source.scorer_split("val2017") == "train2017"
    env = gym.make("RARL-COCO2014-v0", split="val2017", **kwargs)  # locate mode: the scorer is fitted on train2017
    env.reset(seed=0)
    for _ in range(6):
        _, _reward, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert terminated and info["scores"].shape == (3,)
    env.close()
    scorers = list((tmp_path / "cache").glob("*/scorer.pt"))
    assert len(scorers) == 1 and "train2017" in scorers[0].parent.name
    default = gym.make("RARL-COCO2014-v0", **kwargs)  # no split: the training split on disk
    assert default.unwrapped.split == "train2017" and default.unwrapped.episodes.out_of_fold
    default.close()


# -- 3. a damaged scorer.pt ----------------------------------------------------------------------
def test_a_damaged_scorer_is_named_and_refitted_and_a_read_only_cache_is_named(small_kwargs, monkeypatch):
    from rarl_gym import scorer as scorer_mod
    from rarl_gym import sources

    env = gym.make("RARL-Shapes-v0", **small_kwargs)
    path = env.unwrapped.store.path / "scorer.pt"
    env.close()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptFileError, match="scorer.pt"):
        scorer_mod.load_scorer(path)
    with pytest.warns(RuntimeWarning, match=r"scorer\.pt is damaged.*fitting it again"):
        env = gym.make("RARL-Shapes-v0", **small_kwargs)
    env.close()
    scorer_mod.load_scorer(path)  # refitted and saved
    path.unlink()
    monkeypatch.setattr(sources, "writable", lambda _p: False)
    monkeypatch.setattr(sources, "fit_cross_fitted_scorer", lambda *a, **k: pytest.fail("fitted on a read-only cache"))
    with pytest.raises(NotWritableError, match="read-only") as err:
        gym.make("RARL-Shapes-v0", **small_kwargs)
    assert "scorer.pt" in str(err.value) and "cache_dir" in str(err.value)
    monkeypatch.undo()
    gym.make("RARL-Shapes-v0", **small_kwargs).close()  # puts scorer.pt back for the other tests


# -- 4. SB3 saves periodically and resumes after a crash -----------------------------------------
def test_sb3_saves_periodically_and_resumes_after_a_crash(small_kwargs, tmp_path, monkeypatch):
    from agents.sb3 import train as sb3_train
    from agents.sb3.train import load_model, train_sb3

    env_kwargs = settings_kwargs(small_kwargs)
    hyper = {"n_steps": 24, "batch_size": 48, "n_epochs": 1}

    class Crash(sb3_train.BaseCallback):  # stands in for kill -9: nothing runs after it
        def __init__(self, desc):
            super().__init__()

        def _on_step(self):
            if self.model.num_timesteps >= 150:
                raise SystemExit("killed")
            return True

    monkeypatch.setattr(sb3_train, "TqdmCallback", Crash)
    run = tmp_path / "ppo"
    with pytest.raises(SystemExit):
        train_sb3(
            "ppo",
            "RARL-Shapes-v0",
            env_kwargs,
            run,
            total_timesteps=240,
            seed=0,
            device="cpu",
            n_envs=2,
            overrides=hyper,
            checkpoint_every=48,
        )
    saved = json.loads((run / "run.json").read_text())
    assert 48 <= saved["num_timesteps"] < 150 and saved["train_seconds"] > 0  # the last periodic save
    assert load_model(run, "cpu")[0].num_timesteps == saved["num_timesteps"]
    monkeypatch.undo()
    with pytest.raises(RarlGymError, match="already holds a run"):
        train_sb3("ppo", "RARL-Shapes-v0", env_kwargs, run, total_timesteps=240, device="cpu", progress=False)
    done = train_sb3("ppo", run_dir=run, total_timesteps=240, device="cpu", progress=False, resume=True)
    assert done["num_timesteps"] == 240 and done["train_seconds"] >= saved["train_seconds"]
    assert json.loads((run / "run.json").read_text())["num_timesteps"] == 240


def test_off_policy_runs_save_their_replay_buffer(train_small_sb3, tmp_path, monkeypatch):
    from agents.sb3 import train as sb3_train
    from agents.sb3.train import train_sb3

    small = {"learning_starts": 48, "batch_size": 16, "gradient_steps": 1, "buffer_size": 500}
    run = tmp_path / "td3"
    train_small_sb3("td3", run, 96, n_envs=2, overrides=small)
    assert (run / "replay_buffer.pkl").exists()
    loaded = []
    real = sb3_train.ALGOS["td3"].load_replay_buffer
    monkeypatch.setattr(
        sb3_train.ALGOS["td3"], "load_replay_buffer", lambda self, p, **k: (loaded.append(p), real(self, p, **k))
    )
    assert (
        train_sb3("td3", run_dir=run, total_timesteps=144, device="cpu", progress=False, resume=True)["num_timesteps"] == 144
    )
    assert loaded


# -- 5. a full disk while saving a checkpoint ----------------------------------------------------
def test_a_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    from agents.rarl.trainer import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, epoch=1, model={"w": torch.ones(2)})
    before = path.read_bytes()
    monkeypatch.setattr(rio.os, "fsync", enospc)
    with pytest.raises(DiskFullError, match="checkpoint") as err:
        save_checkpoint(path, epoch=2, model={"w": torch.zeros(1000)})
    assert str(path) in str(err.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# -- 6. COCO annotation defects ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["images"][0].pop("file_name"), "has no 'file_name'"),
        (lambda d: d["categories"][0].pop("name"), "has no 'name'"),
        (lambda d: d["images"][1].update(width="wide"), "width that is not a positive integer"),
        (lambda d: d.update(images=[]), "'images' is empty"),
        (lambda d: d["annotations"][0].pop("category_id"), "annotations\\[0\\]"),
    ],
)
def test_coco_annotation_defects_are_named_before_any_extraction(tmp_path, edit, message):
    root = edited_coco(tmp_path / "coco", edit)
    with pytest.raises(CorruptFileError, match=message) as err:
        gym.make(
            "RARL-COCO2014-v0",
            root=str(root),
            split="train2017",
            backbone="tiny",
            input_size=64,
            cache_dir=str(tmp_path / "cache"),
            progress=False,
        )
    assert "instances_train2017.json" in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# -- 7. the cache key notices changed images -----------------------------------------------------
def test_a_changed_image_of_the_same_size_gets_new_features(tmp_path):
    root = coco_layout(tmp_path / "coco", splits=("train2017",))
    image = root / "train2017" / "000000000001.jpg"
    Image.new("RGB", (48, 40), (255, 0, 0)).save(image, format="BMP")  # BMP: the size depends on the dimensions only
    cache = tmp_path / "cache"
    first = extract(COCODataset(root, "train2017"), cache)
    size = image.stat().st_size
    time.sleep(0.01)
    Image.new("RGB", (48, 40), (0, 0, 255)).save(image, format="BMP")
    assert image.stat().st_size == size
    second = extract(COCODataset(root, "train2017"), cache)
    assert second.path != first.path and not np.array_equal(second.features[0], first.features[0])
    assert np.array_equal(second.features[1:], first.features[1:])


def test_an_entry_under_the_old_key_is_reused_while_no_image_changed(tmp_path):
    root = coco_layout(tmp_path / "coco", splits=("train2017",))
    cache = tmp_path / "cache"
    for image in (root / "train2017").iterdir():  # images older than the extraction
        os.utime(image, ns=(time.time_ns() - 10**10,) * 2)
    ds = COCODataset(root, "train2017")
    store = extract(ds, cache)
    key = store.meta["key"]
    legacy = entry_path({**key, "dataset": ds.legacy_cache_key()}, cache)
    store.path.rename(legacy)  # as an earlier version wrote it
    again = extract(COCODataset(root, "train2017"), cache)
    assert again.path == legacy and np.array_equal(again.features, store.features)
    os.utime(root / "train2017" / "000000000002.jpg")  # modified after that extraction: extracted anew
    fresh = extract(COCODataset(root, "train2017"), cache)
    assert fresh.path not in (legacy, store.path) and (fresh.path / "meta.json").exists()


# -- 8. wrongly typed arguments ------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"scales": 0.5},
        {"ratios": "abc"},
        {"scales": [float("inf")]},
        {"scales": [True]},
        {"input_size": "big"},
        {"input_size": -64},
        {"glimpse_size": True},
        {"dataset_kwargs": "abc"},
        {"backbone": 3},
        {"pretrained": "yes"},
        {"split": ""},
    ],
)
def test_wrongly_typed_env_kwargs_are_config_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        EnvSettings.from_kwargs(**kwargs)
    assert next(iter(kwargs)) in str(err.value) and "Fix:" in str(err.value)


def test_wrong_reset_options_and_cache_dirs(small_kwargs, tmp_path):
    env = gym.make("RARL-Shapes-v0", **small_kwargs)
    for bad in (None, 2.7, "1", [1]):
        with pytest.raises(ConfigError, match="options"):
            env.reset(options={"index": bad})
    with pytest.raises(ConfigError):
        env.reset(options="index")
    assert env.reset(options={"index": 2.0})[0]["step"] == 0 and env.unwrapped._index == 2
    env.close()
    venv = gym.make_vec("RARL-Shapes-v0", num_envs=2, vectorization_mode="vector_entry_point", **small_kwargs)
    with pytest.raises(ConfigError, match="not an integer"):
        venv.reset(options={"index": [0, 1.5]})
    with pytest.raises(ConfigError, match="num_envs=2"):
        venv.reset(options={"index": [0, 1, 2]})
    venv.close()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotWritableError, match="cache_dir"):
        gym.make(
            "RARL-Shapes-v0",
            **{**small_kwargs, "cache_dir": str(blocker / "cache"), "dataset_kwargs": {"num_images": 3, "image_size": 64}},
        )
    with pytest.raises(ConfigError, match="at least 2"):
        gym.make("RARL-Shapes-v0", **{**small_kwargs, "dataset_kwargs": {"num_images": 1, "image_size": 64}})


@pytest.fixture
def train_args(train_argv, tmp_path):
    return lambda run, *extra: train_argv(tmp_path / run, *extra)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--batch-size", "0"), ("--lr", "nan"), ("--epochs", "-1"), ("--lr", "inf"), ("--seed", "-3"), ("--n-envs", "0")],
)
def test_bad_numbers_on_the_command_line_are_refused(train_args, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_agent.main(train_args("x", flag, value))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and ("positive" in err or ">= 0" in err)


def test_bad_runs_and_checkpoints_are_named(train_args, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert train_agent.main(train_args("afile", "--epochs", "1")) == 2
    assert "is a file" in capsys.readouterr().err
    assert (
        train_agent.main(["--algo", "ppo", "--run-dir", str(tmp_path / "afile"), "--no-progress", "--total-timesteps", "48"])
        == 2
    )
    assert "is a file" in capsys.readouterr().err
    torch.save({"something": 1}, tmp_path / "other.pt")
    assert evaluate.main([str(tmp_path / "other.pt")]) == 2
    assert "not a RARL checkpoint" in capsys.readouterr().err
    assert train_agent.main(train_args("h", "--hyperparams", '{"explore": 2}')) == 2
    assert "explore=2" in capsys.readouterr().err


# -- 9. a damaged meta.json ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["shape"].__setitem__(1, m["shape"][1] * 2), "needs"),  # agrees with nothing on disk
        (lambda m: m.pop("image_ids"), "no 'image_ids'"),
        (lambda m: m.pop("shape"), "no 'shape'"),
        (lambda m: m.update(image_sizes=[[1, 2]]), "image_sizes"),
        (lambda m: m.update(shape="big"), "shape"),
        (lambda m: m.update(classes=m["classes"][:-1]), "labels.npy"),
    ],
)
def test_a_hand_edited_meta_json_is_refused(tmp_path, edit, message):
    store = extract(ShapesDataset("train", num_images=4, image_size=64), tmp_path)
    meta = json.loads((store.path / "meta.json").read_text())
    edit(meta)
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match=message) as err:
        FeatureStore.open(store.path)
    assert "delete" in str(err.value)


# -- 10. smaller ones ----------------------------------------------------------------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_closed_envs_release_their_files(small_kwargs):
    gym.make("RARL-Shapes-v0", **small_kwargs).close()  # warm up: the cache and the kernel exist
    before = _open_fds()
    for _ in range(20):
        env = gym.make("RARL-Shapes-v0", **small_kwargs)
        env.reset(seed=0)
        env.close()
        venv = gym.make_vec("RARL-Shapes-v0", num_envs=2, vectorization_mode="vector_entry_point", **small_kwargs)
        venv.reset(seed=0)
        venv.close()
    assert _open_fds() <= before + 2


@pytest.mark.needs_c_compiler
def test_a_damaged_compiled_kernel_is_rebuilt(monkeypatch, tmp_path):
    from rarl_gym import native

    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    path = tmp_path / "native" / "k.so"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF garbage")
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: path)
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert native.load() is not None
    assert path.stat().st_size > 1000


def test_bad_backbones_and_sizes_leave_no_cache_folder(tmp_path):
    ds = ShapesDataset("train", num_images=3, image_size=64)
    with pytest.raises(ConfigError, match="unknown backbone"):
        extract_features(ds, "nope", 64, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="input_size"):
        extract_features(ds, "tiny", -64, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_resume_with_the_same_backbone_is_accepted_and_seconds_add_up(train_args, tmp_path, capsys, monkeypatch):
    from agents.rarl import trainer

    # the checkpoint bookkeeping is under test, not the evaluation (test_scripts.py runs that)
    monkeypatch.setattr(
        trainer, "evaluate_agent", lambda *a, **k: {"split": "test", "views": 1, "policies": {}, "reports": {}}
    )
    monkeypatch.setattr(train_agent, "print_results", lambda *a, **k: None)
    assert train_agent.main(train_args("r", "--epochs", "1")) == 0
    first = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["train_seconds"]
    assert first > 0
    assert (
        train_agent.main(
            ["--run-dir", str(tmp_path / "r"), "--resume", "--backbone", "tiny", "--epochs", "2", "--no-progress"]
        )
        == 0
    )
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["train_seconds"] > first
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["train_seconds"] >= round(first, 1)
    capsys.readouterr()
    assert (
        train_agent.main(["--run-dir", str(tmp_path / "r"), "--resume", "--backbone", "efficientnet_lite0", "--epochs", "3"])
        == 2
    )
    assert "another configuration" in capsys.readouterr().err


def test_a_second_training_into_a_locked_folder_is_refused(train_args, tmp_path, capsys):
    run = tmp_path / "busy"
    with rio.run_lock(run):
        assert train_agent.main(train_args("busy", "--epochs", "1")) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {os.getpid()}" in err and "lock file" in err
        env_kwargs = train_args("busy")[1]
        for algo, steps in (("cem", "10"), ("ppo", "48")):
            argv = ["--algo", algo, "--env-kwargs", env_kwargs, "--run-dir", str(run), "--no-progress"]
            assert train_agent.main([*argv, "--total-timesteps", steps]) == 2
            assert "in use" in capsys.readouterr().err
    assert not run.exists()  # the lock's folder, made for nothing, is gone again


def test_a_second_extraction_waits_for_the_first(tmp_path, capsys):
    ds = ShapesDataset("train", num_images=4, image_size=64)
    first = extract(ds, tmp_path)  # to know the entry's path
    path = first.path
    first.close()
    for name in ("meta.json", "features.f16", "labels.npy"):
        (path / name).unlink()
    holder = rio.FileLock(path / store_mod.LOCK_FILE, "x").acquire()
    results = []
    worker = threading.Thread(target=lambda: results.append(extract(ds, tmp_path)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive() and not results  # waiting, not extracting
    holder.release()
    worker.join(30)
    assert results and len(results[0]) == 4
    assert "is being extracted by process" in capsys.readouterr().err


def test_a_checkpoint_from_before_a_new_training_option_resumes():
    """A TrainConfig field added after a checkpoint was written ran with its default then: a resume
    with the default is accepted, one with another value refused (naming the field)."""
    import dataclasses

    from agents.rarl.trainer import TrainConfig, _check_resume
    from rarl_gym.env_settings import EnvSettings

    config = TrainConfig(run_dir="runs/x")
    settings = EnvSettings.from_env_id(config.env_id, {})
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "rl_return"}
    ckpt = {"config": old, "settings": settings.to_dict(), "optimizer": {}, "rng": {}, "step": 0}
    _check_resume(ckpt, config, settings)
    with pytest.raises(CheckpointError, match="rl_return: checkpoint 'topk' vs now 'likelihood'"):
        _check_resume(ckpt, dataclasses.replace(config, rl_return="likelihood"), settings)


def test_presets_and_configurations_saved_by_earlier_versions():
    """Presets by name; a saved configuration's renamed fields are read under their new names,
    removed ones dropped when they were off and refused when the run used them."""
    import dataclasses

    from agents.rarl.trainer import PRESETS, TrainConfig, config_from_dict, preset_config

    assert preset_config("default") == TrainConfig()
    paper = preset_config("paper", epochs=2)
    assert paper.head == "lstm" and paper.locator == "linear" and paper.rl_return == "topk" and paper.epochs == 2
    assert set(PRESETS) == {"default", "paper"}
    with pytest.raises(ConfigError, match="unknown preset 'papr'"):
        preset_config("papr")
    old = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k != "rl_return"}
    old.update(reward="likelihood", imitate=0, imitate_weight=1.0, recurrent_classifier=True)
    assert TrainConfig(**config_from_dict(old)).rl_return == "likelihood"
    with pytest.raises(CheckpointError, match="used imitate=64"):
        config_from_dict({**old, "imitate": 64})


@pytest.mark.parametrize(
    ("field", "value"), [("rl_return", "reward"), ("head_init", "zeros"), ("eval_samples", 0), ("context", "yes")]
)
def test_every_training_option_is_checked(field, value):
    import dataclasses

    from agents.rarl.trainer import TrainConfig, _check_numbers

    with pytest.raises(ConfigError, match=f"training option {field}="):
        _check_numbers(dataclasses.replace(TrainConfig(), **{field: value}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"head": "lstm", "context": False, "folds": 0}, "peak locator reads the linear head"),
        ({"head": "lstm", "context": False, "folds": 0, "locator": "map"}, "map locator reads the linear head"),
        ({"head": "lstm", "locator": "linear", "folds": 0}, "context .* needs head='linear'"),
        ({"head": "lstm", "locator": "linear", "context": False}, "folds .* need head='linear'"),
    ],
)
def test_agent_options_that_do_not_fit_together_are_a_config_error(options, message):
    from agents.rarl.trainer import TrainConfig, build_agent
    from rarl_gym.env_settings import EnvSettings

    with pytest.raises(ConfigError, match=message) as info:
        build_agent(EnvSettings.from_env_id("RARL-Shapes-v0", {}), 4, 8, TrainConfig(**options))
    assert "--hyperparams" in info.value.fix


def test_signals_are_held_back_through_a_critical_section():
    """Ctrl-C (or SIGTERM) inside a save is handled when the save is done, not in the middle of it."""
    import os
    import signal

    from rarl_gym.io import signals_held

    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the critical section finished")
    assert done == ["the critical section finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back

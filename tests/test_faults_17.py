"""Issue 17 (core side): damaged files, silent wrong results, SIGTERM. Each test would have caught one defect.

A damaged file is made by hand (truncated, bit-flipped, NaN bytes of the same size); a read-only
file system by an ``EROFS`` from the call that meets it; ``EFBIG`` by the real ``posix_fallocate``
where the file system refuses a file that large (ext4: 16 TiB), else by a simulated one.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import coco_layout, edited_coco
from PIL import Image

from rarl_gym import io as rio
from rarl_gym import native
from rarl_gym.data import COCODataset
from rarl_gym.data.shapes import ShapesDataset
from rarl_gym.env_settings import settings_kwargs
from rarl_gym.errors import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    DiskFullError,
    NotWritableError,
)
from rarl_gym.features import store as store_mod
from rarl_gym.features.store import FeatureStore, cache_entries, extract_features, prune_cache
from rarl_gym.scorer import RegionScorer, load_scorer, read_scorer, save_scorer

ROOT = Path(__file__).resolve().parents[1]


def extract(ds, cache, **kw):
    return extract_features(ds, "tiny", 64, cache_dir=cache, batch_size=4, progress=False, **kw)


def tiny_kwargs(cache: Path, n: int = 6) -> dict:
    return {
        "backbone": "tiny",
        "input_size": 64,
        "dataset_kwargs": {"num_images": n, "image_size": 64},
        "cache_dir": str(cache),
        "progress": False,
    }


@pytest.fixture
def fresh_kernel(monkeypatch):
    """:func:`rarl_gym.native.load` runs again in this test (and is forgotten after it)."""
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)


# -- 1. a truncated compiled kernel --------------------------------------------------------------
@pytest.mark.needs_c_compiler
@pytest.mark.parametrize("keep", [1024, 12 * 1024, -1])  # bytes left: a few pages, most of it, all but one
def test_a_truncated_compiled_kernel_is_rebuilt_not_loaded(monkeypatch, tmp_path, fresh_kernel, keep):
    path = tmp_path / "native" / "k.so"
    native.build(path)
    good = path.read_bytes()
    assert native.check_library(path) is None and native.checksum_path(path).exists()
    path.write_bytes(good[:keep])  # ctypes.CDLL on this was a SIGBUS
    assert native.check_library(path) is not None
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: path)
    real_open = native._open

    def checked_open(p):
        assert native.check_library(p) is None, "a damaged build reached ctypes.CDLL"
        return real_open(p)

    monkeypatch.setattr(native, "_open", checked_open)
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert native.load() is not None
    assert native.check_library(path) is None and path.stat().st_size > len(good[:keep])


@pytest.mark.needs_c_compiler
def test_a_build_of_an_earlier_version_without_checksum_is_rebuilt_silently(monkeypatch, tmp_path, fresh_kernel):
    path = tmp_path / "native" / "k.so"
    native.build(path)
    native.checksum_path(path).unlink()
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load() is not None
    assert native.check_library(path) is None


@pytest.mark.needs_c_compiler
def test_a_read_only_cache_builds_the_kernel_in_the_temp_folder(monkeypatch, tmp_path, fresh_kernel):
    """EROFS (a read-only mount), not just PermissionError, falls back to the temp folder, silently."""
    cache, temp = tmp_path / "ro" / "native" / "k.so", tmp_path / "tmp" / "native" / "k.so"
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: cache if cache_dir is None else temp)
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load() is not None
    assert native.check_library(temp) is None and not cache.exists()


def test_the_fallback_warning_names_the_real_cause(monkeypatch, tmp_path, fresh_kernel):
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: tmp_path / str(cache_dir) / "k.so")
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr(native.shutil, "which", lambda _name: None)
    with pytest.warns(RuntimeWarning, match="no C compiler found.*Fix: install a C compiler"):
        assert native.load() is None
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "build", lambda p: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with pytest.warns(
        RuntimeWarning, match="Read-only file system.*Fix: make \\$RARL_CACHE \\(or the temp folder\\) writable"
    ):
        assert native.load() is None


# -- 2. features.f16 cut short while it is open, 3. NaN bytes in it --------------------------------
@pytest.mark.parametrize("compiled", [False, True])
def test_a_features_file_cut_short_while_open_is_named_on_every_path(tmp_path, monkeypatch, compiled):
    if compiled and not native.available():
        pytest.skip("no compiled reader here")
    if not compiled:
        monkeypatch.setattr(native, "available", lambda: False)  # what RARL_NATIVE=0 or no compiler give
    store = extract(ShapesDataset("train", num_images=6, image_size=64), tmp_path)
    shape = store.features.shape
    row = int(np.prod(shape[1:])) * 2
    with open(store.path / "features.f16", "r+b") as f:  # cut short after it was opened (and mapped)
        f.truncate(3 * row + 100)
    for read in (
        lambda: store.batch([4]),
        lambda: store.batch(np.arange(6)),
        lambda: store.read_into([5], torch.empty(1, *shape[1:]).contiguous(memory_format=torch.channels_last)),
        lambda: store.read_into([5], torch.empty(1, *shape[1:])),
    ):
        with pytest.raises(CorruptFileError, match="shorter") as err:  # a SIGBUS killed the process here
            read()
        assert "features.f16" in str(err.value) and f"delete {store.path}" in str(err.value)
    assert store.batch([0, 1, 2])[0].shape == (3, *shape[1:])  # the rows still there read fine


def test_nan_bytes_in_the_features_file_are_named_where_a_batch_is_read(tmp_path, monkeypatch, small_kwargs):
    store = extract(ShapesDataset("train", num_images=6, image_size=64), tmp_path)
    shape = store.features.shape
    row = int(np.prod(shape[1:])) * 2
    with open(store.path / "features.f16", "r+b") as f:  # same size: nothing else notices
        f.seek(2 * row + 40)
        f.write(np.full(8, np.nan, np.float16).tobytes())
    again = FeatureStore.open(store.path)
    for reader in (store, again):
        with pytest.raises(CorruptFileError, match=r"NaN or inf .*rows \[2\]") as err:
            reader.batch([1, 2, 3])
        assert store.image_ids[2] in str(err.value) and "extract again" in str(err.value)
        for out in (torch.empty(1, *shape[1:]).contiguous(memory_format=torch.channels_last), torch.empty(1, *shape[1:])):
            with pytest.raises(CorruptFileError, match="NaN"):
                reader.read_into([2], out)
        assert torch.isfinite(reader.batch([0, 1, 3, 4])[0]).all()
    monkeypatch.setattr(native, "available", lambda: False)
    with pytest.raises(CorruptFileError, match="NaN"):
        store.read_into([2], torch.empty(1, *shape[1:]).contiguous(memory_format=torch.channels_last))


def test_an_env_on_a_damaged_features_file_fails_named(tmp_path):
    kwargs = tiny_kwargs(tmp_path / "cache")
    env = gym.make("RARL-Shapes-v0", **kwargs)
    path = env.unwrapped.store.path / "features.f16"
    row = path.stat().st_size // 6
    with open(path, "r+b") as f:
        f.seek(4 * row)
        f.write(np.full(row // 2, np.inf, np.float16).tobytes())
    env.reset(options={"index": 1})
    with pytest.raises(CorruptFileError, match="NaN or inf"):  # was: NaN observations and a reward of 0.5
        env.reset(options={"index": 4})
    with open(path, "r+b") as f:
        f.truncate(2 * row)
    with pytest.raises(CorruptFileError, match="shorter"):
        env.reset(options={"index": 3})
    env.close()


def test_non_finite_backbone_maps_are_named_at_extraction_and_nothing_of_them_is_kept(tmp_path, monkeypatch):
    ds = ShapesDataset("train", num_images=10, image_size=64)
    clean = extract(ds, tmp_path / "clean")
    real = store_mod.forward
    calls = []

    def poisoned(net, pixels, device=None):
        out = real(net, pixels, device).clone()
        calls.append(len(out))
        if len(calls) == 3:  # the probe, the first batch, then this one: its second image
            out[1] = float("nan")
        return out

    monkeypatch.setattr(store_mod, "forward", poisoned)
    with pytest.raises(CorruptFileError, match="NaN or inf feature maps") as err:
        extract(ds, tmp_path / "bad")
    assert ds.image_id(5) in str(err.value) or "000005" in str(err.value)
    (entry,) = (tmp_path / "bad").iterdir()
    assert not (entry / "meta.json").exists()
    done = np.load(entry / "progress.npy")
    assert done[:5].all() and not done[5]  # the images before it are kept, it is not
    monkeypatch.undo()
    resumed = extract(ds, tmp_path / "bad")
    assert np.allclose(resumed.features, clean.features, rtol=1e-3, atol=1e-4)


# -- 4. scorer.pt: a checksum, shapes, a folder ---------------------------------------------------
def test_a_bit_flipped_scorer_is_refused_by_its_checksum(tmp_path):
    scorer = RegionScorer(8, 3)
    with torch.no_grad():
        scorer.linear.weight.copy_(torch.arange(24.0).reshape(3, 8) / 7)
    path = tmp_path / "scorer.pt"
    save_scorer(scorer, path, {"fit": "x"})
    loaded, meta, digest = read_scorer(path)
    assert torch.equal(loaded.linear.weight, scorer.linear.weight) and meta == {"fit": "x"} and len(digest) == 64
    data = bytearray(path.read_bytes())
    at = data.find(scorer.linear.weight.detach().numpy().tobytes()[:16])
    assert at > 0
    data[at + 5] ^= 0x40  # one bit of one weight (it loaded 2.4e5 off before)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="SHA-256") as err:
        load_scorer(path)
    assert "delete" in str(err.value)


def test_a_scorer_of_other_shapes_is_named(tmp_path):
    path = tmp_path / "scorer.pt"
    save_scorer(RegionScorer(8, 3), path, {})
    with pytest.raises(CorruptFileError, match="8 feature channels x 3 classes.*16 channels x 3 classes"):
        load_scorer(path, channels=16, num_classes=3)
    torch.save({"scorers": [{"linear.weight": torch.zeros(3, 8), "linear.bias": torch.zeros(5)}], "meta": {}}, path)
    with pytest.raises(CorruptFileError, match="damaged"):
        load_scorer(path)


def test_an_env_with_a_scorer_of_other_shapes_or_a_folder_in_its_place(tmp_path):
    from rarl_gym.sources import SCORER_FIT

    kwargs = tiny_kwargs(tmp_path / "cache")
    env = gym.make("RARL-Shapes-v0", **kwargs)
    store = env.unwrapped.store
    path, channels, classes = store.path / "scorer.pt", store.channels, len(store.classes)
    env.close()
    from rarl_gym.scorer import CrossFitScorer

    save_scorer(CrossFitScorer([RegionScorer(channels + 1, classes)] * 2), path, {"fit": SCORER_FIT})
    with pytest.warns(RuntimeWarning, match="feature channels.*fitting it again"):  # was a bare RuntimeError at step 1
        env = gym.make("RARL-Shapes-v0", **kwargs)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    env.close()
    path.unlink()
    path.mkdir()
    with pytest.raises(CorruptFileError, match="is a folder, not a file") as err:  # was: "make <folder> writable"
        gym.make("RARL-Shapes-v0", **kwargs)
    assert f"remove the folder {path}" in str(err.value)
    with pytest.raises(NotWritableError, match="a folder of that name is in the way"):
        rio.atomic_write_bytes(path, b"x", what="region scorer")


def test_a_scorer_without_checksum_is_refitted_silently(tmp_path):
    kwargs = tiny_kwargs(tmp_path / "cache")
    gym.make("RARL-Shapes-v0", **kwargs).close()
    (path,) = (tmp_path / "cache").glob("*/scorer.pt")
    blob = torch.load(path, weights_only=True)
    blob.pop("sha256")  # as an earlier version wrote it
    torch.save(blob, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        gym.make("RARL-Shapes-v0", **kwargs).close()
    assert read_scorer(path)[2] is not None


# -- 8. and 15: COCO annotation files --------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("annotations"), "has no 'annotations'.*all-negative"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[0\] and images\[4\] have the same id 1"),
        (
            lambda d: d["categories"].append({"id": 3, "name": "bus"}),
            r"categories\[1\] and categories\[3\] have the same id 3",
        ),
        (lambda d: d["annotations"][0].update(image_id=999), "refers to image id 999, which is not in its 'images'"),
    ],
)
def test_coco_files_that_would_label_wrongly_are_refused(tmp_path, edit, message):
    root = edited_coco(tmp_path / "coco", edit)
    with pytest.raises(CorruptFileError, match=message) as err:
        COCODataset(root, "train2017")
    assert "instances_train2017.json" in str(err.value) and "Fix:" in str(err.value)


def test_locate_mode_with_only_val2017_names_train2017(tmp_path):
    root = coco_layout(tmp_path / "coco", splits=("val2017",))
    kwargs = {"root": str(root), "backbone": "tiny", "input_size": 64, "cache_dir": str(tmp_path / "c"), "progress": False}
    with pytest.raises(DatasetNotFoundError, match="instances_train2017.json") as err:
        gym.make("RARL-COCO2014-v0", split="val2017", **kwargs)
    assert "2014" not in str(err.value).split("Fix:")[0].replace("nor the other release", "")
    assert "splits present: val2017" in str(err.value) and "mode='joint'" in str(err.value)
    env = gym.make("RARL-COCO2014-v0", split="val2017", mode="joint", **kwargs)  # joint mode needs no training split
    env.close()


# -- 11. a file larger than the file system allows -------------------------------------------------
def test_a_cache_larger_than_the_file_system_allows_is_named_and_leaves_no_folder(tmp_path, monkeypatch):
    def efbig(*_a):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(rio.os, "posix_fallocate", efbig)
    with pytest.raises(DiskFullError, match="more than one file may hold") as err:
        gym.make("RARL-Shapes-v0", **tiny_kwargs(tmp_path / "cache"))
    assert "num_images" in str(err.value) and "features.f16" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_trillion_images_is_a_named_error_on_the_real_file_system(tmp_path):
    kwargs = {**tiny_kwargs(tmp_path / "cache"), "dataset_kwargs": {"num_images": 10**12, "image_size": 64}}
    with pytest.raises((DiskFullError, ConfigError)) as err:  # EFBIG (ext4), or ENOSPC where files may be that large
        gym.make("RARL-Shapes-v0", **kwargs)
    assert "Fix:" in str(err.value)
    if rio.is_file_too_large(err.value):
        assert list((tmp_path / "cache").iterdir()) == []


# -- 13. pickling and copying envs -----------------------------------------------------------------
def test_envs_pickle_and_deepcopy_after_reset_and_reopen_their_cache(small_kwargs):
    env = gym.make("RARL-Shapes-v0", **small_kwargs)
    env.reset(seed=3)
    action = np.array([0.3, -0.4], np.float32)
    for clone in (pickle.loads(pickle.dumps(env.unwrapped)), copy.deepcopy(env)):
        want, got = env.unwrapped.step(action), clone.step(action)
        assert np.array_equal(want[0]["glimpses"], got[0]["glimpses"]) and want[1] == got[1]
        assert clone.unwrapped.store._file() is not env.unwrapped.store._file()  # its own open file
        env.reset(seed=3)
        clone.close()
    env.close()
    venv = gym.make_vec("RARL-Shapes-v0", num_envs=2, vectorization_mode="vector_entry_point", **small_kwargs)
    venv.reset(seed=1)
    clone = pickle.loads(pickle.dumps(venv))
    actions = np.zeros((2, 2), np.float32)
    for _ in range(venv.unwrapped.episodes.num_steps + 1):  # through the autoreset, which reads the cache
        want, got = venv.step(actions), clone.step(actions)
        assert np.array_equal(want[0]["glimpses"], got[0]["glimpses"]) and np.array_equal(want[1], got[1])
    venv.close()
    clone.close()
    closed = pickle.loads(pickle.dumps(env.unwrapped.store))  # a closed store stays closed
    assert len(closed) == 0


# -- 14. make_vec with no envs -----------------------------------------------------------------------
def test_a_vector_env_of_zero_envs_is_a_config_error(small_kwargs):
    for n in (0, -1):
        with pytest.raises(ConfigError, match="num_envs must be a positive int"):
            gym.make_vec("RARL-Shapes-v0", num_envs=n, vectorization_mode="vector_entry_point", **small_kwargs)


# -- 15. old cache entries: list and prune ---------------------------------------------------------
def test_superseded_cache_entries_are_listed_and_pruned(tmp_path, capsys):
    from rarl_gym import cache as cache_cli

    root = coco_layout(tmp_path / "coco", splits=("train2017",))
    cache = tmp_path / "cache"
    first = extract(COCODataset(root, "train2017"), cache).path
    shapes = extract(ShapesDataset("train", num_images=3, image_size=64), cache).path
    for edit in range(2):  # an image replaced, twice: two more entries, the first ones superseded
        time.sleep(0.02)
        Image.new("RGB", (48, 40), (edit * 100, 0, 0)).save(root / "train2017" / "000000000001.jpg")
        newest = extract(COCODataset(root, "train2017"), cache).path
    unfinished = cache / "coco-train2017-old-unfinished"
    unfinished.mkdir()
    (unfinished / "key.json").write_text(json.dumps({**json.loads((first / "key.json").read_text())}))
    os.utime(unfinished / "key.json", (0, 0))
    (cache / "native").mkdir()
    entries = cache_entries(cache)
    assert len(entries) == 5 and all(e.nbytes > 0 for e in entries if e.finished)
    assert cache_cli.main(["list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "5 entries" in out and "unfinished" in out and first.name in out
    assert cache_cli.main(["prune", "--dry-run", "--cache-dir", str(cache)]) == 0
    assert "would remove" in capsys.readouterr().out and first.exists()
    removed = {e.path for e in prune_cache(cache)}
    assert newest not in removed and shapes not in removed and first in removed and unfinished in removed
    assert sorted(p.name for p in cache.iterdir()) == sorted(["native", newest.name, shapes.name])
    with pytest.raises(SystemExit) as exit_:
        cache_cli.main(["prune", "--keep", "0", "--cache-dir", str(cache)])
    assert exit_.value.code == 2 and "--keep" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="keep"):
        prune_cache(cache, keep=0)


def test_an_entry_being_extracted_is_never_pruned(tmp_path):
    ds = ShapesDataset("train", num_images=3, image_size=64)
    path = extract(ds, tmp_path).path
    (path / "meta.json").unlink()
    with rio.FileLock(path / store_mod.LOCK_FILE, "x"):
        (entry,) = cache_entries(tmp_path)
        assert entry.in_use and not entry.finished
        assert prune_cache(tmp_path) == [] and path.exists()


# -- 5. --resume after the dataset changed ---------------------------------------------------------
def test_resume_after_the_dataset_changed_is_refused_unless_asked(tmp_path, monkeypatch, capsys):
    from agents.rarl import trainer
    from agents.rarl.trainer import TrainConfig, load_checkpoint, train

    monkeypatch.setattr(
        trainer, "evaluate_agent", lambda *a, **k: {"split": "val2017", "views": 1, "policies": {}, "reports": {}}
    )
    root = coco_layout(tmp_path / "coco")
    env_kwargs = {"root": str(root), "backbone": "tiny", "input_size": 64, "cache_dir": str(tmp_path / "cache")}
    config = TrainConfig(
        env_id="RARL-COCO2014-v0", env_kwargs=env_kwargs, run_dir=str(tmp_path / "run"), epochs=1, batch_size=4, progress=False
    )
    config.device = "cpu"
    train(config)
    assert set(load_checkpoint(tmp_path / "run")["data"]) == {"train2017", "val2017"}
    entries = len(cache_entries(tmp_path / "cache"))
    more = TrainConfig(**{**config.__dict__, "epochs": 2})
    train(more, resume=True)  # nothing changed: resumed
    assert load_checkpoint(tmp_path / "run")["epoch"] == 2
    time.sleep(0.02)
    Image.new("RGB", (48, 40), (9, 9, 9)).save(root / "train2017" / "000000000002.jpg")  # an image replaced
    again = TrainConfig(**{**config.__dict__, "epochs": 3})
    with pytest.raises(CheckpointError, match="dataset on disk changed.*split 'train2017'") as err:
        train(again, resume=True)
    assert "--allow-data-change" in str(err.value)
    assert len(cache_entries(tmp_path / "cache")) == entries  # refused before extracting the new data
    capsys.readouterr()
    train(again, resume=True, allow_data_change=True)
    assert "continuing on the data as it is now" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run")["epoch"] == 3
    train(TrainConfig(**{**config.__dict__, "epochs": 4}), resume=True)  # the checkpoint now holds the new data's key


def test_the_command_line_flags_of_issue_17(train_argv, tmp_path, capsys):
    from agents.cli import train as train_agent

    assert train_agent.main(train_argv(tmp_path / "r", "--save-every", "100")) == 2
    assert "--save-every" in capsys.readouterr().err
    argv = ["--algo", "ppo", "--run-dir", str(tmp_path / "p"), "--allow-data-change", "--total-timesteps", "48"]
    assert train_agent.main(argv) == 2
    assert "--allow-data-change" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_agent.main(["--algo", "ppo", "--save-every", "0"])
    assert "--save-every" in capsys.readouterr().err


# -- 6. SIGTERM ----------------------------------------------------------------------------------
def test_sigterm_as_interrupt_raises_once_and_restores_the_default():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt), rio.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with rio.sigterm_as_interrupt():  # a second one while the first is handled is ignored
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _terminate_when(path: Path, proc_pid: int | None = None, timeout: float = 120.0) -> threading.Thread:
    """A thread that sends SIGTERM (to this process, or ``proc_pid``) once ``path`` exists."""

    def run():
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if path.exists() and (proc_pid is not None or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
            os.kill(proc_pid or os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_during_an_sb3_run_saves_at_once_and_says_what(small_kwargs, tmp_path, capsys):
    from agents.sb3.train import load_model, train_sb3

    run = tmp_path / "ppo"
    thread = _terminate_when(run / "run.json")  # after the first periodic save
    with pytest.raises(KeyboardInterrupt):
        train_sb3(
            "ppo",
            "RARL-Shapes-v0",
            settings_kwargs(small_kwargs),
            run,
            total_timesteps=100_000,
            seed=0,
            device="cpu",
            n_envs=2,
            progress=False,
            overrides={"n_steps": 12, "batch_size": 24, "n_epochs": 1},
            checkpoint_every=24,
        )
    thread.join()
    err = capsys.readouterr().err
    saved = json.loads((run / "run.json").read_text())["num_timesteps"]
    assert f"interrupted at {saved} env steps: saved model.zip, run.json in {run}" in err
    assert load_model(run, "cpu")[0].num_timesteps == saved > 0


def test_sigterm_during_a_rarl_run_keeps_the_last_epoch_and_says_which(small_kwargs, tmp_path, capsys):
    from agents.rarl.trainer import TrainConfig, load_checkpoint, train

    run = tmp_path / "rarl"
    config = TrainConfig(
        env_kwargs=settings_kwargs(small_kwargs), run_dir=str(run), epochs=50, batch_size=16, progress=False, device="cpu"
    )
    thread = _terminate_when(run / "checkpoint.pt")
    with pytest.raises(KeyboardInterrupt):
        train(config)
    thread.join()
    epoch = load_checkpoint(run)["epoch"]
    assert 1 <= epoch < 50
    assert f"keeps epoch {epoch} of 50; continue with --resume" in capsys.readouterr().err


def test_sigterm_to_the_command_line_exits_130_with_a_message(train_argv, tmp_path):
    run = tmp_path / "cli"
    argv = [sys.executable, str(ROOT / "scripts" / "train_agent.py"), *train_argv(run, "--epochs", "50", "--device", "cpu")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    thread = _terminate_when(run / "checkpoint.pt", proc.pid, timeout=300)
    _, err = proc.communicate(timeout=400)
    thread.join()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "keeps epoch" in err

"""Feature extraction at speed: loader workers, chunked writes, torchrun sharding; the same maps every way."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rarl_gym.data.shapes import ShapesDataset
from rarl_gym.errors import CorruptFileError
from rarl_gym.features import store as store_mod
from rarl_gym.features.backbones import build_backbone
from rarl_gym.features.inference import PixelRows, as_images, forward, open_image, pixel_loader
from rarl_gym.features.store import FeatureStore, extract_features

ROOT = Path(__file__).resolve().parents[1]


def extract(ds, cache, **kw):
    return extract_features(ds, "tiny", 64, cache_dir=cache, batch_size=4, progress=False, **kw)


def test_pixels_then_normalise_is_preprocess():
    ds = ShapesDataset("train", num_images=3, image_size=80)
    net = build_backbone("tiny")
    images = [ds.load_image(i) for i in range(3)]
    px = net.pixels(images, 64)
    assert px.dtype == torch.uint8 and px.shape == (3, 3, 64, 64)
    assert torch.equal(net.normalise(px), net.preprocess(images, 64))
    with torch.no_grad():
        want = net(net.preprocess(images, 64))
    assert torch.allclose(forward(net, px).float(), want, atol=1e-2, rtol=1e-2) and forward(net, px).dtype == torch.float16


def test_workers_chunks_and_a_small_chunk_size_give_the_same_cache(tmp_path, monkeypatch):
    ds = ShapesDataset("train", num_images=30, image_size=64)
    plain = extract(ds, tmp_path / "a", workers=0)
    with_workers = extract(ds, tmp_path / "b", workers=2)
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 1)  # one pwrite + progress save per batch
    small_chunks = extract(ds, tmp_path / "c", workers=0)
    for other in (with_workers, small_chunks):
        assert np.array_equal(other.features, plain.features)
        assert other.meta["image_sizes"] == plain.meta["image_sizes"] and np.array_equal(other.labels, plain.labels)


def test_write_rows_handles_gaps(tmp_path):
    path = tmp_path / "f.f16"
    path.write_bytes(b"\x00" * (10 * 3 * 2))
    fd = os.open(path, os.O_WRONLY)
    rows = np.array([1, 2, 3, 7, 9])
    block = np.arange(15, dtype=np.float16).reshape(5, 3)
    store_mod._write_rows(fd, rows, block)
    os.close(fd)
    got = np.fromfile(path, dtype=np.float16).reshape(10, 3)
    assert np.array_equal(got[rows], block) and not got[[0, 4, 5, 6, 8]].any()


class BadImage(ShapesDataset):
    def load_image(self, index):
        if index == 13:
            raise CorruptFileError("image 13 is corrupt", "replace it")
        return super().load_image(index)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_keeps_the_finished_rows_and_names_the_file(tmp_path, workers):
    ds = BadImage("train", num_images=24, image_size=64)
    with pytest.raises(CorruptFileError, match="image 13"):
        extract(ds, tmp_path, workers=workers)
    (entry,) = tmp_path.iterdir()
    done = np.load(entry / "progress.npy")
    assert done[:12].all() and not done[13]  # batches 0-11 and the good images of 12-15 were written


def test_inputs_and_bad_files(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptFileError, match="x.jpg"):
        open_image(tmp_path / "x.jpg")
    with pytest.raises(CorruptFileError, match="no image"):
        open_image(tmp_path / "missing.png")
    assert len(as_images(torch.rand(2, 3, 8, 8))) == 2 and as_images(torch.zeros(3, 8, 8, dtype=torch.uint8))[0].size == (8, 8)
    rows = PixelRows(
        lambda i: (
            open_image(tmp_path / "x.jpg") if i == 1 else ShapesDataset("train", num_images=3, image_size=32).load_image(i)
        ),
        3,
        16,
    )
    items = [item for batch in pixel_loader(rows, 2, workers=1) for item in batch]
    assert [i for i, _, _ in items] == [0, 1, 2]
    assert isinstance(items[1][1], CorruptFileError) and items[1][2] is None and items[0][1].shape == (3, 16, 16)


def test_torchrun_shards_an_extraction(tmp_path):
    """Two CPU ranks (gloo) extract one cache, each its half of the rows; rank 0 finalises. The
    cache equals a single process's; an interrupted sharded run's rows are kept."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        str(ROOT / "scripts" / "extract_features.py"),
        "--backbone",
        "tiny",
        "--input-size",
        "64",
        "--dataset-kwargs",
        '{"num_images": 40, "image_size": 64}',
        "--splits",
        "train",
        "--cache-dir",
        str(tmp_path / "ddp"),
        "--batch-size",
        "4",
        "--workers",
        "0",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("shapes/train: 40 images") == 1  # rank 0 reports
    (entry,) = (tmp_path / "ddp").iterdir()
    sharded = FeatureStore.open(entry)
    single = extract(ShapesDataset("train", num_images=40, image_size=64), tmp_path / "one", workers=0)
    assert np.allclose(sharded.features, single.features, rtol=1e-3, atol=1e-4)
    assert sharded.meta["image_ids"] == single.meta["image_ids"] and np.array_equal(sharded.labels, single.labels)
    assert sorted(p.name for p in entry.iterdir()) == ["features.f16", "key.json", "labels.npy", "meta.json"]


def test_sharded_progress_merges_the_ranks_files(tmp_path, monkeypatch):
    """Rank 0 merges every rank's progress file (also those an interrupted run left) into progress.npy."""
    monkeypatch.setattr(store_mod, "_barrier", lambda: None)
    progress = tmp_path / "progress.npy"
    np.save(progress, np.array([True, False, False, False, False]))
    np.save(tmp_path / "progress.rank1.npy", np.array([False, False, False, True, True]))
    merged = store_mod._sharded_progress(tmp_path, progress, np.zeros(5, bool), 0, 2)
    assert merged.tolist() == [True, False, False, True, True] and not (tmp_path / "progress.rank1.npy").exists()
    with pytest.raises(CorruptFileError, match="2 rows were not written"):
        store_mod._sharded_progress(tmp_path, progress, merged, 0, 2, finish=True)


@pytest.mark.parametrize("flag", ["--data-root", "--root"])
def test_extract_features_takes_data_root_and_its_old_spelling(flag, tmp_path, capsys):
    """``--data-root`` as in every other script; ``--root`` (earlier versions) still works, unlisted."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import extract_features as script

    missing = tmp_path / "no-voc-here"
    assert script.parse_args([flag, str(missing)]).data_root == str(missing)
    assert script.main(["--dataset", "voc07", flag, str(missing), "--splits", "train", "--device", "cpu"]) == 2
    assert str(missing) in capsys.readouterr().err  # the root reached the dataset
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--data-root" in out and "--root" not in out.replace("--data-root", "")

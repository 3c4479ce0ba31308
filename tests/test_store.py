import json

import numpy as np
import pytest

from rarl_gym.data.shapes import ShapesDataset
from rarl_gym.errors import CorruptFileError
from rarl_gym.features import store as store_mod
from rarl_gym.features.backbones import build_backbone
from rarl_gym.features.store import FeatureStore, extract_features


def extract(ds, tmp_path, **kw):
    return extract_features(ds, "tiny", 64, cache_dir=tmp_path, batch_size=4, progress=False, **kw)


def test_extract_then_open_without_the_backbone(tmp_path, monkeypatch):
    ds = ShapesDataset("train", num_images=10, image_size=64)
    store = extract(ds, tmp_path)
    assert store.features.shape[0] == 10 and store.features.dtype == np.float16
    assert np.array_equal(store.labels, ds.labels())
    assert store.image_ids == [ds.image_id(i) for i in range(10)]
    assert store.image_sizes.tolist() == [[64, 64]] * 10
    # the stored maps are the backbone's output
    net = build_backbone("tiny")
    ref = net(net.preprocess([ds.load_image(3)], 64)).detach().numpy()[0]
    assert np.allclose(store.features[3], ref, atol=1e-2, rtol=1e-2)
    # reopening never builds the backbone (how fast it is: benchmarks/unit_timings.py)
    monkeypatch.setattr(store_mod, "build_backbone", lambda *a, **k: pytest.fail("backbone built again"))
    again = extract(ds, tmp_path)
    assert np.array_equal(again.features, store.features)


def test_the_key_separates_datasets_and_sizes(tmp_path):
    a = extract(ShapesDataset("train", num_images=4, image_size=64), tmp_path)
    b = extract(ShapesDataset("test", num_images=4, image_size=64), tmp_path)
    c = extract_features(ShapesDataset("train", num_images=4, image_size=64), "tiny", 96, cache_dir=tmp_path, progress=False)
    assert len({a.path, b.path, c.path}) == 3
    assert c.map_size != a.map_size


class Interrupting(ShapesDataset):
    """Raises KeyboardInterrupt when image ``stop_at`` is loaded (a user's Ctrl-C)."""

    stop_at = None
    loaded: list

    def load_image(self, index):
        self.loaded.append(index)
        if index == self.stop_at:
            raise KeyboardInterrupt
        return super().load_image(index)


def test_an_interrupted_extraction_is_not_valid_and_resumes(tmp_path):
    clean = extract(ShapesDataset("train", num_images=12, image_size=64), tmp_path / "clean")
    ds = Interrupting("train", num_images=12, image_size=64)
    ds.loaded, ds.stop_at = [], 9
    with pytest.raises(KeyboardInterrupt):
        extract(ds, tmp_path / "cut")
    (entry,) = (tmp_path / "cut").iterdir()
    assert not (entry / "meta.json").exists()
    with pytest.raises(CorruptFileError, match="not finished"):
        FeatureStore.open(entry)
    ds.loaded, ds.stop_at = [], None
    resumed = extract(ds, tmp_path / "cut")
    # every image finished before the interrupt was kept (8, 10 and 11 of the interrupted batch
    # too): only image 9 is loaded again (0 is the shape probe)
    assert [i for i in ds.loaded if i != 0] == [9]
    # the same maps up to float16 rounding (image 9 ran in a batch of one: oneDNN's channels-last
    # convolutions sum in another order for another batch size)
    assert np.allclose(resumed.features, clean.features, rtol=1e-3, atol=1e-4)
    assert not (entry / "progress.npy").exists()


def test_a_damaged_entry_names_the_fix(tmp_path):
    store = extract(ShapesDataset("train", num_images=4, image_size=64), tmp_path)
    meta = json.loads((store.path / "meta.json").read_text())
    meta["shape"][0] = 999
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="delete"):
        FeatureStore.open(store.path)


def test_read_into_equals_batch_in_any_layout(tmp_path, monkeypatch):
    """The envs' reader (native: pread + float16 -> float32 + channels-last in one pass; or the
    torch fallback) gives exactly the maps and labels of ``batch``, in the given tensor."""
    import torch

    from rarl_gym import native

    store = extract(ShapesDataset("train", num_images=10, image_size=64), tmp_path)
    index = np.array([7, 0, 7, 3])
    want, want_labels = store.batch(index)
    last = torch.empty(want.shape).contiguous(memory_format=torch.channels_last)
    half = torch.empty(want.shape, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    for out in (last, half, torch.empty(want.shape), torch.empty(want.shape, dtype=torch.float64)):
        got, labels = store.read_into(index, out)
        assert got is out and torch.equal(labels, want_labels)
        assert torch.equal(got.float(), want)
    monkeypatch.setattr(native, "available", lambda: False)  # the torch route, also where the kernel was used above
    assert torch.equal(store.read_into(index, torch.empty_like(last))[0], want)


@pytest.mark.needs_c_compiler
def test_read_into_a_channels_last_tensor_takes_the_compiled_reader(tmp_path, monkeypatch):
    import torch

    from rarl_gym import native

    store = extract(ShapesDataset("train", num_images=6, image_size=64), tmp_path)
    calls = []
    real = native.read_maps_nhwc
    monkeypatch.setattr(native, "read_maps_nhwc", lambda *a: calls.append(a) or real(*a))
    want, _ = store.batch([4, 1])
    out = torch.empty(want.shape).contiguous(memory_format=torch.channels_last)
    assert torch.equal(store.read_into([4, 1], out)[0], want)
    assert len(calls) == 1  # read, converted and transposed in one pass by the kernel
    store.read_into([4, 1], torch.empty(want.shape))  # NCHW: the torch route
    assert len(calls) == 1


@pytest.mark.needs_c_compiler
def test_read_into_a_truncated_file_is_an_error(tmp_path):
    import torch

    store = extract(ShapesDataset("train", num_images=6, image_size=64), tmp_path)
    row = int(np.prod(store.features.shape[1:])) * 2
    with open(store.path / "features.f16", "r+b") as f:  # cut short after it was opened
        f.truncate(5 * row + 10)
    out = torch.empty(1, *store.features.shape[1:]).contiguous(memory_format=torch.channels_last)
    with pytest.raises(CorruptFileError, match="shorter") as err:
        store.read_into([5], out)
    assert "extract again" in str(err.value)
    with pytest.raises(CorruptFileError):  # and reopening it says so too
        FeatureStore.open(store.path)

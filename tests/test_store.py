import json
import time

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
    # reopening never builds the backbone and is fast
    monkeypatch.setattr(store_mod, "build_backbone", lambda *a, **k: pytest.fail("backbone built again"))
    start = time.perf_counter()
    again = extract(ds, tmp_path)
    assert time.perf_counter() - start < 0.5
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
    assert min(i for i in ds.loaded if i != 0) == 8  # batches of 4: 0-3 and 4-7 were done (0 is the shape probe)
    assert np.array_equal(resumed.features, clean.features)
    assert not (entry / "progress.npy").exists()


def test_a_damaged_entry_names_the_fix(tmp_path):
    store = extract(ShapesDataset("train", num_images=4, image_size=64), tmp_path)
    meta = json.loads((store.path / "meta.json").read_text())
    meta["shape"][0] = 999
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="delete"):
        FeatureStore.open(store.path)

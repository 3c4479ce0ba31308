"""RARL-Shapes: determinism, labels without drawing, class coverage, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.data.shapes import CLASSES, DEFAULT_SIZES, ShapesDataset
from rarl_gym.errors import ConfigError


@pytest.fixture(scope="module")
def train300() -> ShapesDataset:
    return ShapesDataset("train", num_images=300)


def test_contract(train300):
    ds = train300
    assert isinstance(ds, MultiLabelDataset)
    assert ds.name == "shapes" and ds.split == "train"
    assert ds.classes == CLASSES and len(set(CLASSES)) == ds.num_classes >= 10
    assert len(ds) == 300
    assert len(ShapesDataset("train")) == DEFAULT_SIZES["train"]
    assert len(ShapesDataset("test")) == DEFAULT_SIZES["test"]
    assert ds.image_id(7) == "shapes-train-000007"
    assert len({ds.image_id(i) for i in range(len(ds))}) == len(ds)
    image, labels = ds[3]
    assert isinstance(image, Image.Image)
    np.testing.assert_array_equal(labels, ds.labels()[3])
    assert repr(ds).startswith("ShapesDataset(")


def test_images_are_rgb_of_image_size(train300):
    for i in range(3):
        im = train300.load_image(i)
        assert im.mode == "RGB" and im.size == (256, 256)
    im = ShapesDataset("test", num_images=5, image_size=96).load_image(4)
    assert im.mode == "RGB" and im.size == (96, 96)


def test_deterministic_and_order_independent(train300):
    first = [train300.load_image(i).tobytes() for i in (5, 0, 17)]
    again = [train300.load_image(i).tobytes() for i in (5, 0, 17)]
    assert first == again
    fresh = ShapesDataset("train", num_images=300)
    # Another access order, in a fresh object, after labels() was computed.
    fresh.labels()
    assert [fresh.load_image(i).tobytes() for i in (17, 0, 5)] == first[::-1]
    np.testing.assert_array_equal(fresh.labels(), train300.labels())
    # num_images does not change the images: image i is fixed by (seed, split, i).
    assert ShapesDataset("train", num_images=20).load_image(17).tobytes() == first[2]


def test_seed_and_split_change_images(train300):
    train = train300.load_image(0).tobytes()
    assert ShapesDataset("test", num_images=5).load_image(0).tobytes() != train
    assert ShapesDataset("train", num_images=5, seed=1).load_image(0).tobytes() != train
    test = ShapesDataset("test", num_images=300)
    assert not np.array_equal(test.labels(), train300.labels())
    assert train300.cache_key() != test.cache_key()
    assert train300.cache_key() != ShapesDataset("train", num_images=300, seed=1).cache_key()
    assert train300.cache_key() != ShapesDataset("train", num_images=300, image_size=128).cache_key()
    assert train300.cache_key() == ShapesDataset("train", num_images=300).cache_key()


def test_labels_shape_values_and_coverage(train300):
    labels = train300.labels()
    assert labels.dtype == np.int8 and labels.shape == (300, len(CLASSES))
    assert set(np.unique(labels).tolist()) <= {0, 1}  # Shapes has no "difficult" label
    per_image = labels.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= 4
    assert set(per_image.tolist()) == {1, 2, 3, 4}
    assert (labels.sum(axis=0) > 0).all(), "every class appears in 300 training images"
    assert labels is train300.labels()  # cached


def test_labels_match_boxes(train300):
    labels = train300.labels()
    sizes = []
    for i in range(len(train300)):
        boxes, cls = train300.boxes(i)
        assert boxes.dtype == np.float32 and boxes.shape == (len(cls), 4)
        assert len(set(cls.tolist())) == len(cls)  # distinct classes per image
        expected = np.zeros(len(CLASSES), dtype=np.int8)
        expected[cls] = 1
        np.testing.assert_array_equal(labels[i], expected)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 256).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        sizes.append((boxes[:, 2:] - boxes[:, :2]).max(axis=1))
    sizes = np.concatenate(sizes) / 256
    assert sizes.min() >= 0.09 and sizes.max() <= 0.46
    assert 0.3 < (sizes < 0.2).mean() < 0.7  # about half of the objects are small


def test_objects_are_drawn(train300):
    # The top-most (last drawn) object of a convex, hole-free class shows its colour at its centre.
    checked = 0
    for i in range(60):
        objects, _ = train300._layout(i)
        top = objects[-1]
        if CLASSES[top.cls] not in ("circle", "square", "diamond", "heart"):
            continue
        x = int((top.box[0] + top.box[2]) / 2)
        y = int((top.box[1] + top.box[3]) / 2)
        assert train300.load_image(i).getpixel((x, y)) == top.colour
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "val"},
        {"split": "TRAIN"},
        {"num_images": 0},
        {"num_images": -3},
        {"num_images": 2.5},
        {"num_images": "10"},
        {"num_images": True},
        {"image_size": 8},
        {"image_size": 64.0},
        {"seed": -1},
        {"seed": "0"},
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        ShapesDataset(**kwargs)


def test_bad_index(train300):
    with pytest.raises(IndexError):
        train300.load_image(300)
    with pytest.raises(IndexError):
        train300.boxes(-1)
    with pytest.raises(IndexError):
        train300[300]
    assert train300[-1][0].tobytes() == train300.load_image(299).tobytes()

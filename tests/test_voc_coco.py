"""VOC07Dataset, COCODataset and make_dataset on tiny datasets written to tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rarl_gym.data import (
    ABSENT,
    DIFFICULT,
    PRESENT,
    COCODataset,
    MultiLabelDataset,
    VOC07Dataset,
    make_dataset,
)
from rarl_gym.data.voc import VOC_CLASSES
from rarl_gym.errors import ConfigError, CorruptFileError, DatasetNotFoundError

# ---------------------------------------------------------------------------------------------- VOC
# image id -> objects (class, difficult, xmin, ymin, xmax, ymax)
VOC_OBJECTS = {
    "000001": [("dog", 0, 2, 3, 30, 20), ("person", 1, 5, 5, 10, 12)],  # person difficult only
    "000002": [("car", 1, 1, 1, 8, 8), ("car", 0, 10, 10, 30, 25), ("cat", 1, 3, 3, 9, 9)],
    "000003": [("aeroplane", 0, 4, 4, 40, 20)],
    "000004": [("tvmonitor", 0, 1, 2, 3, 4), ("bottle", 1, 2, 2, 5, 5)],
}
VOC_SIZES = {"000001": (40, 30), "000002": (36, 28), "000003": (48, 24), "000004": (20, 32)}
# The official per-class codes (devkit convention 1 / 0 difficult-only / -1 absent), written by hand.
DEVKIT_CODES = {
    "000001": {"dog": 1, "person": 0},
    "000002": {"car": 1, "cat": 0},
    "000003": {"aeroplane": 1},
    "000004": {"tvmonitor": 1, "bottle": 0},
}
SPLITS = {"train": ["000001", "000002", "000003"], "val": ["000004"], "trainval": ["000001", "000002", "000003", "000004"]}


def _xml(image_id: str) -> str:
    w, h = VOC_SIZES[image_id]
    objs = "".join(
        f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for c, d, x0, y0, x1, y1 in VOC_OBJECTS[image_id]
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>"
    )


def _jpeg(path, size, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


@pytest.fixture
def voc_root(tmp_path):
    """root/VOCdevkit/VOC2007 with 4 images; all 20 class files for train and trainval, none for val."""
    root = tmp_path / "voc07"
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    for k, image_id in enumerate(VOC_OBJECTS):
        _jpeg(base / "JPEGImages" / f"{image_id}.jpg", VOC_SIZES[image_id], k)
        (base / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id))
    main = base / "ImageSets" / "Main"
    for split, ids in SPLITS.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        if split == "val":
            continue
        for cls in VOC_CLASSES:
            lines = "".join(f"{i} {DEVKIT_CODES[i].get(cls, -1):2d}\n" for i in ids)
            (main / f"{cls}_{split}.txt").write_text(lines)
    return root


def _expected(ids):
    ours = {1: PRESENT, -1: ABSENT, 0: DIFFICULT}
    return np.array([[ours[DEVKIT_CODES[i].get(c, -1)] for c in VOC_CLASSES] for i in ids], dtype=np.int8)


def test_voc_labels_from_class_files(voc_root):
    ds = VOC07Dataset(voc_root, "train")
    assert isinstance(ds, MultiLabelDataset)
    assert ds.name == "voc07" and ds.split == "train" and ds.num_classes == 20
    assert ds.classes[0] == "aeroplane" and ds.classes[-1] == "tvmonitor" and ds.classes == VOC_CLASSES
    assert len(ds) == 3 and [ds.image_id(i) for i in range(3)] == SPLITS["train"]
    assert ds.label_source == "class files"
    labels = ds.labels()
    assert labels.dtype == np.int8 and labels.shape == (3, 20)
    np.testing.assert_array_equal(labels, _expected(SPLITS["train"]))
    c = VOC_CLASSES.index
    assert labels[0, c("dog")] == PRESENT and labels[0, c("person")] == DIFFICULT and labels[0, c("cat")] == ABSENT
    assert labels[1, c("car")] == PRESENT  # one difficult and one normal instance -> present
    img, lab = ds[1]
    assert img.mode == "RGB" and img.size == VOC_SIZES["000002"]
    np.testing.assert_array_equal(lab, labels[1])


def test_voc_class_files_agree_with_xml(voc_root):
    for split in ("train", "trainval"):
        ds = VOC07Dataset(voc_root, split)
        assert ds.label_source == "class files"
        np.testing.assert_array_equal(ds.labels(), ds.labels_from_xml())


def test_voc_labels_from_xml_without_class_files(voc_root):
    ds = VOC07Dataset(voc_root, "val")  # no class files for val
    assert ds.label_source == "xml"
    np.testing.assert_array_equal(ds.labels(), _expected(SPLITS["val"]))
    # one class file missing: falls back to the XML, same labels
    (voc_root / "VOCdevkit/VOC2007/ImageSets/Main/dog_train.txt").unlink()
    ds = VOC07Dataset(voc_root, "train")
    assert ds.label_source == "xml"
    np.testing.assert_array_equal(ds.labels(), _expected(SPLITS["train"]))


def test_voc_boxes_size_and_cache_key(voc_root):
    ds = VOC07Dataset(voc_root, "train")
    boxes, cls, difficult = ds.boxes(1)
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[1], [10, 10, 30, 25])
    assert [VOC_CLASSES[c] for c in cls] == ["car", "car", "cat"]
    assert difficult.tolist() == [True, False, True]
    assert ds.image_size(2) == VOC_SIZES["000003"]
    key = ds.cache_key()
    assert "voc07" in key and "train" in key and "-3-" in key
    assert key == VOC07Dataset(voc_root, "train").cache_key()
    assert key != VOC07Dataset(voc_root, "trainval").cache_key()
    # re-encoded pixels change the key
    _jpeg(voc_root / "VOCdevkit/VOC2007/JPEGImages/000001.jpg", (41, 30), 99)
    assert key != VOC07Dataset(voc_root, "train").cache_key()


def test_voc_rarl_data_default(voc_root, monkeypatch):
    monkeypatch.setenv("RARL_DATA", str(voc_root.parent))
    assert len(VOC07Dataset(split="trainval")) == 4
    monkeypatch.delenv("RARL_DATA")
    with pytest.raises(DatasetNotFoundError, match="RARL_DATA"):
        VOC07Dataset(split="train")


def test_voc_missing_dataset(tmp_path, voc_root):
    with pytest.raises(DatasetNotFoundError) as err:
        VOC07Dataset(tmp_path / "nowhere", "train")
    msg = str(err.value)
    assert "VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}" in msg
    assert "host.robots.ox.ac.uk/pascal/VOC/voc2007" in msg and "VOCtrainval_06-Nov-2007.tar" in msg
    # an official split whose file is missing
    with pytest.raises(DatasetNotFoundError, match="test.txt"):
        VOC07Dataset(voc_root, "test")
    # a missing image of the split
    (voc_root / "VOCdevkit/VOC2007/JPEGImages/000003.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="000003.jpg"):
        VOC07Dataset(voc_root, "train")
    # no JPEGImages at all
    (voc_root / "VOCdevkit/VOC2007/JPEGImages").rename(voc_root / "moved")
    with pytest.raises(DatasetNotFoundError, match="JPEGImages"):
        VOC07Dataset(voc_root, "train")


def test_voc_unknown_split_lists_present(voc_root):
    with pytest.raises(ConfigError) as err:
        VOC07Dataset(voc_root, "training")
    assert "'train'" in str(err.value) and "'trainval'" in str(err.value) and "'val'" in str(err.value)
    assert "dog_train" not in str(err.value)


def test_voc_malformed_xml_names_file(voc_root):
    bad = voc_root / "VOCdevkit/VOC2007/Annotations/000004.xml"
    bad.write_text("<annotation><object><name>dog</name>")  # truncated
    with pytest.raises(CorruptFileError, match="000004.xml"):
        VOC07Dataset(voc_root, "val")  # labels come from the XML
    ds = VOC07Dataset(voc_root, "trainval")  # labels from class files: constructs
    with pytest.raises(CorruptFileError, match="000004.xml"):
        ds.boxes(3)


def test_voc_corrupt_jpeg_names_file(voc_root):
    ds = VOC07Dataset(voc_root, "train")
    path = voc_root / "VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # truncated
    with pytest.raises(CorruptFileError, match="000001.jpg"):
        ds.load_image(0)
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(CorruptFileError, match="000001.jpg"):
        ds.load_image(0)
    with pytest.raises(CorruptFileError, match="000001.jpg"):
        ds.image_size(0)
    assert ds.load_image(1).mode == "RGB"


# --------------------------------------------------------------------------------------------- COCO
COCO_CATEGORIES = [  # non-contiguous ids, not in id order in the file
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
]
COCO_IMAGES = [
    {"id": 42, "file_name": "000000000042.jpg", "width": 30, "height": 20},
    {"id": 7, "file_name": "000000000007.jpg", "width": 24, "height": 32},
    {"id": 100, "file_name": "000000000100.jpg", "width": 16, "height": 16},  # no annotation
]
COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 18, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
    {"id": 3, "image_id": 7, "category_id": 1, "bbox": [3, 3, 4, 4], "area": 16, "iscrowd": 0},
    {"id": 4, "image_id": 42, "category_id": 3, "bbox": [2, 2, 8, 6], "area": 48, "iscrowd": 1},
]


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    for k, im in enumerate(COCO_IMAGES):
        _jpeg(root / "train2017" / im["file_name"], (im["width"], im["height"]), k)
    data = {"images": COCO_IMAGES, "annotations": COCO_ANNOTATIONS, "categories": COCO_CATEGORIES}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return root


def test_coco_labels_and_order(coco_root, capsys):
    ds = COCODataset(coco_root, "train2017")
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    assert isinstance(ds, MultiLabelDataset) and ds.name == "coco" and ds.split == "train2017"
    assert ds.classes == ("person", "car", "dog")  # ascending category id
    assert ds.category_ids == (1, 3, 18)
    assert len(ds) == 3 and [ds.image_id(i) for i in range(3)] == ["7", "42", "100"]
    labels = ds.labels()
    assert labels.dtype == np.int8
    np.testing.assert_array_equal(labels, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])  # crowd counts; empty kept
    img, _lab = ds[0]
    assert img.mode == "RGB" and img.size == (24, 32)
    assert ds.image_size(1) == (30, 20)
    boxes, cls, difficult = ds.boxes(0)
    np.testing.assert_array_equal(boxes[0], [1, 2, 11, 22])  # xywh -> xyxy
    assert [ds.classes[c] for c in cls] == ["person", "dog", "person"] and not difficult.any()
    assert ds.boxes(2)[0].shape == (0, 4)
    key = ds.cache_key()
    assert "coco" in key and "train2017" in key and "-3-" in key
    assert key == COCODataset(coco_root, "train2017").cache_key()


def test_coco_rarl_data_default(coco_root, monkeypatch):
    monkeypatch.setenv("RARL_DATA", str(coco_root.parent))
    assert len(COCODataset(split="train2017")) == 3


def test_coco_missing_json(coco_root, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        COCODataset(coco_root, "val2017")
    msg = str(err.value)
    assert "instances_val2017.json" in msg and "cocodataset.org/#download" in msg and "train2017" in msg
    with pytest.raises(DatasetNotFoundError, match="cocodataset.org"):
        COCODataset(tmp_path / "nowhere", "train2014")
    (coco_root / "train2017" / "000000000042.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="000000000042.jpg"):
        COCODataset(coco_root, "train2017")
    (coco_root / "train2017").rename(coco_root / "moved")
    with pytest.raises(DatasetNotFoundError, match="train2017"):
        COCODataset(coco_root, "train2017")


def test_coco_malformed_json_names_file(coco_root):
    path = coco_root / "annotations" / "instances_train2017.json"
    path.write_text('{"images": [')
    with pytest.raises(CorruptFileError, match="instances_train2017.json"):
        COCODataset(coco_root, "train2017")
    path.write_text('{"images": [{"file_name": "x.jpg"}], "categories": []}')  # image without id
    with pytest.raises(CorruptFileError, match="instances_train2017.json"):
        COCODataset(coco_root, "train2017")


def test_coco_unknown_split(coco_root):
    with pytest.raises(ConfigError, match="'train2017'"):
        COCODataset(coco_root, "training")


# ------------------------------------------------------------------------------------- make_dataset
def test_make_dataset(voc_root, coco_root):
    assert isinstance(make_dataset("voc07", "train", root=voc_root), VOC07Dataset)
    assert isinstance(make_dataset("coco", "train2017", root=str(coco_root)), COCODataset)
    with pytest.raises(ConfigError, match="'voc07'"):
        make_dataset("voc12", "train")
    with pytest.raises(ConfigError, match="num_images"):
        make_dataset("voc07", "train", root=voc_root, num_images=3)


def test_make_dataset_shapes_ignores_root():
    pytest.importorskip("rarl_gym.data.shapes")
    ds = make_dataset("shapes", "train", root="/nonexistent", num_images=4)
    assert ds.name == "shapes" and len(ds) == 4

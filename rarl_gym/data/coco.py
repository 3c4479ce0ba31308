"""MS-COCO as a multi-label dataset (80 classes, image-level labels from the instance annotations).

Layout (the official one)::

    <root>/<split>/*.jpg                                  e.g. <root>/train2014/COCO_train2014_000000000009.jpg
    <root>/annotations/instances_<split>.json

Any split with both present works (``train2014``, ``val2014``, ``train2017``, ``val2017``...).

Labels: class c is :data:`PRESENT` (1) when the image has at least one annotation of category c,
crowd annotations (``iscrowd=1``) included, else :data:`ABSENT` (0); COCO has no "difficult" label.
Images without any annotation are kept, with all-zero labels. Classes are the json's categories in
ascending category id order (the official order: person, bicycle, car, ...), named as in the json.
Images are ordered by ascending image id.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from rarl_gym.data.base import ABSENT, PRESENT, MultiLabelDataset
from rarl_gym.data.files import FileStampsMixin, dataset_root, fingerprint, image_header_size, open_rgb
from rarl_gym.errors import ConfigError, CorruptFileError, DatasetNotFoundError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

#: The splits of the official archives that carry instance annotations.
COCO_SPLITS: tuple[str, ...] = ("train2014", "val2014", "train2017", "val2017")

COCO_LAYOUT = "<root>/<split>/*.jpg and <root>/annotations/instances_<split>.json"
_INSTANCES = re.compile(r"^instances_(?P<split>.+)\.json$")


def _source(split: str) -> str:
    year = "2017" if split.endswith("2017") else "2014"
    return (
        f"download train{year}.zip, val{year}.zip and annotations_trainval{year}.zip from "
        "https://cocodataset.org/#download and extract them into root (they create "
        f"train{year}/, val{year}/ and annotations/)"
    )


class COCODataset(FileStampsMixin, MultiLabelDataset):
    """A split of MS-COCO.

    Args:
        root: the folder that holds ``annotations/``; default ``$RARL_DATA/coco``.
        split: ``train2014``, ``val2014``, ``train2017``, ``val2017``, or any split whose
            ``annotations/instances_<split>.json`` exists.

    Raises:
        DatasetNotFoundError: the annotations json, the image folder or images are missing.
        ConfigError: ``split`` is neither an official split nor one present on disk.
        CorruptFileError: the json is malformed (the message names the file).
    """

    name = "coco"

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train2014"):
        self.root = dataset_root(root, "coco", "coco")
        self.split = split
        self.annotation_dir = self.root / "annotations"
        self.annotation_file = self.annotation_dir / f"instances_{split}.json"
        self.image_dir = self.root / split
        self._check_layout()
        self.coco = self._load_json()
        self._build()
        self._cache_key: str | None = None

    # ------------------------------------------------------------------ construction
    def _not_found(self, problem: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{problem}; the COCO dataset must be laid out as {COCO_LAYOUT} with root={self.root}",
            _source(self.split),
        )

    def splits_present(self) -> list[str]:
        """The splits whose ``annotations/instances_<split>.json`` exists."""
        if not self.annotation_dir.is_dir():
            return []
        return sorted(m["split"] for p in self.annotation_dir.iterdir() if (m := _INSTANCES.match(p.name)))

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise self._not_found(f"{self.root} does not exist")
        if not self.annotation_dir.is_dir():
            raise self._not_found(f"{self.annotation_dir} does not exist")
        if not self.annotation_file.is_file():
            present = self.splits_present()
            if self.split in COCO_SPLITS:
                raise self._not_found(
                    f"annotation file {self.annotation_file} does not exist; splits present: {present or 'none'}"
                )
            raise ConfigError(
                f"unknown COCO split {self.split!r}: there is no {self.annotation_file}",
                f"use one of the splits present: {', '.join(map(repr, present)) or 'none (no instances_*.json found)'}",
            )
        if not self.image_dir.is_dir():
            raise self._not_found(f"image folder {self.image_dir} does not exist")

    def _load_json(self) -> COCO:
        from pycocotools.coco import COCO

        fix = f"replace {self.annotation_file.name} with an intact copy ({_source(self.split)})"
        try:
            with open(self.annotation_file, "rb") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CorruptFileError(f"malformed JSON annotation file {self.annotation_file}: {exc}", fix) from exc
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("categories"), list)
        ):
            raise CorruptFileError(
                f"annotation file {self.annotation_file} is not a COCO instances file "
                "(a JSON object with 'images', 'annotations' and 'categories' lists)",
                fix,
            )
        if "annotations" not in data:  # an image-info file (test splits) or a cut one: every label would read 0
            raise CorruptFileError(
                f"annotation file {self.annotation_file} has no 'annotations': without them every image would be "
                "labelled all-negative (an image-info file such as image_info_test2017.json, or a damaged copy)",
                fix,
            )
        self._validate(data, fix)
        coco = COCO()
        coco.dataset = data
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco.createIndex()
        except (KeyError, TypeError) as exc:
            raise CorruptFileError(
                f"annotation file {self.annotation_file} has a malformed image, annotation or category entry "
                f"(missing or bad field {exc})",
                fix,
            ) from exc
        return coco

    def _validate(self, data: dict, fix: str) -> None:
        """Check the fields every image and category needs before anything uses them, so that a
        damaged file fails here, named, and not as a bare ``KeyError`` or after the extraction."""
        problem = (
            _lists_problem(data)
            or _first_problem(data["images"], _image_problem)
            or _first_problem(data["categories"], _category_problem)
            or _duplicate_problem(data["images"], "images")
            or _duplicate_problem(data["categories"], "categories")
            or _first_problem(data["annotations"], _annotation_problem)
        )
        if problem is not None:
            raise CorruptFileError(f"annotation file {self.annotation_file}: {problem}", fix)

    def _build(self) -> None:
        coco = self.coco
        self.category_ids: tuple[int, ...] = tuple(sorted(coco.cats))
        self.classes = tuple(str(coco.cats[c]["name"]) for c in self.category_ids)
        self._image_ids: list[int] = sorted(coco.imgs)
        self._files = [str(coco.imgs[i]["file_name"]) for i in self._image_ids]
        have = {e.name for e in os.scandir(self.image_dir)}
        missing = [f for f in self._files if Path(f).name not in have and not (self.image_dir / f).is_file()]
        if missing:
            raise self._not_found(
                f"{len(missing)} of the {len(self._files)} images of split {self.split!r} are missing from "
                f"{self.image_dir} (first: {', '.join(missing[:5])})"
            )
        row = {image_id: i for i, image_id in enumerate(self._image_ids)}
        col = {cat_id: c for c, cat_id in enumerate(self.category_ids)}
        labels = np.full((len(row), len(col)), ABSENT, dtype=np.int8)
        for ann in coco.dataset["annotations"]:  # not coco.anns: that dict drops duplicate annotation ids
            i, c = row.get(ann["image_id"]), col.get(ann["category_id"])
            if i is None or c is None:
                unknown = f"image id {ann['image_id']}" if i is None else f"category id {ann['category_id']}"
                raise CorruptFileError(
                    f"annotation file {self.annotation_file}: annotation {ann.get('id')} refers to {unknown}, "
                    f"which is not in its '{'images' if i is None else 'categories'}'",
                    f"replace the file with an intact copy ({_source(self.split)})",
                )
            labels[i, c] = PRESENT
        labels.setflags(write=False)
        self._labels = labels

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return len(self._image_ids)

    def image_id(self, index: int) -> str:
        """The COCO image id, as a string."""
        return str(self._image_ids[index])

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._files[index]

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.image_path(index))

    def labels(self) -> np.ndarray:
        """``[N, C]`` int8 (read-only): 1 present, 0 absent."""
        return self._labels

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` from the json; from the JPEG header when the json lacks it."""
        info = self.coco.imgs[self._image_ids[index]]
        if "width" in info and "height" in info:
            return int(info["width"]), int(info["height"])
        return image_header_size(self.image_path(index))

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The annotations of image ``index``.

        Returns:
            boxes: ``[n, 4]`` float32 ``x0, y0, x1, y1`` in pixels (from COCO's ``x, y, w, h``).
            classes: ``[n]`` int64 class indices into :attr:`classes`.
            difficult: ``[n]`` bool, all False (COCO has no difficult flag; crowd boxes are included).
        """
        col = {cat_id: c for c, cat_id in enumerate(self.category_ids)}
        anns = self.coco.imgToAnns.get(self._image_ids[index], [])
        xywh = np.asarray([a.get("bbox", [0, 0, 0, 0]) for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.asarray([col[a["category_id"]] for a in anns], dtype=np.int64)
        return xyxy, classes, np.zeros(len(anns), dtype=bool)

    def _key(self, files: bytes) -> str:
        digest = fingerprint(
            np.asarray(self._image_ids, dtype=np.int64).tobytes(),
            "\n".join(self._files).encode(),
            "\n".join(self.classes).encode(),
            self._labels.tobytes(),
            files,
        )
        return f"coco-{self.split}-{len(self)}-{digest}"


# -- the checks of COCODataset._validate: each returns the problem it finds, or None ---------------
def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _lists_problem(data: dict) -> str | None:
    if not data["images"]:
        return "'images' is empty: the split has no images"
    if not data["categories"]:
        return "'categories' is empty"
    if not isinstance(data["annotations"], list):
        return "'annotations' is not a list"
    return None


def _image_problem(i: int, img: object) -> str | None:
    if not isinstance(img, dict):
        return f"images[{i}] is not an object"
    if not _is_int(img.get("id")):
        return f"images[{i}] has no integer 'id' (got {img.get('id')!r})"
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        return f"images[{i}] (id {img['id']}) has no 'file_name'"
    for side in ("width", "height"):
        if side in img and not (_is_int(img[side]) and img[side] > 0):
            return f"images[{i}] (id {img['id']}) has a {side} that is not a positive integer: {img[side]!r}"
    return None


def _category_problem(i: int, cat: object) -> str | None:
    if not isinstance(cat, dict):
        return f"categories[{i}] is not an object"
    if not _is_int(cat.get("id")):
        return f"categories[{i}] has no integer 'id' (got {cat.get('id')!r})"
    if not isinstance(cat.get("name"), str) or not cat["name"]:
        return f"categories[{i}] (id {cat['id']}) has no 'name'"
    return None


def _duplicate_problem(entries: list, what: str) -> str | None:
    """``"images[3] and images[7] have the same id 12"`` for the first repeated id (pycocotools would
    keep the last silently), or None."""
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        j = first.setdefault(entry["id"], i)
        if j != i:
            return f"{what}[{j}] and {what}[{i}] have the same id {entry['id']} (each id must be unique)"
    return None


def _annotation_problem(i: int, ann: object) -> str | None:
    if not isinstance(ann, dict) or not _is_int(ann.get("image_id")) or not _is_int(ann.get("category_id")):
        return f"annotations[{i}] lacks an integer 'image_id' or 'category_id'"
    return None


def _first_problem(entries: list, check: Callable[[int, Any], str | None]) -> str | None:
    """The problem of the first entry ``check(i, entry)`` finds fault with, or None."""
    return next((p for p in (check(i, e) for i, e in enumerate(entries)) if p is not None), None)


__all__ = ["COCO_SPLITS", "COCODataset"]

"""PASCAL VOC 2007 as a multi-label dataset (20 classes, the devkit's image-level labels).

Layout (what the official archives extract to, and what torchvision's ``VOCDetection`` reads)::

    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/Annotations/<id>.xml
    <root>/VOCdevkit/VOC2007/ImageSets/Main/<split>.txt            image ids of the split
    <root>/VOCdevkit/VOC2007/ImageSets/Main/<class>_<split>.txt    official labels (1 / 0 / -1)

Labels follow the devkit exactly. Its ``<class>_<split>.txt`` files hold 1 when the image has a
non-difficult instance of the class, 0 when all its instances are difficult and -1 when it has
none; these map to our :data:`PRESENT` (1), :data:`DIFFICULT` (-1) and :data:`ABSENT` (0). The
class files are read when all 20 exist for the split (fast and exact); otherwise the same rule is
applied to the XML annotations.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from rarl_gym.data.base import ABSENT, DIFFICULT, PRESENT, MultiLabelDataset
from rarl_gym.data.files import FileStampsMixin, dataset_root, fingerprint, image_header_size, open_rgb
from rarl_gym.errors import ConfigError, CorruptFileError, DatasetNotFoundError

#: The 20 VOC classes in the devkit's official order (``VOCinit.m``).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

#: The splits of the official VOC2007 archives (trainval archive: train, val, trainval; test archive: test).
VOC07_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")

VOC07_LAYOUT = "<root>/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}"
VOC07_SOURCE = (
    "download VOCtrainval_06-Nov-2007.tar (train, val, trainval) and VOCtest_06-Nov-2007.tar (test) "
    "from the PASCAL VOC 2007 site, http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ , and extract both "
    "into root (they create VOCdevkit/VOC2007)"
)

# devkit code -> our code
_DEVKIT_TO_OURS = {1: PRESENT, -1: ABSENT, 0: DIFFICULT}
_CLASS_FILE = re.compile(r"^(?P<cls>[^_]+)_(?P<split>.+)\.txt$")


class VOC07Dataset(FileStampsMixin, MultiLabelDataset):
    """A split of PASCAL VOC 2007 (``train``, ``val``, ``trainval``, ``test``, or any split whose
    ``ImageSets/Main/<split>.txt`` exists).

    Args:
        root: the folder that holds ``VOCdevkit/``; default ``$RARL_DATA/voc07``.
        split: the split name.

    Raises:
        DatasetNotFoundError: the folder, the split file, the JPEGs or (when needed) the XMLs are missing.
        ConfigError: ``split`` is neither an official VOC2007 split nor a split file present.
        CorruptFileError: a malformed XML or class file (the message names the file).
    """

    name = "voc07"
    classes = VOC_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "trainval"):
        self.root = dataset_root(root, "voc07", "voc07")
        self.split = split
        self.base = self.root / "VOCdevkit" / "VOC2007"
        self.image_dir = self.base / "JPEGImages"
        self.annotation_dir = self.base / "Annotations"
        self.sets_dir = self.base / "ImageSets" / "Main"
        self._check_layout()
        self._ids = self._read_split()
        self._check_images()
        self._objects: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.label_source = "class files" if self._has_class_files() else "xml"
        labels = self._labels_from_class_files() if self.label_source == "class files" else self.labels_from_xml()
        labels.setflags(write=False)
        self._labels = labels
        self._cache_key: str | None = None

    # ------------------------------------------------------------------ construction
    def _not_found(self, problem: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{problem}; the VOC2007 dataset must be laid out as {VOC07_LAYOUT} with root={self.root}",
            VOC07_SOURCE,
        )

    def _check_layout(self) -> None:
        if not self.base.is_dir():
            problem = f"{self.base} does not exist"
            if (self.root / "JPEGImages").is_dir() or (self.root / "VOC2007").is_dir():
                problem += " (root looks like it points inside VOCdevkit: pass the folder that holds VOCdevkit/)"
            raise self._not_found(problem)
        if not self.sets_dir.is_dir():
            raise self._not_found(f"{self.sets_dir} does not exist")
        if not self.image_dir.is_dir():
            raise self._not_found(f"{self.image_dir} does not exist")

    def splits_present(self) -> list[str]:
        """The splits whose ``ImageSets/Main/<split>.txt`` exists."""
        present = []
        for p in sorted(self.sets_dir.glob("*.txt")):
            m = _CLASS_FILE.match(p.name)
            if m and m["cls"] in VOC_CLASSES:
                continue  # a per-class label file
            present.append(p.stem)
        return present

    def _read_split(self) -> list[str]:
        split_file = self.sets_dir / f"{self.split}.txt"
        if not split_file.is_file():
            present = self.splits_present()
            if self.split in VOC07_SPLITS:
                extra = " (the test split comes from VOCtest_06-Nov-2007.tar)" if self.split == "test" else ""
                raise self._not_found(f"split file {split_file} does not exist{extra}; splits present: {present or 'none'}")
            raise ConfigError(
                f"unknown VOC2007 split {self.split!r}: there is no {split_file}",
                f"use one of the splits present: {', '.join(map(repr, present)) or 'none (no split file found)'}",
            )
        try:
            text = split_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"cannot read split file {split_file}: {exc}", VOC07_SOURCE) from exc
        ids = [line.split()[0] for line in text.splitlines() if line.strip()]
        if not ids:
            raise CorruptFileError(f"split file {split_file} lists no image", "restore it from the VOC2007 archive")
        return ids

    def _check_images(self) -> None:
        have = {p.name for p in os.scandir(self.image_dir)}
        missing = [i for i in self._ids if f"{i}.jpg" not in have]
        if missing:
            raise self._not_found(
                f"{len(missing)} of the {len(self._ids)} images of split {self.split!r} are missing from "
                f"{self.image_dir} (first: {', '.join(m + '.jpg' for m in missing[:5])})"
            )

    def _class_file(self, cls: str) -> Path:
        return self.sets_dir / f"{cls}_{self.split}.txt"

    def _has_class_files(self) -> bool:
        return all(self._class_file(c).is_file() for c in VOC_CLASSES)

    def _labels_from_class_files(self) -> np.ndarray:
        """The label matrix from the official ``<class>_<split>.txt`` files."""
        row = {image_id: i for i, image_id in enumerate(self._ids)}
        labels = np.full((len(self._ids), len(VOC_CLASSES)), ABSENT, dtype=np.int8)
        fix = "restore the file from the VOC2007 archive, or delete it to derive the labels from the XML annotations"
        for c, cls in enumerate(VOC_CLASSES):
            path = self._class_file(cls)
            seen = np.zeros(len(self._ids), dtype=bool)
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CorruptFileError(f"cannot read class file {path}: {exc}", fix) from exc
            for lineno, line in enumerate(lines, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    image_id, code = fields[0], int(fields[1])
                    value = _DEVKIT_TO_OURS[code]
                except (IndexError, ValueError, KeyError):
                    raise CorruptFileError(
                        f"class file {path}, line {lineno}: expected '<image id> <1|0|-1>', got {line!r}", fix
                    ) from None
                i = row.get(image_id)
                if i is not None:
                    labels[i, c] = value
                    seen[i] = True
            if not seen.all():
                first = self._ids[int(np.flatnonzero(~seen)[0])]
                raise CorruptFileError(
                    f"class file {path} has no line for {int((~seen).sum())} image(s) of split {self.split!r} "
                    f"(first: {first})",
                    fix,
                )
        return labels

    def labels_from_xml(self) -> np.ndarray:
        """The label matrix derived from the XML annotations by the devkit's rule."""
        labels = np.full((len(self._ids), len(VOC_CLASSES)), ABSENT, dtype=np.int8)
        for i in range(len(self._ids)):
            _, cls, difficult = self.boxes(i)
            for c in range(len(VOC_CLASSES)):
                mine = cls == c
                if (mine & ~difficult).any():
                    labels[i, c] = PRESENT
                elif mine.any():
                    labels[i, c] = DIFFICULT
        return labels

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return len(self._ids)

    def image_id(self, index: int) -> str:
        return self._ids[index]

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self._ids[index]}.jpg"

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.image_path(index))

    def labels(self) -> np.ndarray:
        """``[N, 20]`` int8 (read-only): 1 present, 0 absent, -1 difficult only."""
        return self._labels

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of image ``index``, from the JPEG header (no decode)."""
        return image_header_size(self.image_path(index))

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The objects of image ``index`` from its XML annotation.

        Returns:
            boxes: ``[n, 4]`` float32 ``xmin, ymin, xmax, ymax`` in pixels, as written in the XML
                (the devkit's 1-based pixel coordinates).
            classes: ``[n]`` int64 class indices into :attr:`classes`.
            difficult: ``[n]`` bool.
        """
        index = range(len(self._ids))[index]
        if index not in self._objects:
            self._objects[index] = self._parse_xml(self.annotation_dir / f"{self._ids[index]}.xml")
        return self._objects[index]

    def _parse_xml(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fix = "replace the file with an intact copy from the VOC2007 archive"
        if not path.is_file():
            raise self._not_found(f"annotation file {path} is missing")
        try:
            tree = ET.parse(path)
        except (ET.ParseError, OSError) as exc:
            raise CorruptFileError(f"malformed XML annotation {path}: {exc}", fix) from exc
        class_index = {c: i for i, c in enumerate(VOC_CLASSES)}
        boxes, classes, difficult = [], [], []
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in class_index:
                raise CorruptFileError(f"XML annotation {path}: unknown VOC class {name!r}", fix)
            try:
                flag = int((obj.findtext("difficult") or "0").strip())
                bb = obj.find("bndbox")
                # a missing coordinate is None here, whose TypeError is reported below
                box = [0.0] * 4 if bb is None else [float(cast(str, bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError) as exc:
                raise CorruptFileError(f"XML annotation {path}: bad <difficult> or <bndbox> value ({exc})", fix) from exc
            boxes.append(box)
            classes.append(class_index[name])
            difficult.append(bool(flag))
        return (
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(classes, dtype=np.int64),
            np.asarray(difficult, dtype=bool),
        )

    def _key(self, files: bytes) -> str:
        digest = fingerprint("\n".join(self._ids).encode(), self._labels.tobytes(), files)
        return f"voc07-{self.split}-{len(self)}-{digest}"


__all__ = ["VOC07_SPLITS", "VOC_CLASSES", "VOC07Dataset"]

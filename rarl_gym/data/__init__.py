"""Multi-label datasets: synthetic shapes, PASCAL VOC 2007 and MS-COCO.

Use :func:`make_dataset` to build one by name.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from rarl_gym.data.base import ABSENT, DIFFICULT, PRESENT, MultiLabelDataset
from rarl_gym.data.coco import COCODataset
from rarl_gym.data.voc import VOC07Dataset
from rarl_gym.errors import ConfigError

#: The names :func:`make_dataset` accepts.
DATASET_NAMES: tuple[str, ...] = ("shapes", "voc07", "coco")


def _dataset_class(name: str) -> type[MultiLabelDataset]:
    if name == "voc07":
        return VOC07Dataset
    if name == "coco":
        return COCODataset
    if name == "shapes":
        from rarl_gym.data.shapes import ShapesDataset  # imported lazily

        return ShapesDataset
    raise ConfigError(f"unknown dataset {name!r}", f"use one of {', '.join(map(repr, DATASET_NAMES))}")


def make_dataset(name: str, split: str, root: str | os.PathLike | None = None, **kwargs: Any) -> MultiLabelDataset:
    """The split ``split`` of dataset ``name`` (``"shapes"``, ``"voc07"`` or ``"coco"``).

    Args:
        name: the dataset.
        split: its split (``"train"``, ``"trainval"``, ``"train2014"``...).
        root: the dataset folder for ``voc07`` and ``coco`` (default ``$RARL_DATA/<name>``); ignored
            by ``shapes``, which is generated.
        **kwargs: further keyword arguments of the dataset class (e.g. ``num_images`` of shapes).

    Raises:
        ConfigError: an unknown name or keyword argument.
    """
    cls = _dataset_class(name)
    params = inspect.signature(cls.__init__).parameters.values()
    accepted = [
        p.name
        for p in params
        if p.name not in ("self", "split", "root") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    unknown = [] if takes_any else sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown keyword argument(s) {', '.join(map(repr, unknown))} for dataset {name!r}",
            f"use {', '.join(map(repr, accepted))}" if accepted else f"dataset {name!r} takes only split and root",
        )
    # The constructors' signatures differ by dataset (checked against ``accepted`` above).
    construct: Callable[..., MultiLabelDataset] = cls
    if name == "shapes":
        return construct(split, **kwargs)
    return construct(root=root, split=split, **kwargs)


def object_boxes(dataset: MultiLabelDataset) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per image of ``dataset`` its ground-truth objects in image coordinates: ``(boxes [n, 4]``
    ``(x1, y1, x2, y2)`` in ``[-1, 1]`` (the glimpses' coordinates, :mod:`rarl_gym.glimpse`),
    ``classes [n])``, difficult objects left out; ``None`` for a dataset without boxes.

    For evaluation only (grounding, :func:`rarl_gym.metrics.grounding`): training stays weakly
    supervised, on image-level labels.
    """
    boxes_of = getattr(dataset, "boxes", None)
    if boxes_of is None:
        return None
    out = []
    for i in range(len(dataset)):
        found = boxes_of(i)
        boxes, classes = np.asarray(found[0], np.float32).reshape(-1, 4), np.asarray(found[1], np.int64)
        if len(found) > 2:  # VOC's difficult flag
            easy = ~np.asarray(found[2], bool)
            boxes, classes = boxes[easy], classes[easy]
        width, height = dataset.image_size(i)
        scale = np.array([width, height, width, height], np.float32)
        out.append((boxes / scale * 2 - 1, classes))
    return out


__all__ = [
    "ABSENT",
    "DATASET_NAMES",
    "DIFFICULT",
    "PRESENT",
    "COCODataset",
    "MultiLabelDataset",
    "VOC07Dataset",
    "make_dataset",
    "object_boxes",
]

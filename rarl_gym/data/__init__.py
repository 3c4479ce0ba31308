"""Multi-label datasets: synthetic shapes, PASCAL VOC 2007 and MS-COCO.

Use :func:`make_dataset` to build one by name.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

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


__all__ = [
    "ABSENT",
    "DATASET_NAMES",
    "DIFFICULT",
    "PRESENT",
    "COCODataset",
    "MultiLabelDataset",
    "VOC07Dataset",
    "make_dataset",
]

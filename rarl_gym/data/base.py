"""The dataset contract shared by every rarl-gym dataset."""

from __future__ import annotations

import abc

import numpy as np
from PIL import Image

#: Label codes of :meth:`MultiLabelDataset.labels`.
PRESENT, ABSENT, DIFFICULT = 1, 0, -1


class MultiLabelDataset(abc.ABC):
    """A split of a multi-label image dataset.

    ``dataset[i]`` is ``(image, labels)``: an RGB ``PIL.Image`` and an ``int8`` array ``[L]`` with
    1 = present, 0 = absent, -1 = difficult (ignored for that class by the metrics and the reward,
    as the VOC devkit ignores its "0" entries).

    Subclasses set ``name`` (``"shapes"``, ``"voc07"``, ``"coco"``), ``split`` and ``classes``
    and implement the abstract methods. Labels must be available without decoding images
    (:meth:`labels`), so the feature store and the metrics never touch pixels.
    """

    name: str
    split: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The RGB image ``index``; a corrupt file raises :class:`rarl_gym.errors.CorruptFileError`."""

    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """``[N, L]`` int8 label matrix of the whole split (1 / 0 / -1)."""

    @abc.abstractmethod
    def image_id(self, index: int) -> str:
        """A stable identifier of image ``index`` (a file stem, a COCO id...)."""

    @abc.abstractmethod
    def cache_key(self) -> str:
        """A string that changes whenever the split's images or labels change (feature cache key)."""

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of image ``index`` in pixels (subclasses read it without decoding)."""
        return self.load_image(index).size

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} images")
        index %= len(self)
        return self.load_image(index), self.labels()[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, images={len(self)}, classes={self.num_classes})"


__all__ = ["ABSENT", "DIFFICULT", "PRESENT", "MultiLabelDataset"]

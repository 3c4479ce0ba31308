"""What the on-disk datasets (VOC 2007, COCO) share: where their folder is, reading images with errors
that name the file, and cache keys that notice changed image files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rarl_gym.errors import CorruptFileError, DatasetNotFoundError


def dataset_root(root: str | os.PathLike | None, subdir: str, name: str) -> Path:
    """``root``, or ``$RARL_DATA/<subdir>`` when ``root`` is None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("RARL_DATA", "").strip()
    if not env:
        raise DatasetNotFoundError(
            f"no folder given for the {name} dataset: root is None and the environment variable RARL_DATA is not set",
            f"pass root=<folder> or set RARL_DATA so that $RARL_DATA/{subdir} is the dataset folder",
        )
    return Path(env).expanduser() / subdir


def fingerprint(*parts: bytes) -> str:
    """16 hex digits of SHA-1 over ``parts``, each prefixed by its length (so the split between them counts)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def file_stats(paths: Iterable[str | os.PathLike]) -> np.ndarray:
    """``[N, 2]`` int64: the byte size and modification time (ns) of each of ``paths`` (-1, -1 for
    a missing file): one ``stat`` per file, 0.53 s for 82,783 files with the metadata cached
    (``benchmarks/cache_key_cost.py``; the size alone took the same call)."""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))
    return np.asarray(stats, dtype=np.int64).reshape(-1, 2)


class FileStampsMixin:
    """Cache keys that notice changed image files (a dataset with ``image_path(i)`` and ``__len__``).

    The key hashes each JPEG's size *and* modification time, so an image replaced by another of
    the same size gets a new feature cache entry. :meth:`legacy_cache_key` (sizes only, the key of
    earlier versions) and :meth:`newest_file_ns` let the store keep using an entry written under
    the old key when no image changed after its extraction started.
    """

    _stats: np.ndarray | None = None
    _cache_key: str | None = None

    if TYPE_CHECKING:  # provided by the dataset class the mixin is combined with

        def image_path(self, index: int) -> Path: ...

        def __len__(self) -> int: ...

    def file_stats(self) -> np.ndarray:
        """``[N, 2]`` int64 ``(size, mtime_ns)`` of the image files (read once)."""
        if self._stats is None:
            self._stats = file_stats(self.image_path(i) for i in range(len(self)))
        return self._stats

    def newest_file_ns(self) -> int:
        """The latest modification time (ns since the epoch) of the split's image files."""
        stats = self.file_stats()
        return int(stats[:, 1].max()) if len(stats) else 0

    def _sizes_bytes(self) -> bytes:
        return np.ascontiguousarray(self.file_stats()[:, 0]).tobytes()

    def _stats_bytes(self) -> bytes:
        return np.ascontiguousarray(self.file_stats()).tobytes()

    def _key(self, files: bytes) -> str:
        """The dataset's key from the bytes of its files' stamps (each dataset hashes its own ids and labels)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """``<dataset>-<split>-<N>-<hash of the ids, labels and JPEG file sizes and modification times>``."""
        if self._cache_key is None:
            self._cache_key = self._key(self._stats_bytes())
        return self._cache_key

    def legacy_cache_key(self) -> str:
        """The key of earlier versions (JPEG sizes, no modification times)."""
        return self._key(self._sizes_bytes())


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image; errors name the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # forces the decode, so a truncated file fails here
    except FileNotFoundError:
        raise DatasetNotFoundError(f"image file {path} is missing", "restore it from the dataset's archive") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(
            f"cannot decode image {path}: {exc}", "replace the file with an intact copy from the dataset's archive"
        ) from exc


def image_header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of ``path`` from its header (no pixel decode)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DatasetNotFoundError(f"image file {path} is missing", "restore it from the dataset's archive") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(
            f"cannot read image header of {path}: {exc}", "replace the file with an intact copy from the dataset's archive"
        ) from exc


__all__ = ["FileStampsMixin", "dataset_root", "file_stats", "fingerprint", "image_header_size", "open_rgb"]

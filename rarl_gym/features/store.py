"""The feature store: a split's backbone feature maps, extracted once into a memory-mapped cache.

Layout of one cache entry (a folder under the cache root, named by a hash of its key)::

    key.json          what the entry holds: dataset key, split, backbone, weights, input size
    features.f16      raw float16 array [N, C, H, W] (memory-mapped by readers)
    labels.npy        int8 [N, L]
    meta.json         written last, atomically: shape, image ids and sizes. Its presence is
                      what makes the entry valid; a killed extraction never leaves one.
    progress.npy      (only while extracting) bool [N]: rows already written, for resuming

Extraction is batched, shows a progress bar, flushes and records progress after every batch,
and resumes after an interrupt. Opening a finished entry maps the file and takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.errors import CorruptFileError
from rarl_gym.features.backbones import build_backbone

STORE_VERSION = 1
FEATURES_FILE = "features.f16"


def default_cache_dir() -> Path:
    """``$RARL_CACHE``, else ``~/.cache/rarl_gym``."""
    return Path(os.environ.get("RARL_CACHE") or Path.home() / ".cache" / "rarl_gym").expanduser()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


@dataclass
class FeatureStore:
    """A finished cache entry, opened read-only.

    Attributes:
        path: the entry's folder.
        features: ``[N, C, H, W]`` float16 memory map.
        labels: ``[N, L]`` int8 (1 / 0 / -1).
        meta: the entry's metadata (``image_ids``, ``image_sizes`` ``[(w, h)]``, ``key``...).
    """

    path: Path
    features: np.ndarray
    labels: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def channels(self) -> int:
        return self.features.shape[1]

    @property
    def map_size(self) -> tuple[int, int]:
        return self.features.shape[2], self.features.shape[3]

    @property
    def image_ids(self) -> list[str]:
        return self.meta["image_ids"]

    @property
    def image_sizes(self) -> np.ndarray:
        """``[N, 2]`` original image ``(width, height)`` in pixels."""
        return np.asarray(self.meta["image_sizes"], dtype=np.int64)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    def batch(self, index, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Feature maps ``[B, C, H, W]`` float32 and labels ``[B, L]`` of the images ``index``."""
        index = np.atleast_1d(np.asarray(index))
        feats = torch.from_numpy(np.ascontiguousarray(self.features[index])).to(device=device, dtype=torch.float32)
        labels = torch.from_numpy(self.labels[index]).to(device)
        return feats, labels

    def read_into(self, index, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy the feature maps of the images ``index`` into ``out [B, C, H, W]`` (any float dtype,
        memory format or device: converted in the same copy); return ``(out, labels [B, L])``.

        For a channels-last float16 or float32 CPU ``out`` (what the envs use) the compiled reader
        of :mod:`rarl_gym.native` reads, converts and transposes in one pass. Otherwise the rows go
        through a float16 staging buffer kept between calls, so that a reader that calls it every
        episode allocates nothing: a fresh buffer of this size costs as much in page faults as
        the copy itself.
        """
        from rarl_gym import native

        index = np.atleast_1d(np.asarray(index))
        labels = torch.from_numpy(self.labels[index]).to(out.device)
        fast = out.dtype in (torch.float32, torch.float16) and out.device.type == "cpu" and out.is_contiguous(memory_format=torch.channels_last)
        if fast and native.available():
            try:
                native.read_maps_nhwc(self._file().fileno(), index, out)
            except OSError as err:
                raise CorruptFileError(f"feature cache {self.path} could not be read ({err})", f"delete {self.path} and extract again") from err
            return out, labels
        shape = (len(index), *self.features.shape[1:])
        staging = self.__dict__.get("_staging")
        if staging is None or staging.shape != shape:
            staging = self.__dict__["_staging"] = np.empty(shape, dtype=self.features.dtype)
        np.take(self.features, index, axis=0, out=staging)
        out.copy_(torch.from_numpy(staging))
        return out, labels

    def _file(self):
        """The features file, opened once for reading (closed with the store)."""
        f = self.__dict__.get("_fh")
        if f is None:
            f = self.__dict__["_fh"] = open(self.path / FEATURES_FILE, "rb")  # noqa: SIM115 - lives as long as the store
        return f

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open a finished entry; raise :class:`CorruptFileError` for an unfinished or damaged one."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise CorruptFileError(
                f"feature cache {path} is not finished (no meta.json)",
                "run the extraction again (it resumes where it stopped) or delete the folder",
            )
        try:
            meta = json.loads(meta_path.read_text())
            shape = tuple(meta["shape"])
            features = np.memmap(path / FEATURES_FILE, dtype=np.float16, mode="r", shape=shape)
            labels = np.load(path / "labels.npy")
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(f"feature cache {path} is damaged ({err})", f"delete {path} and extract again") from err
        return cls(path=path, features=features, labels=labels, meta=meta)


def cache_key(dataset: MultiLabelDataset, backbone: str, pretrained: bool, input_size: int) -> dict:
    """The key of a cache entry: everything that changes the extracted features."""
    return {
        "version": STORE_VERSION,
        "dataset": dataset.cache_key(),
        "split": dataset.split,
        "backbone": backbone,
        "weights": "pretrained" if pretrained else "random",
        "input_size": int(input_size),
    }


def entry_path(key: dict, cache_dir: str | Path | None = None) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{key['dataset']}-{key['backbone']}-{key['input_size']}".replace("/", "_").replace(":", "_")
    return Path(cache_dir or default_cache_dir()) / f"{name[:80]}-{digest}"


@torch.no_grad()
def extract_features(
    dataset: MultiLabelDataset,
    backbone: str,
    input_size: int,
    *,
    pretrained: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureStore:
    """Open the cache entry of ``(dataset, backbone, input_size)``, extracting it first if needed.

    The backbone (a name for :func:`rarl_gym.features.build_backbone`) is built only when
    something has to be extracted, so opening a finished entry stays cheap.

    Extraction writes batch after batch into a memory-mapped file and records which rows are
    done, so an interrupted run resumes; the entry becomes valid only when ``meta.json`` is
    renamed into place at the end.
    """
    key = cache_key(dataset, backbone, pretrained, input_size)
    path = entry_path(key, cache_dir)
    if (path / "meta.json").exists():
        return FeatureStore.open(path)
    path.mkdir(parents=True, exist_ok=True)

    n = len(dataset)
    net = build_backbone(backbone, pretrained=pretrained, device=device)
    probe = net(net.preprocess([dataset.load_image(0)], input_size).to(device))
    shape = (n, *probe.shape[1:])
    key_file = path / "key.json"
    progress_file = path / "progress.npy"
    feat_file = path / FEATURES_FILE
    resumable = (
        key_file.exists()
        and progress_file.exists()
        and feat_file.exists()
        and json.loads(key_file.read_text()) == {**key, "shape": list(shape)}
        and feat_file.stat().st_size == int(np.prod(shape)) * 2
    )
    if resumable:
        done = np.load(progress_file)
        features = np.memmap(feat_file, dtype=np.float16, mode="r+", shape=shape)
    else:
        _atomic_write_bytes(key_file, json.dumps({**key, "shape": list(shape)}, indent=1).encode())
        done = np.zeros(n, dtype=bool)
        features = np.memmap(feat_file, dtype=np.float16, mode="w+", shape=shape)
        _atomic_save_npy(progress_file, done)

    todo = np.flatnonzero(~done)
    sizes = np.zeros((n, 2), dtype=np.int64)
    start = time.perf_counter()
    bar = tqdm(total=n, initial=n - len(todo), desc=f"features {dataset.name}/{dataset.split}", unit="img", disable=not progress)
    for lo in range(0, len(todo), batch_size):
        rows = todo[lo : lo + batch_size]
        images = [dataset.load_image(int(i)) for i in rows]
        x = net.preprocess(images, input_size).to(device)
        features[rows] = net(x).to("cpu", torch.float16).numpy()
        features.flush()
        done[rows] = True
        _atomic_save_npy(progress_file, done)
        bar.update(len(rows))
    bar.close()
    for i in range(n):  # header reads only: cheap, and needed for pixel boxes
        sizes[i] = dataset.image_size(i)
    _atomic_save_npy(path / "labels.npy", dataset.labels().astype(np.int8))
    meta = {
        "key": key,
        "shape": list(shape),
        "classes": list(dataset.classes),
        "image_ids": [dataset.image_id(i) for i in range(n)],
        "image_sizes": sizes.tolist(),
        "stride": net.stride,
        "weights": net.weights,
        "extract_seconds": round(time.perf_counter() - start, 2),
    }
    del features
    _atomic_write_bytes(path / "meta.json", json.dumps(meta).encode())
    progress_file.unlink(missing_ok=True)
    return FeatureStore.open(path)


__all__ = ["FeatureStore", "cache_key", "default_cache_dir", "entry_path", "extract_features"]

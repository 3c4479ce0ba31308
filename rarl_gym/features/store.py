"""The feature store: a split's backbone feature maps, extracted once into a memory-mapped cache.

Layout of one cache entry (a folder under the cache root, named by a hash of its key)::

    key.json          what the entry holds: dataset key, split, backbone, weights, input size
    features.f16      raw float16 array [N, C, H, W] (memory-mapped by readers)
    labels.npy        int8 [N, L]
    meta.json         written last, atomically: shape, image ids and sizes. Its presence is
                      what makes the entry valid; a killed extraction never leaves one.
    progress.npy      (only while extracting) bool [N]: rows already written, for resuming
    .lock             held (flock) by the process extracting the entry; names it

Extraction is batched (loader workers decode while the backbone runs), shows a progress bar,
writes, syncs and records progress every ~64 MB of features (and at an interrupt), and resumes
after one; under ``torchrun`` the ranks share it. Opening a finished entry maps the file and takes milliseconds;
it checks ``meta.json`` against the files (a hand-edited or damaged entry is a named error).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm

from rarl_gym import native
from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.errors import ConfigError, CorruptFileError, DatasetNotFoundError, DiskFullError, NotWritableError
from rarl_gym.features.backbones import Backbone, build_backbone
from rarl_gym.features.inference import PixelRows, forward, pixel_loader, stack_pixels
from rarl_gym.io import (
    FileLock,
    atomic_save_npy,
    atomic_write_bytes,
    disk_full_error,
    is_disk_full,
    is_file_too_large,
    reserve_space,
)
from rarl_gym.paths import default_cache_dir

STORE_VERSION = 1
FEATURES_FILE = "features.f16"
LOCK_FILE = ".lock"
#: The smallest backbone input size (one cell of a stride-32 feature map).
MIN_INPUT_SIZE = 32


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, what="feature cache file")


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_save_npy(path, array, what="feature cache file")


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

    def batch(self, index: npt.ArrayLike, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Feature maps ``[B, C, H, W]`` float32 and labels ``[B, L]`` of the images ``index``.

        Raises:
            CorruptFileError: the features file is shorter than ``meta.json`` says (cut short after
                it was opened), or the maps read hold NaN / inf; the message names the file and the fix.
        """
        index = np.atleast_1d(np.asarray(index))
        rows = np.empty((len(index), *self.features.shape[1:]), dtype=np.float16)
        self._read_rows(index, rows)
        half = torch.from_numpy(rows)
        self._check_finite(index, half)
        feats = half.to(device=device, dtype=torch.float32)
        labels = torch.from_numpy(self.labels[index]).to(device)
        return feats, labels

    def read_into(self, index: npt.ArrayLike, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy the feature maps of the images ``index`` into ``out [B, C, H, W]`` (any float dtype,
        memory format or device: converted in the same copy); return ``(out, labels [B, L])``.

        For a channels-last float16 or float32 CPU ``out`` (what the envs use) the compiled reader
        of :mod:`rarl_gym.native` reads, converts and transposes in one pass. Otherwise the rows go
        through a float16 staging buffer kept between calls, so that a reader that calls it every
        episode allocates nothing: a fresh buffer of this size costs as much in page faults as
        the copy itself.
        """
        index = np.atleast_1d(np.asarray(index))
        labels = torch.from_numpy(self.labels[index]).to(out.device)
        fast = (
            out.dtype in (torch.float32, torch.float16)
            and out.device.type == "cpu"
            and out.is_contiguous(memory_format=torch.channels_last)
        )
        if fast and native.available():
            try:
                native.read_maps_nhwc(self._file().fileno(), index, out)
            except OSError as err:
                raise CorruptFileError(
                    f"feature cache {self.path}: {FEATURES_FILE} could not be read ({err})",
                    f"delete {self.path} and extract again",
                ) from err
            self._check_finite(index, out)
            return out, labels
        shape = (len(index), *self.features.shape[1:])
        staging = self.__dict__.get("_staging")
        if staging is None or staging.shape != shape:
            staging = self.__dict__["_staging"] = np.empty(shape, dtype=self.features.dtype)
        self._read_rows(index, staging)
        self._check_finite(index, torch.from_numpy(staging))
        out.copy_(torch.from_numpy(staging))
        return out, labels

    def _read_rows(self, index: np.ndarray, out: np.ndarray) -> None:
        """Read rows ``index`` of the features file into ``out [B, C, H, W]`` float16 with ``pread``
        (one call per run of consecutive rows), as the compiled reader does.

        Not through the memory map: reading a page of a file cut short after it was mapped is a
        ``SIGBUS`` that kills the process; a short ``pread`` is a :class:`CorruptFileError` here.
        """
        n = self.features.shape[0]
        if len(index) and (int(index.min()) < -n or int(index.max()) >= n):
            raise IndexError(f"image index out of range for a feature cache of {n} images")
        index = np.where(index < 0, index + n, index)
        row_bytes = int(np.prod(self.features.shape[1:])) * 2
        fd = self._file().fileno()
        flat = out.reshape(len(index), -1)
        for first, at, count in _runs(index):
            buf = memoryview(flat[at : at + count].data).cast("B")
            got = _pread_into(fd, buf, first * row_bytes)
            if got != len(buf):
                size = os.fstat(fd).st_size
                raise CorruptFileError(
                    f"feature cache {self.path}: {FEATURES_FILE} is shorter than its metadata says ({size} bytes, "
                    f"{n * row_bytes} expected): it was cut short after it was opened",
                    f"delete {self.path} and extract again",
                )

    def _check_finite(self, index: np.ndarray, maps: torch.Tensor) -> None:
        """Raise :class:`CorruptFileError` when the maps just read (rows ``index``) hold NaN or inf.

        One pass over the exponent bits (NaN and inf are the values whose exponent is all ones):
        9 ms for 256 VOC07 maps on one thread, 8x faster than ``torch.isfinite``; the per-image
        search only when something is not finite.
        """
        if not _any_non_finite(maps):
            return
        bad = [int(index[j]) for j in range(len(index)) if not bool(torch.isfinite(maps[j]).all())]
        ids = [self.image_ids[i] for i in bad[:5]]
        raise CorruptFileError(
            f"feature cache {self.path}: {FEATURES_FILE} holds NaN or inf in the maps of {len(bad)} image(s) of this "
            f"batch (rows {bad[:5]}, image ids {ids}): the file was damaged after its extraction",
            f"delete {self.path} and extract again",
        )

    def __getstate__(self) -> dict:
        """Pickling (``pickle``, ``copy.deepcopy``, a vector env's workers): the entry's folder, not its
        open file or memory map; unpickling opens the entry again."""
        return {"path": str(self.path), "closed": len(self.features) == 0 and self.meta["shape"][0] > 0}

    def __setstate__(self, state: dict) -> None:
        other = FeatureStore.open(state["path"])
        self.__dict__.update(path=other.path, features=other.features, labels=other.labels, meta=other.meta)
        if state["closed"]:
            self.close()

    def close(self) -> None:
        """Release the store's open files (the features file and the memory map); idempotent.

        A closed store holds no rows (``len() == 0``); open the entry again to read it.
        """
        f = self.__dict__.pop("_fh", None)
        if f is not None:
            f.close()
        self.__dict__.pop("_staging", None)
        if len(self.features):  # the map's descriptor is freed with the last reference to it
            self.features = np.empty((0, *self.features.shape[1:]), dtype=np.float16)

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _file(self) -> io.BufferedReader:
        """The features file, opened once for reading and kept open until :meth:`close`."""
        f = self.__dict__.get("_fh")
        if f is None:
            f = self.__dict__["_fh"] = open(self.path / FEATURES_FILE, "rb")  # lives as long as the store
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
            shape = _check_meta(meta, path)
            size = (path / FEATURES_FILE).stat().st_size
            if size != int(np.prod(shape)) * 2:
                raise ValueError(
                    f"{FEATURES_FILE} holds {size} bytes but meta.json's shape {list(shape)} needs {int(np.prod(shape)) * 2}"
                )
            features = np.memmap(path / FEATURES_FILE, dtype=np.float16, mode="r", shape=shape)
            labels = np.load(path / "labels.npy")
            if labels.shape != (shape[0], len(meta["classes"])):
                raise ValueError(
                    f"labels.npy has shape {labels.shape}, meta.json says {shape[0]} images x {len(meta['classes'])} classes"
                )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorruptFileError(f"feature cache {path} is damaged ({err})", f"delete {path} and extract again") from err
        return cls(path=path, features=features, labels=labels, meta=meta)


#: meta.json: each required key and the type of its value.
META_KEYS = {"key": dict, "shape": list, "classes": list, "image_ids": list, "image_sizes": list}


def _check_meta(meta: object, path: Path) -> tuple[int, int, int, int]:
    """The ``[N, C, H, W]`` shape of a cache entry's ``meta.json``; ``ValueError`` naming the first
    missing or inconsistent field (a hand-edited or damaged file)."""
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json holds a {type(meta).__name__}, not an object")
    for name, kind in META_KEYS.items():
        if name not in meta:
            raise ValueError(f"meta.json has no {name!r}")
        if not isinstance(meta[name], kind):
            raise ValueError(f"meta.json's {name!r} is a {type(meta[name]).__name__}, not a {kind.__name__}")
    shape = meta["shape"]
    if len(shape) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"meta.json's shape {shape!r} is not four positive ints [N, C, H, W]")
    n = shape[0]
    if len(meta["image_ids"]) != n:
        raise ValueError(f"meta.json lists {len(meta['image_ids'])} image ids for {n} images")
    sizes = meta["image_sizes"]
    if len(sizes) != n or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s) for s in sizes
    ):
        raise ValueError(f"meta.json's image_sizes is not {n} pairs of positive ints (width, height)")
    return tuple(shape)


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


def _legacy_entry(dataset: MultiLabelDataset, key: dict, cache_dir: str | Path | None) -> Path | None:
    """A finished entry written under an earlier version's key (JPEG sizes without modification
    times) that is still valid: every image file is older than the start of its extraction
    (``key.json``'s modification time). ``None`` otherwise."""
    legacy_key = getattr(dataset, "legacy_cache_key", None)
    newest = getattr(dataset, "newest_file_ns", None)
    if legacy_key is None or newest is None:
        return None
    old = entry_path({**key, "dataset": legacy_key()}, cache_dir)
    try:
        started = (old / "key.json").stat().st_mtime_ns
    except OSError:
        return None
    return old if (old / "meta.json").exists() and newest() <= started else None


def resolve_entry(
    dataset: MultiLabelDataset, backbone: str, input_size: int, *, pretrained: bool = True, cache_dir: str | Path | None = None
) -> tuple[Path, dict]:
    """The entry :func:`extract_features` opens for these arguments (or extracts into) and its key,
    without extracting anything: this version's entry, or a still valid one written under an
    earlier version's key (its ``key["dataset"]`` is then that older key)."""
    key = cache_key(dataset, backbone, pretrained, input_size)
    path = entry_path(key, cache_dir)
    if not (path / "meta.json").exists():
        legacy = _legacy_entry(dataset, key, cache_dir)
        if legacy is not None:
            legacy_key = getattr(dataset, "legacy_cache_key")  # noqa: B009 (_legacy_entry checked it exists)
            return legacy, {**key, "dataset": legacy_key()}
    return path, key


def _make_entry_dir(path: Path) -> None:
    """Create a cache entry's folder; a read-only or non-folder cache root is a named error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, "feature cache folder", err=err) from err
        raise NotWritableError(
            f"cannot create the feature cache folder {path}: {err.strerror or err}",
            "pass a writable cache_dir (env kwarg) or set $RARL_CACHE to a writable folder",
        ) from err


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
    workers: int | None = None,
) -> FeatureStore:
    """Open the cache entry of ``(dataset, backbone, input_size)``, extracting it first if needed.

    The backbone (a name for :func:`rarl_gym.features.build_backbone`) is built only when
    something has to be extracted, so opening a finished entry stays cheap; it is built before
    the entry's folder is made, so a wrong name leaves nothing behind.

    Extraction writes chunk after chunk of rows into the features file and records which rows
    are done, so an interrupted run resumes; the entry becomes valid only when ``meta.json`` is
    renamed into place at the end. The file's space is reserved first (a full disk is a
    :class:`rarl_gym.errors.DiskFullError` before any work, not a ``SIGBUS`` during it). One
    process extracts an entry at a time: another one that needs it waits for it (lock file
    ``.lock``, which names the holder) and then opens the finished entry. ``workers``: the
    ``DataLoader`` processes that decode the images (default
    :func:`rarl_gym.features.inference.default_workers`; none for a handful of batches).
    """
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < MIN_INPUT_SIZE:
        raise ConfigError(
            f"input_size must be an int of at least {MIN_INPUT_SIZE} pixels, got {input_size!r}", "use e.g. 224, 256 or 320"
        )
    path, key = resolve_entry(dataset, backbone, input_size, pretrained=pretrained, cache_dir=cache_dir)
    if (path / "meta.json").exists():  # this version's entry, or a valid one of an earlier version's key
        return FeatureStore.open(path)
    if len(dataset) == 0:
        raise DatasetNotFoundError(
            f"split {dataset.split!r} of {dataset.name} has no images", "check the dataset's split files or annotation file"
        )
    net = build_backbone(backbone, pretrained=pretrained, device=device)
    created = not path.exists()
    _make_entry_dir(path)

    def waiting(holder: str) -> None:
        print(f"feature cache {path} is being extracted by {holder}; waiting for it to finish", file=sys.stderr)

    # torchrun ranks share one extraction (they meet at barriers inside): no lock between them
    lock = (
        FileLock(path / LOCK_FILE, f"the feature cache {path}", blocking=True, on_wait=waiting)
        if _shard_group()[1] == 1
        else contextlib.nullcontext()
    )
    try:
        with lock:
            if (path / "meta.json").exists():  # finished by the process we waited for
                return FeatureStore.open(path)
            # on forked generators (the DataLoader draws its base seed from the global one): the caller's
            # random state afterwards is the same whether the entry was extracted now or found finished
            with torch.random.fork_rng(devices=[]):
                return _extract(
                    dataset,
                    net,
                    key,
                    path,
                    input_size,
                    batch_size=batch_size,
                    device=device,
                    progress=progress,
                    workers=workers,
                )
    except DiskFullError as err:
        if created and is_file_too_large(err):  # it can never fit there: leave no folder behind
            shutil.rmtree(path, ignore_errors=True)
        raise


def _extract(
    dataset: MultiLabelDataset,
    net: Backbone,
    key: dict,
    path: Path,
    input_size: int,
    *,
    batch_size: int,
    device: torch.device | str,
    progress: bool,
    workers: int | None,
) -> FeatureStore:
    """Extract (or resume extracting) the entry ``path`` with the built backbone ``net``; the caller holds its lock."""
    n = len(dataset)
    probe = forward(net, net.pixels([dataset.load_image(0)], input_size), device)
    shape = (n, *probe.shape[1:])
    key_file = path / "key.json"
    progress_file = path / "progress.npy"
    feat_file = path / FEATURES_FILE
    rank, world = _shard_group()
    if rank != 0:
        _barrier()  # torchrun: rank 0 makes (or checks) the entry first; the others then find it resumable
    resumable = (
        key_file.exists()
        and progress_file.exists()
        and feat_file.exists()
        and json.loads(key_file.read_text()) == {**key, "shape": list(shape)}
        and feat_file.stat().st_size == int(np.prod(shape)) * 2
    )
    if rank == 0:  # allocate every block now: a full disk fails here, named, not as SIGBUS / ENOSPC mid-way
        reserve_space(feat_file, int(np.prod(shape)) * 2, what="feature cache")
    if resumable:
        done = np.load(progress_file)
        features = np.memmap(feat_file, dtype=np.float16, mode="r+", shape=shape)
    else:
        _atomic_write_bytes(key_file, json.dumps({**key, "shape": list(shape)}, indent=1).encode())
        done = np.zeros(n, dtype=bool)
        features = np.memmap(feat_file, dtype=np.float16, mode="r+", shape=shape)
        _atomic_save_npy(progress_file, done)

    if world > 1 and rank == 0:
        _barrier()
    start = time.perf_counter()
    del features  # the rows are written with pwrite (see _extract_rows)
    if world > 1:  # torchrun: rank 0 has made the file; every rank takes its rows of what is left
        done = _sharded_progress(path, progress_file, done, rank, world)
        todo = np.array_split(np.flatnonzero(~done), world)[rank]
        rows_file, total = path / f"progress.rank{rank}.npy", len(todo)
    else:
        todo, rows_file, total = np.flatnonzero(~done), progress_file, n
    _extract_rows(
        dataset,
        net,
        input_size,
        feat_file,
        shape,
        todo,
        done,
        rows_file,
        batch_size=batch_size,
        device=device,
        workers=workers,
        progress=progress and rank == 0,
        total=total,
    )
    if world > 1:
        done = _sharded_progress(path, progress_file, done, rank, world, finish=True)
        if rank != 0:
            _barrier()
            return FeatureStore.open(path)
    sizes = np.zeros((n, 2), dtype=np.int64)
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
    _atomic_write_bytes(path / "meta.json", json.dumps(meta).encode())
    progress_file.unlink(missing_ok=True)
    if world > 1:
        _barrier()  # the other ranks open the entry once meta.json is in place
    return FeatureStore.open(path)


# -- the extraction loop -------------------------------------------------------------------------
#: Rows are written (and the progress recorded) once this many bytes of features are ready, or
#: after CHUNK_SECONDS, whichever comes first; an interrupt writes what is ready.
CHUNK_BYTES = 64 << 20
CHUNK_SECONDS = 30.0


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first row, position in rows, count)`` of each run of consecutive rows."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(a), int(b - a)) for a, b in zip(starts, ends)]


#: The exponent bits of IEEE float16 / float32: all ones is inf or NaN.
_EXPONENT_MASKS = {np.dtype(np.float16): (np.uint16, 0x7C00), np.dtype(np.float32): (np.uint32, 0x7F800000)}


def _any_non_finite(maps: torch.Tensor) -> bool:
    """Whether the CPU tensor ``maps`` (any layout) holds NaN or inf."""
    if maps.numel() == 0:
        return False
    if maps.dim() == 4 and not maps.is_contiguous() and maps.is_contiguous(memory_format=torch.channels_last):
        maps = maps.permute(0, 2, 3, 1)  # the same memory, contiguous
    a = maps.detach().numpy()
    if a.dtype not in _EXPONENT_MASKS:
        return not bool(np.isfinite(a).all())
    kind, mask = _EXPONENT_MASKS[a.dtype]
    return int(np.max(a.view(kind) & kind(mask))) == mask


def _pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """``pread`` into ``buf`` from ``offset`` until it is full or the file ends; the bytes read."""
    done = 0
    while done < len(buf):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [buf[done:]], offset + done)
        else:  # pragma: no cover (no preadv: older macOS)
            data = os.pread(fd, len(buf) - done, offset + done)
            buf[done : done + len(data)] = data
            got = len(data)
        if got == 0:
            break
        done += got
    return done


def _write_rows(fd: int, rows: np.ndarray, block: np.ndarray) -> None:
    """Write ``block [len(rows), ...]`` float16 at ``rows`` of the features file: one ``pwrite``
    per run of consecutive rows (not a memory-map assignment: no page faults on the way)."""
    row_bytes = block[0].nbytes
    for first, at, count in _runs(rows):
        data = np.ascontiguousarray(block[at : at + count]).data.cast("B")
        offset, written = first * row_bytes, 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)


def _extract_rows(
    dataset: MultiLabelDataset,
    net: Backbone,
    input_size: int,
    feat_file: Path,
    shape: tuple,
    rows: np.ndarray,
    done: np.ndarray,
    progress_file: Path,
    *,
    batch_size: int,
    device: torch.device | str,
    workers: int | None,
    progress: bool,
    total: int,
) -> None:
    """Extract ``rows`` into ``feat_file`` (float16 ``shape``), recording them in ``done`` / ``progress_file``.

    A ``DataLoader`` decodes and resizes in worker processes while the backbone runs here
    (:func:`rarl_gym.features.inference.forward`: channels-last on the CPU; pinned memory and
    float16 autocast on CUDA). Finished batches gather in a chunk of about :data:`CHUNK_BYTES`
    that is written with one ``pwrite`` per run of rows, synced, and only then marked done, so
    the progress file never claims a row that is not on disk; an interrupt (or a corrupt image)
    writes the finished part of the chunk before it propagates. A handful of batches is decoded
    here: forking workers would cost more than it saves.
    """
    if workers is None and len(rows) <= 4 * batch_size:
        workers = 0
    row_bytes = int(np.prod(shape[1:])) * 2
    chunk_rows = max(batch_size, CHUNK_BYTES // row_bytes)
    loader = pixel_loader(
        PixelRows(lambda i: dataset.load_image(int(rows[i])), len(rows), input_size),
        batch_size,
        workers=workers,
        device=device,
    )
    bar = tqdm(
        total=total,
        initial=total - len(rows),
        desc=f"features {dataset.name}/{dataset.split}",
        unit="img",
        disable=not progress,
    )
    fd = os.open(feat_file, os.O_WRONLY)
    pending_rows: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    last = time.monotonic()

    def commit() -> None:
        nonlocal pending_rows, pending, last
        if pending_rows:
            ready = np.concatenate(pending_rows)
            _write_rows(fd, ready, np.concatenate(pending))
            os.fdatasync(fd)
            done[ready] = True
            _atomic_save_npy(progress_file, done)
        pending_rows, pending, last = [], [], time.monotonic()

    try:
        for items in loader:
            failed = next((err for _, err, size in items if size is None), None)
            good = [item for item in items if item[2] is not None]
            if good:
                maps = forward(net, stack_pixels(good, device), device).numpy()
                positions = [i for i, _, _ in good]
                finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
                pending.append(maps[finite])
                pending_rows.append(rows[positions][finite])
                bar.update(len(good))
                if not finite.all():  # the rows before it are kept (committed below)
                    failed = _non_finite_error(dataset, net, rows[positions][~finite], device)
            if failed is not None:
                raise failed
            if sum(len(r) for r in pending_rows) >= chunk_rows or time.monotonic() - last > CHUNK_SECONDS:
                commit()
        commit()
    except BaseException:
        commit()  # keep what is finished: a resumed extraction starts after it
        raise
    finally:
        os.close(fd)
        bar.close()


def _non_finite_error(
    dataset: MultiLabelDataset, net: Backbone, rows: np.ndarray, device: torch.device | str
) -> CorruptFileError:
    """The error for images whose backbone maps hold NaN or inf (nothing of them is written)."""
    first = [int(r) for r in rows[:5]]
    path_of = getattr(dataset, "image_path", None)
    where = [str(path_of(r)) if path_of is not None else dataset.image_id(r) for r in first]
    cuda = " (on CUDA, float16 autocast can overflow: try device='cpu')" if torch.device(device).type == "cuda" else ""
    return CorruptFileError(
        f"the backbone {getattr(net, 'name', type(net).__name__)!r} gave NaN or inf feature maps for "
        f"{dataset.name}/{dataset.split} image(s) {', '.join(where)}{cuda}; nothing of them was written to the cache",
        "check those images (replace a damaged one with an intact copy) and the backbone's weights "
        "(pretrained=False runs without them); then run again: the extraction resumes",
    )


def _shard_group() -> tuple[int, int]:
    """``(rank, world)`` of a ``torchrun`` extraction (:func:`rarl_gym.device.distributed`), else ``(0, 1)``."""
    from rarl_gym.device import distributed

    return distributed()


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _sharded_progress(
    path: Path, progress_file: Path, done: np.ndarray, rank: int, world: int, *, finish: bool = False
) -> np.ndarray:
    """Progress of a sharded extraction: each rank records its rows in ``progress.rank<r>.npy``
    and rank 0 merges those files (of this run or of an interrupted one) into ``progress.npy``.

    Before the extraction (``finish=False``) every rank then reads the merged progress; after it
    (``finish=True``) rank 0 checks that every row is done."""
    if finish:
        _barrier()  # every rank has written its rows
    if rank == 0:
        merged = np.load(progress_file) if progress_file.exists() else done.copy()
        for part in sorted(path.glob("progress.rank*.npy")):
            merged |= np.load(part)
            part.unlink()
        _atomic_save_npy(progress_file, merged)
        if finish and not merged.all():
            raise CorruptFileError(
                f"sharded extraction into {path}: {int((~merged).sum())} rows were not written",
                "run the extraction again (it resumes)",
            )
        if finish:
            return merged
    if finish:
        return done
    _barrier()
    return np.load(progress_file)


# -- listing and pruning the cache ---------------------------------------------------------------
@dataclass
class CacheEntry:
    """One entry (folder) of a feature cache, as :func:`cache_entries` finds it.

    Attributes:
        path: the entry's folder.
        key: its key (``meta.json``'s, or ``key.json``'s while unfinished; ``{}`` if unreadable).
        finished: whether ``meta.json`` is there (the entry is valid).
        nbytes: the bytes its files take on disk.
        modified: when it was finished (``meta.json``'s modification time) or started (``key.json``'s).
        in_use: a process holds its lock (it is being extracted now).
    """

    path: Path
    key: dict
    finished: bool
    nbytes: int
    modified: float
    in_use: bool

    @property
    def family(self) -> tuple:
        """What entries of successive versions of the same data share: the dataset's name and
        split (without its image count and fingerprint), backbone, weights and input size. The
        key of a dataset read from files ends in ``-<N>-<16 hex digits>``; Shapes' names its
        parameters, so each Shapes configuration is a family of its own."""
        dataset = str(self.key.get("dataset", self.path.name))
        parts = dataset.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and len(parts[2]) == 16 and all(c in "0123456789abcdef" for c in parts[2]):
            dataset = parts[0]
        return (dataset, self.key.get("split"), self.key.get("backbone"), self.key.get("weights"), self.key.get("input_size"))


def _lock_held(path: Path) -> bool:
    """Whether some process holds the ``flock`` of ``path`` (probed without writing to it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def _disk_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            st = p.lstat()
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def cache_entries(cache_dir: str | Path | None = None) -> list[CacheEntry]:
    """Every entry of the feature cache ``cache_dir`` (default ``$RARL_CACHE`` or ``~/.cache/rarl_gym``),
    oldest first. Folders without ``key.json`` or ``meta.json`` (the compiled kernel's ``native/``)
    are not entries."""
    root = Path(cache_dir or default_cache_dir())
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        meta, key_file = path / "meta.json", path / "key.json"
        if not meta.exists() and not key_file.exists():
            continue
        finished = meta.exists()
        try:
            info = json.loads((meta if finished else key_file).read_text())
            key = info.get("key", {}) if finished else {k: v for k, v in info.items() if k != "shape"}
            key = key if isinstance(key, dict) else {}
        except (OSError, ValueError, AttributeError):
            key = {}
        try:
            modified = (meta if finished else key_file).stat().st_mtime
        except OSError:
            modified = 0.0
        entries.append(CacheEntry(path, key, finished, _disk_bytes(path), modified, _lock_held(path / LOCK_FILE)))
    return sorted(entries, key=lambda e: e.modified)


def stale_entries(entries: list[CacheEntry], keep: int = 1) -> list[CacheEntry]:
    """The entries :func:`prune_cache` removes: in each :attr:`CacheEntry.family`, every finished
    entry but the ``keep`` newest (they were extracted from an earlier version of the data: an image
    replaced, a split file edited), and every unfinished one older than the newest finished one
    (an interrupted extraction of such an earlier version). Entries in use are never stale."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep must be a positive int, got {keep!r}", "keep at least the newest entry: keep=1")
    families: dict[tuple, list[CacheEntry]] = {}
    for entry in entries:
        families.setdefault(entry.family, []).append(entry)
    stale = []
    for members in families.values():
        done = sorted((e for e in members if e.finished), key=lambda e: e.modified, reverse=True)
        newest = done[0].modified if done else math.inf
        stale += done[keep:]
        stale += [e for e in members if not e.finished and e.modified < newest]
    return sorted((e for e in stale if not e.in_use), key=lambda e: e.modified)


def prune_cache(cache_dir: str | Path | None = None, *, keep: int = 1, dry_run: bool = False) -> list[CacheEntry]:
    """Remove the :func:`stale_entries` of the feature cache ``cache_dir``; return them (``dry_run``: only that).

    ``python -m rarl_gym.cache prune`` runs it from the command line (``list`` shows every entry).
    """
    stale = stale_entries(cache_entries(cache_dir), keep)
    if not dry_run:
        for entry in stale:
            if not _lock_held(entry.path / LOCK_FILE):  # taken since it was listed: leave it
                shutil.rmtree(entry.path, ignore_errors=True)
    return stale


__all__ = [
    "CacheEntry",
    "FeatureStore",
    "cache_entries",
    "cache_key",
    "entry_path",
    "extract_features",
    "prune_cache",
    "resolve_entry",
    "stale_entries",
]

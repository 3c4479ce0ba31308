"""The CPU kernels of the env's hot path: small C functions compiled once, on first use, with the system's C compiler.

Why: on the CPU the env's step is the crop of ``B x K`` regions of ``s x s`` bins from ``C``-channel
maps. ``torchvision.ops.roi_align`` walks channel planes and is slow for C = 1280; the dense
matrix product of :func:`rarl_gym.glimpse.crop` (``method="matmul"``) spends ``H * W`` multiply-adds
per output value although a bin touches only a few map cells. The kernel in
``rarl_gym/csrc/glimpse_crop.c`` applies the same separable RoI-align weights sparsely to a
channels-last map (float32, or float16 converted on load): a handful of vectorised multiply-adds
per output value, one write of the output, and each region's mean over its bins in the same pass.
Its second function reads a batch of float16 maps from the cache file with ``pread`` and
transposes them to channels-last (float16, or converted to float32) in the same pass (a memory
map would first fault every page in, and numpy + torch would take two more passes).

How: ``cc -O3 -march=native -shared`` builds a shared library into ``<cache>/native/`` (keyed by
the source, the flags and the CPU; atomic, so concurrent processes are safe) and ``ctypes`` loads
it. The work is split over ``torch.get_num_threads()`` Python threads (a ``ctypes`` call releases
the GIL). Without a compiler, or with ``RARL_NATIVE=0``, :func:`available` is False and
:func:`rarl_gym.glimpse.crop` uses its pure-torch paths: same numbers, slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy.typing as npt
import torch

from rarl_gym.io import atomic_path, atomic_write_bytes, signals_held
from rarl_gym.paths import default_cache_dir

SOURCE = Path(__file__).with_name("csrc") / "glimpse_crop.c"
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c99")
#: A build smaller than this is truncated (the kernel compiles to about 20 KB or more).
MIN_LIBRARY_BYTES = 4096
#: The first bytes of a shared library: ELF (Linux), Mach-O (macOS, 32 / 64 bit, fat).
LIBRARY_MAGICS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # the process that owns _pool: a forked child (AsyncVectorEnv) must make its own


def _cpu_signature() -> str:
    """The CPU model and feature flags (``-march=native`` code is only valid on such a CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep))  # one copy of each distinct line


def library_path(cache_dir: str | Path | None = None) -> Path:
    """Where the compiled kernel for this source, these flags and this CPU lives."""
    digest = hashlib.sha1(
        "\n".join([SOURCE.read_text(), " ".join(FLAGS), platform.machine(), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir()) / "native" / f"glimpse_crop-{digest}.so"


class NoCompilerError(RuntimeError):
    """There is no C compiler to build the kernel with."""


def checksum_path(path: Path) -> Path:
    """The file beside a build that holds its SHA-256 (written by :func:`build`)."""
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_library(path: Path) -> str | None:
    """Why the build at ``path`` must not be loaded (``None``: it is intact).

    Loading a truncated shared library is a ``SIGBUS`` inside ``ctypes.CDLL`` (the loader maps
    pages past the end of the file), which no ``try`` catches, so a build is checked first: its
    size, its first bytes (ELF / Mach-O) and the SHA-256 that :func:`build` wrote beside it.
    """
    try:
        size = path.stat().st_size
        if size < MIN_LIBRARY_BYTES:
            return f"it holds {size} bytes, a build holds at least {MIN_LIBRARY_BYTES}"
        with open(path, "rb") as f:
            if f.read(4) not in LIBRARY_MAGICS:
                return "it is not a shared library (no ELF / Mach-O header)"
        try:
            want = checksum_path(path).read_text().strip()
        except FileNotFoundError:
            return f"it has no checksum file {checksum_path(path).name} (an earlier version's build, or an interrupted one)"
        if _sha256(path) != want:
            return f"its SHA-256 differs from the one recorded at build time in {checksum_path(path).name}"
    except OSError as err:
        return f"it cannot be read ({err})"
    return None


def build(path: Path) -> Path:
    """Compile the kernel to ``path`` (atomically, :func:`rarl_gym.io.atomic_path`), its SHA-256 beside it
    (:func:`checksum_path`, checked by :func:`check_library`); raise :class:`NoCompilerError` without a
    compiler, ``RuntimeError`` with the compiler's message on failure, an ``OSError`` (``PermissionError``,
    ``EROFS``) where ``path``'s folder is read-only."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise NoCompilerError("no C compiler found (cc, gcc or clang; or set $CC)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, what="compiled kernel") as tmp:
        tmp.touch()  # a read-only folder fails here, as a PermissionError (NotWritableError), before compiling
        proc = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
        digest = _sha256(tmp)
        # the checksum goes first: a process that sees the new build also sees its checksum
        atomic_write_bytes(checksum_path(path), (digest + "\n").encode(), what="compiled kernel checksum")
    return path


def _read_only(err: BaseException) -> bool:
    """Whether ``err`` means the folder cannot be written (permissions, or a read-only file system)."""
    return isinstance(err, PermissionError) or (isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES))


def _valid_build(path: Path) -> Path:
    """``path``, (re)built first when it is missing or fails :func:`check_library` (with a warning then)."""
    if path.exists():
        problem = check_library(path)
        if problem is None:
            return path
        if not checksum_path(path).exists() and path.stat().st_size >= MIN_LIBRARY_BYTES:
            return build(path)  # an earlier version's build (no checksum yet): replaced without a warning
        warnings.warn(
            f"rarl_gym: the compiled kernel {path} is damaged ({problem}); building it again", RuntimeWarning, stacklevel=4
        )
    return build(path)


def _open(path: Path) -> ctypes.CDLL:
    """Load the library at ``path`` and declare its two functions (``OSError`` / ``AttributeError`` if damaged)."""
    lib = ctypes.CDLL(str(path))
    fn = lib.glimpse_crop_nhwc
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 8
    fn = lib.read_maps_nhwc
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 5
    return lib


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first use; ``None`` (with one warning) where it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        if os.environ.get("RARL_NATIVE", "1") in ("0", "false", "no"):
            _tried = True
            return None
        try:
            try:
                path = _valid_build(library_path())
            except OSError as err:  # a read-only cache ($RARL_CACHE on a read-only mount too): the temp folder
                if not _read_only(err):
                    raise
                path = _valid_build(library_path(Path(tempfile.gettempdir()) / "rarl_gym"))
            try:
                lib = _open(path)
            except (OSError, AttributeError) as err:  # intact on disk yet not loadable: compile it again, once
                warnings.warn(
                    f"rarl_gym: the compiled kernel {path} is damaged ({err}); building it again", RuntimeWarning, stacklevel=3
                )
                build(path)
                lib = _open(path)
            _lib = lib
        except NoCompilerError as err:
            _warn_fallback(f"{err}", "install a C compiler (e.g. apt install gcc)")
            _lib = None
        except (OSError, AttributeError, RuntimeError, subprocess.SubprocessError) as err:
            fix = (
                "make $RARL_CACHE (or the temp folder) writable"
                if _read_only(err)
                else "see the compiler's message; install a working C compiler (e.g. apt install gcc)"
            )
            _warn_fallback(f"{err}", fix)
            _lib = None
        _tried = True
        return _lib


def _warn_fallback(reason: str, fix: str) -> None:
    warnings.warn(
        f"rarl_gym: the CPU glimpse-crop kernel could not be built ({reason}); using the slower pure-torch crop. "
        f"Fix: {fix}, or set RARL_NATIVE=0 to silence this.",
        RuntimeWarning,
        stacklevel=4,
    )


def available() -> bool:
    """Whether the compiled CPU kernel can be used in this process."""
    return load() is not None


def crop_nhwc(
    features: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    out: torch.Tensor,
    means: torch.Tensor | None = None,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """Crop regions from channels-last maps with the compiled kernel (RoI-align weights computed in C).

    Args:
        features: ``[B, H, W, C]`` float32 or float16 (converted on load), contiguous, on the CPU.
        image: ``[N]`` int64, the map of each region.
        boxes: ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` in image coordinates.
        out: ``[N, C, S, S]`` float32, contiguous: written in place and returned.
        means: optional ``[N, C]`` float32, contiguous: filled with each region's mean over its
            ``S x S`` bins (``out.mean((-2, -1))``) in the same pass.
        sampling_ratio: as :func:`rarl_gym.glimpse.crop`.
    """
    lib = load()
    if lib is None:
        raise RuntimeError("the native crop kernel is not available")
    _, h, w, c = features.shape
    n, _, s, _ = out.shape
    tensors = {"boxes": boxes, "out": out, **({"means": means} if means is not None else {})}
    for name, t in tensors.items():
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"crop_nhwc: {name} must be a contiguous float32 CPU tensor")
    if features.dtype not in (torch.float32, torch.float16) or features.device.type != "cpu" or not features.is_contiguous():
        raise ValueError("crop_nhwc: features must be a contiguous float32 or float16 CPU tensor")
    half = int(features.dtype == torch.float16)
    image = image.to(torch.int64).contiguous()
    if (
        out.shape != (n, c, s, s)
        or image.shape != (n,)
        or boxes.shape != (n, 4)
        or (means is not None and means.shape != (n, c))
    ):
        raise ValueError("crop_nhwc: inconsistent shapes")
    ptrs = [
        features.data_ptr(),
        image.data_ptr(),
        boxes.data_ptr(),
        out.data_ptr(),
        None if means is None else means.data_ptr(),
    ]
    codes = _parallel(lambda lo, hi: lib.glimpse_crop_nhwc(*ptrs, lo, hi, c, h, w, s, sampling_ratio, half), n, n * c * s * s)
    if any(codes):
        raise MemoryError("crop_nhwc: the kernel could not allocate its work buffer")
    return out


def read_maps_nhwc(fd: int, index: npt.ArrayLike, out: torch.Tensor) -> torch.Tensor:
    """Read rows ``index`` of a raw float16 ``[N, C, H, W]`` file (open descriptor ``fd``) into ``out``.

    Args:
        index: ``[B]`` row numbers.
        out: ``[B, C, H, W]`` float16 (as stored) or float32 CPU tensor in ``torch.channels_last``
            memory format (contiguous as ``[B, H, W, C]``): written in place and returned.
    """
    lib = load()
    if lib is None:
        raise RuntimeError("the native kernels are not available")
    b, c, h, w = out.shape
    if (
        out.dtype not in (torch.float32, torch.float16)
        or out.device.type != "cpu"
        or not out.is_contiguous(memory_format=torch.channels_last)
    ):
        raise ValueError("read_maps_nhwc: out must be a channels-last float32 or float16 CPU tensor")
    half = int(out.dtype == torch.float16)
    rows = torch.as_tensor(index, dtype=torch.int64).contiguous()
    if rows.shape != (b,):
        raise ValueError(f"read_maps_nhwc: {rows.shape[0] if rows.ndim else 1} rows for an output of {b}")
    codes = _parallel(lambda lo, hi: lib.read_maps_nhwc(fd, rows.data_ptr(), out.data_ptr(), lo, hi, c, h * w, half), b)
    bad = next((code for code in codes if code), 0)
    if bad:
        raise OSError(
            bad if bad > 0 else 0, os.strerror(bad) if bad > 0 else "the feature file is shorter than its metadata says"
        )
    return out


#: Below this much work (output values) a kernel runs in the calling thread: handing a few
#: microseconds of work to the pool costs more than it saves (one image's glimpses at test time).
PARALLEL_MIN_WORK = 1 << 18


def _parallel(call: Callable[[int, int], int], n: int, work: int | None = None) -> list[int]:
    """Run ``call(lo, hi)`` on ``torch.get_num_threads()`` slices of ``range(n)`` at once (in the
    calling thread alone when ``work`` is below :data:`PARALLEL_MIN_WORK`); their return codes."""
    global _pool, _pool_pid
    threads = 1 if work is not None and work < PARALLEL_MIN_WORK else max(1, min(torch.get_num_threads(), n))
    bounds = [n * i // threads for i in range(threads + 1)]
    if threads == 1:
        return [call(0, n)]
    # Ctrl-C / SIGTERM are held back while the workers run (milliseconds): a KeyboardInterrupt raised
    # inside the wait can leave the futures' lock half-released ("cannot release un-acquired lock").
    # The workers are started inside the blocked region, so they never receive the signals either.
    with signals_held():  # a held-back signal is handled when the workers are done
        if _pool is None or _pool._max_workers < threads or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rarl-native")
            _pool_pid = os.getpid()
        futures = [_pool.submit(call, bounds[i], bounds[i + 1]) for i in range(threads)]
        return _results(futures)


def _results(futures: list[Future[int]]) -> list[int]:
    """The workers' return codes, waiting for every one of them even on an exception."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        # Ctrl-C / SIGTERM in the main thread: the workers still write into the caller's tensors, which
        # unwinding would free under them (a segfault at exit). Let them finish first, whatever comes.
        while not all(f.done() for f in futures):
            with contextlib.suppress(BaseException):
                wait(futures)
        raise


__all__ = ["available", "build", "check_library", "checksum_path", "crop_nhwc", "library_path", "load", "read_maps_nhwc"]

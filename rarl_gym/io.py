"""Writing files safely: atomic replacement, reserved space, a full disk named, lock files.

Every file rarl-gym writes (feature caches, ``scorer.pt``, checkpoints, SB3 models, run
configurations) goes through :func:`atomic_path` or one of its shorthands:

* the data go to a temporary file beside the target (``<name>.tmp<pid>``), are flushed and
  ``fsync``-ed, then renamed over the target (and the folder is ``fsync``-ed): a crash at any point
  leaves either the old file or the new one, never a mix;
* on any failure the temporary file is removed; a full disk (``ENOSPC``, ``EDQUOT``, also when a
  library wraps it) becomes :class:`rarl_gym.errors.DiskFullError` naming the file, the free space
  and the fix; a read-only folder becomes :class:`rarl_gym.errors.NotWritableError`.

:func:`reserve_space` allocates a file's blocks up front (``posix_fallocate``), so a memory map
never meets a full disk in the middle of a write (that is a ``SIGBUS``, not an exception).
:class:`FileLock` is an advisory ``flock`` on a lock file that says who holds it; the kernel
releases it when its process dies, so a ``kill -9`` never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rarl_gym.errors import DiskFullError, InUseError, NotWritableError

#: errno values that mean "no space left" (a full disk or an exhausted quota).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"  # pragma: no cover


def human_bytes(nbytes: float) -> str:
    """``"1.5 GiB"``: a byte count for messages."""
    return _human(nbytes)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent); ``None`` if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a full disk or quota."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError):
            return True
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(
    path: str | os.PathLike, what: str, needed: int | None = None, err: BaseException | None = None
) -> DiskFullError:
    """A :class:`DiskFullError` for ``what`` written at ``path``: how much is needed, how much is free, the fix."""
    path = Path(path)
    free = free_bytes(path.parent)
    need = f"; it needs {_human(needed)}" if needed is not None else ""
    have = f", {_human(free)} are free there" if free is not None else ""
    cause = f" ({err})" if err is not None and not isinstance(err, DiskFullError) else ""
    return DiskFullError(
        f"the disk is full: writing {what} {path} failed{need}{have}{cause}",
        f"free space on the file system of {path.parent} (or point rarl-gym elsewhere: $RARL_CACHE / cache_dir for "
        "feature caches, --run-dir for runs) and run again; what was complete before is kept",
    )


def file_too_large_error(path: str | os.PathLike, what: str, needed: int, err: BaseException | None = None) -> DiskFullError:
    """A :class:`DiskFullError` for a file larger than the file system allows (``EFBIG``)."""
    path = Path(path)
    cause = f" ({err})" if err is not None else ""
    return DiskFullError(
        f"{what} {path} would hold {_human(needed)}, more than one file may hold on that file system{cause}",
        "use fewer images (dataset_kwargs num_images) or a smaller input_size, or point $RARL_CACHE / cache_dir at "
        "a file system that allows files this large",
    )


def is_file_too_large(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is ``EFBIG``: a file larger than the file system allows."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.EFBIG:
            return True
        err = err.__cause__ or err.__context__
    return False


def _not_writable(path: Path, what: str, err: OSError) -> NotWritableError:
    if path.is_dir():  # e.g. scorer.pt replaced by a folder: the folder is in the way, not read-only
        return NotWritableError(
            f"cannot write {what} {path}: a folder of that name is in the way",
            f"remove or rename the folder {path} (it is not one rarl-gym writes) and run again",
        )
    return NotWritableError(
        f"cannot write {what} {path}: {err.strerror or err}",
        f"make {path.parent} writable, or write elsewhere ($RARL_CACHE / cache_dir for feature caches, --run-dir for runs)",
    )


def writable(folder: str | os.PathLike) -> bool:
    """Whether this process may create files in ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


def fsync_dir(path: str | os.PathLike) -> None:
    """``fsync`` a folder, so that a rename inside it survives a power cut (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under (``<name>.tmp<pid>``, same folder)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back ``SIGINT`` and ``SIGTERM`` inside the block (main thread); a signal that came
    meanwhile is handed to the handler that was in place when the block ends.

    For short critical sections (a save, the compiled crop's workers): a ``KeyboardInterrupt`` raised
    in the middle of a library's writer or lock can turn into an unrelated error (torch's zip writer:
    "unexpected pos"; a condition variable: "cannot release un-acquired lock") instead of the clean
    Ctrl-C path. The hold is at the Python level (the handlers are swapped), so it holds whichever
    thread the operating system delivers the signal to.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(pending):  # each signal once, in the order they came
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, ``fsync`` it and rename it over ``path``.

    Use it for writers that want a file name (``model.save(tmp)``). On any exception inside the block
    or while committing, the temporary file is removed and ``path`` is left as it was; a full disk
    raises :class:`DiskFullError`, a read-only folder :class:`NotWritableError`, anything else
    propagates unchanged. ``what`` names the file in messages (``"checkpoint"``). Ctrl-C and SIGTERM
    are held back until the file is in place (:func:`signals_held`).
    """
    with signals_held():
        with _atomic_path(path, what) as tmp:
            yield tmp


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike, what: str) -> Iterator[Path]:
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(err):
            raise disk_full_error(path, what, err=err) from err
        if isinstance(err, (PermissionError, IsADirectoryError, NotADirectoryError)) or (
            isinstance(err, OSError) and err.errno == errno.EROFS
        ):
            raise _not_writable(path, what, err) from err
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any], what: str = "file") -> None:
    """Write ``path`` atomically by calling ``write(f)`` on an open binary file (see :func:`atomic_path`)."""
    with atomic_path(path, what) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview, what: str = "file") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write(path, lambda f: f.write(data), what)


def atomic_write_json(path: str | os.PathLike, obj: Any, what: str = "file", indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode(), what)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray, what: str = "file") -> None:
    """``np.save`` ``array`` to ``path`` atomically (no ``.npy`` is appended to the name)."""
    atomic_write(path, lambda f: np.save(f, array), what)


def atomic_torch_save(obj: Any, path: str | os.PathLike, what: str = "file") -> None:
    """``torch.save`` ``obj`` to ``path`` atomically.

    The object is serialised in memory first, so a failed write is a plain ``OSError`` (torch's zip
    writer would report a full disk as an opaque ``unexpected pos`` error); meant for checkpoints
    and scorers (megabytes), not for arrays larger than memory.
    """
    import torch

    with signals_held():
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write_bytes(path, buffer.getbuffer(), what)


def reserve_space(path: str | os.PathLike, nbytes: int, what: str = "file") -> None:
    """Make ``path`` a file of ``nbytes`` bytes whose blocks are allocated on disk (existing content kept).

    A memory map over a sparse file gets ``SIGBUS`` (the process dies without a message) when the
    disk fills while a page is written; with the blocks reserved first, a full disk is a
    :class:`DiskFullError` here, before any work. Where ``posix_fallocate`` is not supported, the
    free space is checked instead.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, what, nbytes, err) from err
        raise _not_writable(path, what, err) from err
    try:
        st = os.fstat(fd)
        try:
            if not hasattr(os, "posix_fallocate"):  # macOS: no such call, check the free space instead
                raise OSError(errno.EOPNOTSUPP, "posix_fallocate is not available")
            if nbytes > 0:
                os.posix_fallocate(fd, 0, nbytes)
        except OSError as err:
            if err.errno in DISK_FULL_ERRNOS:
                os.ftruncate(fd, st.st_size)  # give back what the failed call may have allocated
                raise disk_full_error(path, what, nbytes, err) from err
            if err.errno == errno.EFBIG:
                os.ftruncate(fd, st.st_size)
                raise file_too_large_error(path, what, nbytes, err) from err
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            allocated = st.st_blocks * 512
            free = free_bytes(path.parent)
            if free is not None and free < nbytes - allocated:
                raise disk_full_error(path, what, nbytes) from err
        if os.fstat(fd).st_size != nbytes:
            os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)


def _holder_text() -> str:
    argv = " ".join(sys.argv)[:300]
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": argv}
    )


def describe_holder(text: str) -> str:
    """``"process 123 on host h (since ..., command ...)"`` from a lock file's content."""
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} (since {info['since']}: {info['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


class FileLock:
    """An exclusive advisory lock on ``path`` (a ``flock``; the file records who holds it).

    ``with FileLock(path, "the run folder x"):`` fails at once with :class:`InUseError` naming the
    holder (``blocking=False``, the default), or waits for it (``blocking=True``; ``on_wait(holder)``
    is called once first). The lock dies with its process (``kill -9`` included); the file is left
    in place (removing it would let a third process lock a different file).
    """

    def __init__(
        self, path: str | os.PathLike, what: str, *, blocking: bool = False, on_wait: Callable[[str], None] | None = None
    ):
        self.path = Path(path)
        self.what = what
        self.blocking = blocking
        self.on_wait = on_wait
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds the lock now (from the lock file)."""
        try:
            return describe_holder(self.path.read_text())
        except OSError:
            return "another process"

    def acquire(self) -> FileLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(self.path, "lock file", err=err) from err
            raise _not_writable(self.path, "lock file", err) from err
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not self.blocking:
                    raise InUseError(
                        f"{self.what} is in use by {holder} (lock file {self.path})",
                        "wait for that process to finish (or stop it), or use another folder",
                    ) from None
                if self.on_wait is not None:
                    self.on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_text().encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat ``SIGTERM`` (``kill``, a batch scheduler's or a container's stop) like Ctrl-C inside the block.

    The first ``SIGTERM`` raises ``KeyboardInterrupt`` where the main thread is, so the trainers'
    Ctrl-C path runs: save what was learnt, say so, exit with status 130. Further ``SIGTERM``s are
    ignored until the block ends, so that a second one cannot cut that save short (``SIGKILL``
    still ends the process at once; every file is written atomically). Outside the main thread,
    or where ``SIGTERM`` is not at its default (a caller's own handler, or ignored), nothing changes.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


RUN_LOCK = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[FileLock]:
    """Hold the lock of a run folder (``<run_dir>/.lock``) while training into it.

    Creates the folder; a second process fails at once with :class:`InUseError` naming the holder.
    A folder this call created and that holds nothing but the lock afterwards (the run failed
    before writing anything) is removed again.

    Raises:
        NotWritableError: ``run_dir`` is a file, or cannot be created.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotWritableError(
            f"the run folder {run_dir} is a file, not a folder", "pass --run-dir a new folder or one that holds a run"
        )
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(run_dir, "run folder", err=err) from err
        raise NotWritableError(
            f"cannot create the run folder {run_dir}: {err.strerror or err}", "pass --run-dir a writable folder"
        ) from err
    lock = FileLock(run_dir / RUN_LOCK, f"the run folder {run_dir}").acquire()
    try:
        yield lock
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            if created and [p.name for p in run_dir.iterdir()] == [RUN_LOCK]:
                (run_dir / RUN_LOCK).unlink()
                run_dir.rmdir()


__all__ = [
    "RUN_LOCK",
    "FileLock",
    "atomic_path",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "describe_holder",
    "disk_full_error",
    "file_too_large_error",
    "free_bytes",
    "human_bytes",
    "is_disk_full",
    "is_file_too_large",
    "reserve_space",
    "run_lock",
    "signals_held",
    "sigterm_as_interrupt",
    "temp_path",
    "writable",
]

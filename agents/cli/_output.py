"""What the commands write besides a run (``--out``, ``--draw``): checked before the work starts,
written atomically (:mod:`rarl_gym.io`), and a full disk or a read-only folder named with the
option that moves the output elsewhere, never a traceback or a half-written file."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from rarl_gym.errors import ConfigError, DiskFullError, NotWritableError, RarlGymError
from rarl_gym.io import atomic_write_bytes, atomic_write_json, disk_full_error, fsync_dir, is_disk_full, temp_path


def output_error(err: BaseException, path: Path, what: str, flag: str) -> RarlGymError | None:
    """The named error for ``err`` met while writing ``what`` at ``path`` (given by ``flag``):
    a :class:`DiskFullError` or :class:`NotWritableError` whose fix names ``flag``; ``None`` when
    ``err`` is neither a full disk nor a folder that may not be written."""
    folder = path.parent
    if is_disk_full(err):
        problem = err.problem if isinstance(err, DiskFullError) else disk_full_error(path, what, err=err).problem
        return DiskFullError(problem, f"free space on the file system of {folder}, or pass {flag} a path on another disk")
    if isinstance(err, NotWritableError) or isinstance(err, (PermissionError, IsADirectoryError, NotADirectoryError)):
        reason = err.problem if isinstance(err, NotWritableError) else f"cannot write {what} {path}: {err.strerror or err}"
        return NotWritableError(reason, f"make {folder} writable, or pass {flag} a path in a writable folder")
    if isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EPERM, errno.EACCES):
        return NotWritableError(
            f"cannot write {what} {path}: {err.strerror or err}",
            f"make {folder} writable, or pass {flag} a path in a writable folder",
        )
    return None


def _raise_named(err: BaseException, path: Path, what: str, flag: str) -> None:
    named = output_error(err, path, what, flag)
    if named is not None:
        raise named from err


def make_folder(folder: Path, flag: str) -> Path:
    """Create ``folder`` (and its parents) for the output of ``flag``; a file in the way is a
    :class:`ConfigError`, a read-only parent or a full disk a named error."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} is a file, not a folder", f"pass {flag} a folder (a new or an existing one)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ConfigError(
            f"{flag} {folder}: a file is in the way of the folder ({err.strerror})", f"pass {flag} a path under folders only"
        ) from err
    except OSError as err:
        _raise_named(err, folder / ".", "the folder", flag)
        raise
    return folder


def output_file(text: str, flag: str) -> Path:
    """The file given to ``flag`` (``--out x.json``): not a folder; its folder is created."""
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder", f"pass {flag} a file name, e.g. {path / 'out.json'}")
    make_folder(path.parent, flag)
    return path


def output_folder(text: str, flag: str) -> Path:
    """The folder given to ``flag`` (``--draw figures/``): not a file; created."""
    return make_folder(Path(text), flag)


def write_json(path: Path, obj: Any, what: str, flag: str) -> None:
    """``obj`` as JSON at ``path``, atomically (never a 0-byte or half file); errors name ``flag``."""
    try:
        atomic_write_json(path, obj, what=what)
    except (DiskFullError, NotWritableError, OSError) as err:
        _raise_named(err, path, what, flag)
        raise


def write_text(path: Path, text: str, what: str, flag: str) -> None:
    """``text`` (UTF-8) at ``path``, atomically; errors name ``flag``."""
    try:
        atomic_write_bytes(path, text.encode(), what=what)
    except (DiskFullError, NotWritableError, OSError) as err:
        _raise_named(err, path, what, flag)
        raise


def save_picture(image: Any, path: Path, what: str, flag: str) -> None:
    """A PIL image as PNG at ``path``, atomically; errors name ``flag``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    try:
        atomic_write_bytes(path, buffer.getbuffer(), what=what)
    except (DiskFullError, NotWritableError, OSError) as err:
        _raise_named(err, path, what, flag)
        raise


class LinesFile:
    """A text file written line by line that appears at ``path`` only whole: the lines go to a
    temporary file beside it, renamed over ``path`` when the block ends, also on Ctrl-C (the
    lines written so far, each complete). On any other error the temporary file is removed and
    ``path`` is left as it was; a full disk or a read-only folder is named with ``flag``. The
    temporary file is opened at once, so an output that cannot be written fails before the work."""

    def __init__(self, path: Path, what: str, flag: str):
        self.path, self.what, self.flag = path, what, flag
        self._tmp = temp_path(path)
        try:
            self._file = open(self._tmp, "w", encoding="utf-8")
        except OSError as err:
            _raise_named(err, path, what, flag)
            raise

    def write_line(self, line: str) -> None:
        try:
            self._file.write(line + "\n")
        except OSError as err:
            self._discard()
            _raise_named(err, self.path, self.what, self.flag)
            raise

    def _discard(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        try:
            self._tmp.unlink()
        except OSError:
            pass

    def _commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as err:
            self._discard()
            _raise_named(err, self.path, self.what, self.flag)
            raise
        fsync_dir(self.path.parent)

    def __enter__(self) -> LinesFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        if kind is None or issubclass(kind, KeyboardInterrupt):
            if not self._file.closed:
                self._commit()
        else:
            self._discard()


__all__ = [
    "LinesFile",
    "make_folder",
    "output_error",
    "output_file",
    "output_folder",
    "save_picture",
    "write_json",
    "write_text",
]

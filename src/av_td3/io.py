"""Crash-safe file writing, friendly loading of saved artefacts, and OS faults as clear errors.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then moved over
the old one with ``os.replace`` (atomic on POSIX): a kill at any moment leaves either the old or the
new file, never a half-written one.

OS faults (permission denied, a file where a folder should be, a full disk, a read-only file system)
become a :class:`StorageError` whose message names the path, what was being read or written, and the
fix; ``exit_code`` is 2 for a location the user chose badly and 1 for a fault at run time.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class CorruptFileError(RuntimeError):
    """A saved file exists but cannot be read (truncated, corrupt, or not ours)."""


class StorageError(RuntimeError):
    """An OS fault reading or writing a file, explained (path, what, fix); ``exit_code`` 2 or 1."""

    def __init__(self, message: str, exit_code: int = 2, errno_: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.errno = errno_


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def storage_error(exc: OSError, doing: str, path: str | os.PathLike | None = None) -> StorageError:
    """Explain ``exc`` (raised while ``doing``, e.g. "writing the checkpoint") for ``path``."""
    path = Path(path if path is not None else (exc.filename or "?"))
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
        fix = (f"run as a user who may use it (see `ls -ld {_existing_ancestor(path)}`) or choose another location "
               "(e.g. --log-dir / --output in a folder you own)")
        exit_code = 2
    elif code == errno.EROFS:
        reason, fix, exit_code = "the file system is read-only", "choose a location on a writable disk", 2
    elif code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        reason = f"{blocker} is a file where a directory is expected"
        fix, exit_code = "remove or rename that file, or choose another location", 2
    elif code == errno.EISDIR:
        reason, fix, exit_code = "it is a directory where a file is expected", "pass a file path instead", 2
    elif code in _NO_SPACE:
        reason = "no space left on the device"
        fix = (f"free space there (`df -h {_existing_ancestor(path)}`) or choose a location on another disk, "
               "e.g. --log-dir")
        exit_code = 1
    else:
        reason, fix, exit_code = exc.strerror or str(exc), "check the disk and the path", 1
    return StorageError(f"{doing} {path} failed: {reason}. Fix: {fix}.", exit_code, code)


def _existing_ancestor(path: Path) -> Path:
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _file_in_the_way(path: Path) -> Path:
    """The first component of ``path`` that exists and is not a directory (else ``path``)."""
    probe = Path(os.path.abspath(path))
    for parent in reversed([probe, *probe.parents]):
        if os.path.lexists(parent) and not parent.is_dir():
            return parent
    return probe


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Fail now, before any work, if ``path`` cannot become a folder we write in.

    ``what`` names the location for the message (e.g. ``"--log-dir"``). The folder itself is not
    created: the nearest existing ancestor must be a directory in which a file can be created (a
    real probe, so read-only mounts and non-root permissions are caught, not just mode bits).
    """
    path = Path(path)
    try:
        blocker = _file_in_the_way(path)
        if os.path.lexists(blocker) and not blocker.is_dir():
            raise StorageError(f"{what} {path}: {blocker} is a file where a directory is expected. Fix: remove or "
                               f"rename that file, or choose another {what}.", 2, errno.ENOTDIR)
        with tempfile.TemporaryFile(dir=_existing_ancestor(path)):
            pass
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, f"{what}: writing in", _existing_ancestor(path)) from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], what: str = "file") -> Path:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then replace ``path``.

    An OS fault (full disk, permissions) becomes a :class:`StorageError` naming ``what`` and ``path``;
    the old file at ``path`` is untouched and the temp file removed, whatever interrupts the write.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; a saved file gets open()'s usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise storage_error(exc, f"writing the {what}", path) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _unlink_quietly(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()), what)


def atomic_torch_save(obj: Any, path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``torch.save`` atomically. The object is serialised in memory first: torch's zip writer turns a
    failed file write (a full disk) into "unexpected pos", which would hide the OS error."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    return atomic_write(path, lambda f: f.write(data), what)


def torch_load_checked(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load`` with errors that name the file and say what to do."""
    import torch

    path = Path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
        with open(path, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise storage_error(exc, f"reading the {what}", path) from None
    except Exception as exc:  # torch raises several types for truncated/corrupt zips and pickles
        raise CorruptFileError(
            f"{what} {path} is corrupt or truncated ({type(exc).__name__}: {exc}). "
            f"Delete it or point to an earlier checkpoint; files written by av-td3 are replaced "
            f"atomically, so this one was damaged outside a save."
        ) from None

"""Crash-safe file writing and friendly loading of saved artefacts.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then moved over
the old one with ``os.replace`` (atomic on POSIX): a kill at any moment leaves either the old or the
new file, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class CorruptFileError(RuntimeError):
    """A saved file exists but cannot be read (truncated, corrupt, or not ours)."""


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; a saved file gets open()'s usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def torch_load_checked(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load`` with errors that name the file and say what to do."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt zips and pickles
        raise CorruptFileError(
            f"{what} {path} is corrupt or truncated ({type(exc).__name__}: {exc}). "
            f"Delete it or point to an earlier checkpoint; files written by av-td3 are replaced "
            f"atomically, so this one was damaged outside a save."
        ) from None

"""The run directory's rules: names that stay inside ``--log-dir``, one training per run at a time,
and files that a restart or an earlier checkpoint supersedes moved aside (never deleted).

Layout of a run: ``<log_dir>/<run_name>/`` with ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``checkpoints/`` and, when something was superseded, ``superseded/<why>-<time>/``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from av_td3.training.run_logger import iter_metric_lines

LOCK = ".lock"
LOCK_OWNER = ".lock.owner"  # who holds the lock (the lock file itself is truncated by contenders)


class RunNameError(ValueError):
    """A run name that would write outside ``--log-dir``."""


class RunLockedError(RuntimeError):
    """Another process is training in this run directory."""


def check_run_name(name: str) -> str:
    """``name`` if it is one plain folder name; else a ``RunNameError`` saying what to pass."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or os.path.isabs(name))
    if bad:
        raise RunNameError(f"--run-name {name!r} must be a plain folder name inside --log-dir (no '/', '..' or "
                           "absolute path), e.g. --run-name my_run; use --log-dir to choose where runs go")
    return name


class RunLock:
    """An exclusive lock on a run directory for one training process (``filelock``: an OS lock that the
    kernel drops when the process dies, so a kill -9 never leaves a stale lock).

    Usage: ``with RunLock(run_dir): ...``; a second process fails at once with ``RunLockedError``.
    ``created_dir`` tells whether acquiring created the run directory (so a failed start can remove it).
    """

    def __init__(self, run_dir: str | os.PathLike, what: str = "run directory"):
        from filelock import FileLock

        self.run_dir, self.what = Path(run_dir), what
        self.created_dir = False
        self._lock = FileLock(str(self.run_dir / LOCK), timeout=0)

    def acquire(self) -> "RunLock":
        from filelock import Timeout

        if not self.run_dir.is_dir():
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLockedError(
                f"{self.what} {self.run_dir} is in use by another training ({_owner(self.run_dir)}); wait for it "
                "to finish or stop it (Ctrl-C saves a checkpoint), or pick another --run-name") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(sys.argv[:1] + sys.argv[1:8])}
        (self.run_dir / LOCK_OWNER).write_text(json.dumps(owner))
        return self

    def release(self, remove_dir_if_unused: bool = False) -> None:
        """Release; with ``remove_dir_if_unused`` also remove a run directory this lock created and in
        which nothing else was written (a start that failed leaves no empty run behind)."""
        (self.run_dir / LOCK_OWNER).unlink(missing_ok=True)
        self._lock.release()
        if remove_dir_if_unused and self.created_dir:
            (self.run_dir / LOCK).unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _owner(run_dir: Path) -> str:
    try:
        owner = json.loads((run_dir / LOCK_OWNER).read_text())
        return f"pid {owner['pid']} on {owner['host']}, started {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that holds its lock"


def move_aside(run_dir: Path, reason: str, files: list[Path], texts: dict[str, str] | None = None) -> Path | None:
    """Move the existing ``files`` (and write ``texts``, name → content) into
    ``run_dir/superseded/<reason>-<time>/``; returns that folder (``None`` if there was nothing)."""
    files = [f for f in files if f.exists()]
    texts = {name: text for name, text in (texts or {}).items() if text}
    if not files and not texts:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir / "superseded" / f"{reason}-{stamp}", 1
    while target.exists():
        n += 1
        target = run_dir / "superseded" / f"{reason}-{stamp}-{n}"
    target.mkdir(parents=True)
    for name, text in texts.items():
        (target / name).write_text(text)
    for f in files:
        os.replace(f, target / f.name)
    return target


def split_metrics(path: Path, step: int) -> tuple[list[str], list[str]]:
    """The lines of ``metrics.jsonl`` up to ``step`` and those after it; unreadable lines (a torn last
    line from a kill, anything that is not a JSON object) go with neither."""
    keep: list[str] = []
    later: list[str] = []
    for line, record in iter_metric_lines(path):
        s = record.get("step", 0)
        (keep if not isinstance(s, (int, float)) or s <= step else later).append(line)
    return keep, later


def restartable_leftovers(run_dir: Path, checkpoint_dir: Path | None) -> list[Path] | None:
    """For a new run whose directory already holds files: the files of a run that stopped before its
    first checkpoint (so it can simply start again), or ``None`` when the directory holds a real run
    (a checkpoint exists) and must be resumed instead."""
    ckpt_dirs = [run_dir / "checkpoints"] + ([Path(checkpoint_dir)] if checkpoint_dir else [])
    if any((d / "latest.pt").is_file() for d in ckpt_dirs):
        return None
    names = ("metrics.jsonl", "config.yaml", "summary.json", "tensorboard", "checkpoints")
    return [run_dir / n for n in names if (run_dir / n).exists()]

"""Refuse replay buffers that cannot fit in RAM, before allocating them.

``np.empty`` of a 200 GB buffer usually *succeeds* (Linux overcommits), and the process is then killed
hours into training when the buffer fills up. So every buffer computes its exact size first and compares
it with the memory the kernel says is available.
"""

from __future__ import annotations

import os
from collections.abc import Callable


class BufferTooLargeError(ValueError, MemoryError):
    """A replay buffer's ``max_size`` does not fit in available memory.

    A ``ValueError`` (bad argument) and a ``MemoryError`` (what it protects against), so either
    ``except`` clause catches it.
    """


def available_memory_bytes() -> int | None:
    """Bytes the kernel can hand out without swapping, or None when unknown.

    Reads ``MemAvailable`` from ``/proc/meminfo`` (Linux); elsewhere falls back to the free physical
    pages reported by ``sysconf``; a cgroup memory limit (containers) lowers it. Returns None when
    nothing is known (the check is then skipped).
    """
    kernel = _mem_available()
    limit = cgroup_memory_headroom()
    if kernel is None or limit is None:
        return kernel if limit is None else limit
    return min(kernel, limit)


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def cgroup_memory_headroom(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process's cgroup (v2) may still use, or None without a limit.

    In a container (``docker run --memory``, Kubernetes limits) ``MemAvailable`` shows the *host's*
    memory, and a buffer that fits there gets the process OOM-killed at its limit.
    """
    try:
        limit = open(os.path.join(root, "memory.max"), encoding="ascii").read().strip()
        if limit == "max":
            return None
        used = int(open(os.path.join(root, "memory.current"), encoding="ascii").read().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def format_bytes(n: float) -> str:
    """Human-readable size with binary units: ``format_bytes(7.5 * 2**30) == '7.50 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def largest_fitting_size(nbytes_for: Callable[[int], int], budget: int) -> int:
    """Largest ``max_size`` with ``nbytes_for(max_size) <= budget`` (0 if even 1 does not fit).

    ``nbytes_for`` must be non-decreasing; a binary search keeps this exact even when the buffer adds
    size-dependent head-room rows.
    """
    lo, hi = 0, 1
    while nbytes_for(hi) <= budget:  # grow until it no longer fits
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: lo fits (or is 0), hi does not
        mid = (lo + hi) // 2
        if nbytes_for(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def check_fits(owner: str, max_size: int, nbytes_for: Callable[[int], int]) -> None:
    """Raise :class:`BufferTooLargeError` if ``nbytes_for(max_size)`` exceeds available memory.

    Args:
        owner: class name used in the message, e.g. ``"DictReplayBuffer"``.
        max_size: the requested capacity, transitions.
        nbytes_for: bytes the buffer would allocate for a given ``max_size``.
    """
    need = nbytes_for(max_size)
    available = available_memory_bytes()
    if available is None or need <= available:
        return
    largest = largest_fitting_size(nbytes_for, available)
    raise BufferTooLargeError(
        f"{owner}(max_size={max_size:,}) needs {format_bytes(need)} "
        f"({need / max_size:,.0f} bytes per transition) but only {format_bytes(available)} of memory is "
        f"available (MemAvailable, or the container's memory limit); the largest max_size that fits is {largest:,}. "
        "Lower training.buffer_size (leave room for the rest of training too)."
    )

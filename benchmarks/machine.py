"""The machine a benchmark ran on, for its JSON (benchmarks are run as scripts from this folder)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, core count, load, Python and platform; benchmarks add their library versions."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_avg_1min": load,
            "python": platform.python_version(), "platform": platform.platform()}

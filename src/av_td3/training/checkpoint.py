"""Training checkpoints: everything needed to continue a run, written atomically.

A checkpoint file (``checkpoints/latest.pt``) holds the agent (networks, targets, optimizers), the
trainer's counters, the exploration state, RNG states and the resolved config. With
``training.save_buffer`` the replay buffer is saved beside it (``buffer.npz``), *before* the checkpoint,
so the checkpoint never points at a buffer older than itself. Without it a resumed run refills the
buffer with the current policy before updating again.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from av_td3.io import CorruptFileError, atomic_torch_save, torch_load_checked

FORMAT = "av-td3-checkpoint"
VERSION = 1
LATEST = "latest.pt"
BUFFER = "buffer.npz"


def capture_rng(np_rng: np.random.Generator) -> dict[str, Any]:
    import torch

    return {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "numpy": np_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    np_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    return atomic_torch_save({"format": FORMAT, "version": VERSION, **payload}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint; a damaged or foreign file gives ``CorruptFileError``."""
    data = torch_load_checked(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is not an av-td3 training checkpoint (missing format marker)")
    if data.get("version") != VERSION:
        raise CorruptFileError(f"{path} has checkpoint version {data.get('version')}, this av-td3 reads {VERSION}")
    return data


def saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """The run's config from a checkpoint; ``algorithm.name`` filled from the recorded algorithm
    (checkpoints written before the key existed)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in data["config"].items()}
    config.setdefault("algorithm", {}).setdefault("name", data.get("algo", "td3"))
    return config


def run_dir_of(checkpoint: Path, data: dict[str, Any]) -> Path:
    """The run directory a checkpoint belongs to: the folder above ``<run>/checkpoints/`` when the
    checkpoint still lies in a run (so a moved or copied run resumes in place), else the run directory
    recorded in it (``--checkpoint-dir`` kept it apart from its run)."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints" and (checkpoint.parent.parent / "config.yaml").is_file():
        return checkpoint.parent.parent
    recorded = data.get("trainer", {}).get("run_dir")
    return Path(recorded) if recorded else checkpoint.parent


def find_checkpoint(target: str | Path, log_dir: str | Path, run_name: str | None, flag: str = "--resume") -> Path:
    """Resolve ``--resume`` (or ``flag``): ``auto`` (the named run, else the newest run with a checkpoint),
    a run directory, or a checkpoint file."""
    if str(target) != "auto":
        p = Path(target)
        if p.is_dir():
            for candidate in (p / "checkpoints" / LATEST, p / LATEST):
                if candidate.is_file():
                    return candidate
            raise FileNotFoundError(f"no checkpoint in {p} (looked for checkpoints/{LATEST})")
        if p.is_file():
            return p
        raise FileNotFoundError(f"{flag} {p}: no such checkpoint file or run directory")
    log_dir = Path(log_dir)
    if run_name:
        candidate = log_dir / run_name / "checkpoints" / LATEST
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"--resume auto: run '{run_name}' has no checkpoint at {candidate}")
    found = sorted(log_dir.glob(f"*/checkpoints/{LATEST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume auto: no run with a checkpoint under {log_dir}/ (train first, or pass --resume PATH)")
    return found[-1]

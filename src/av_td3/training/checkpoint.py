"""Training checkpoints: everything needed to continue a run, written atomically.

A checkpoint file (``checkpoints/latest.pt``) holds the agent (networks, targets, optimizers), the
trainer's counters, the exploration state, RNG states and the resolved config. With
``training.save_buffer`` the replay buffer is part of the same unit: it is written first, to a file
whose name is unique to this save (``buffer-step<N>-<id>.npz``, stamped inside with the same step and
id), then the checkpoint that names it replaces ``latest.pt`` (the commit point), and only then are
older buffer files removed. A kill, a full disk or a second Ctrl-C at any moment leaves ``latest.pt``
and the buffer it names as one consistent pair; resume checks the stamp and refuses a buffer that is
not the checkpoint's own. Without a saved buffer a resumed run refills the buffer with the current
policy before updating again.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from av_td3.io import CorruptFileError, atomic_torch_save, torch_load_checked
from av_td3.training.run_dir import restartable_leftovers

FORMAT = "av-td3-checkpoint"
VERSION = 1
LATEST = "latest.pt"
LEGACY_BUFFER = "buffer.npz"  # written before buffers were stamped: cannot be matched to a checkpoint
BUFFER_GLOB = "buffer-step*.npz"


class CheckpointMismatchError(CorruptFileError):
    """A replay buffer file that is not the one its checkpoint was saved with."""


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


def save_checkpoint(path: Path, payload: dict[str, Any], buffer: Any = None) -> Path:
    """Write ``payload`` to ``path`` atomically; with ``buffer`` (a replay buffer) save it first as this
    checkpoint's own file and record its name, stamp and length in the checkpoint (see the module doc)."""
    path = Path(path)
    record = None
    if buffer is not None:
        save_id = uuid.uuid4().hex[:12]
        step = int(payload["trainer"]["step"])
        name = f"buffer-step{step}-{save_id}.npz"
        stamp = {"checkpoint_id": save_id, "step": step}
        buffer.save(path.parent / name, stamp=stamp)
        record = {"file": name, **stamp, "transitions": len(buffer)}
    atomic_torch_save({"format": FORMAT, "version": VERSION, **payload, "buffer": record}, path)
    if record is not None:  # committed: the previous buffer files belong to no checkpoint any more
        for old in path.parent.glob(BUFFER_GLOB):
            if old.name != record["file"]:
                old.unlink(missing_ok=True)
    return path


def checkpoint_step(data: dict[str, Any]) -> int:
    return int(data.get("trainer", {}).get("step", 0))


def load_checkpoint_buffer(path: Path, data: dict[str, Any], buffer_cls: Any, device: Any) -> tuple[Any, str]:
    """The replay buffer saved with checkpoint ``path`` (``data`` its contents), or ``(None, why)``.

    Raises:
        CheckpointMismatchError: the file the checkpoint names holds another save's buffer.
    """
    path = Path(path)
    record = data.get("buffer")
    if record is None:
        if (path.parent / LEGACY_BUFFER).is_file():
            return None, (f"{path.parent / LEGACY_BUFFER} was written by an older av-td3 without a step stamp, so "
                          f"it cannot be matched to {path.name} (step {checkpoint_step(data)}) and is not used")
        return None, f"{path.name} was saved without a replay buffer (only latest.pt of a --save-buffer run has one)"
    file = path.parent / record["file"]
    if not file.is_file():
        return None, f"{path.name} names the replay buffer {file}, which is missing"
    stamp = buffer_cls.read_stamp(file)
    if stamp is None or stamp.get("checkpoint_id") != record["checkpoint_id"]:
        raise CheckpointMismatchError(
            f"replay buffer {file} was not saved with checkpoint {path} (buffer stamp {stamp}, checkpoint at "
            f"step {record['step']} expects id {record['checkpoint_id']}); restoring it would mix two moments of "
            f"the run. Move {file.name} away to resume without a saved buffer, or resume from its own checkpoint.")
    buffer = buffer_cls.load(file, device=device)
    if len(buffer) != record["transitions"]:
        raise CheckpointMismatchError(
            f"replay buffer {file} holds {len(buffer)} transitions but checkpoint {path} recorded "
            f"{record['transitions']}; move {file.name} away to resume without it.")
    return buffer, f"replay buffer restored: {len(buffer)} transitions"


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
        if restartable_leftovers(log_dir / run_name, None):  # the one rule for "stopped before a checkpoint"
            raise FileNotFoundError(
                f"--resume auto: run '{run_name}' in {log_dir} stopped before its first checkpoint, so there is "
                f"nothing to resume; start it again by running the same command without --resume (its old "
                f"files are moved aside)")
        raise FileNotFoundError(f"--resume auto: run '{run_name}' has no checkpoint at {candidate}")
    found = sorted(log_dir.glob(f"*/checkpoints/{LATEST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume auto: no run with a checkpoint under {log_dir}/ (train first, or pass --resume PATH)")
    return found[-1]

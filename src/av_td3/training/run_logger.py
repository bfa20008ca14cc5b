"""Where a run's numbers go: TensorBoard, ``metrics.jsonl`` and the console progress bar.

TensorBoard tags are grouped as the issue asks: ``train/`` (losses, Q, noise, episodes), ``eval/``,
``rewards/`` (each reward component per episode), ``gradients/`` and ``cnn/``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from tqdm import tqdm


def _plain(value: Any) -> Any:
    """Make tensors / numpy scalars JSON-friendly (non-finite floats become None)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class RunLogger:
    """Appends to ``metrics.jsonl`` (resumed runs keep appending) and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool, total_steps: int, start_step: int, progress_bar: bool,
                 start_updates: int = 0):
        self.run_dir = run_dir
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote after its last checkpoint (at step start_step)
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not progress_bar, mininterval=1.0)
        self._last_time, self._last_step, self._last_updates = time.perf_counter(), start_step, start_updates
        self.steps_per_s = 0.0
        self.updates_per_s = 0.0

    # -- records ----------------------------------------------------------------------------------
    def record(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """One line of ``metrics.jsonl``: ``{"type": kind, "step": step, ...values}``."""
        try:
            self._jsonl.write(json.dumps({"type": kind, "step": step, **_plain(dict(values))}) + "\n")
        except OSError as exc:  # a full disk: say which file, not a bare errno from a file object
            from av_td3.io import storage_error

            raise storage_error(exc, "appending to the metrics log", self.run_dir / "metrics.jsonl") from None

    def scalars(self, prefix: str, step: int, values: Mapping[str, Any]) -> None:
        if self._tb is None:
            return
        for key, value in values.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def console(self, message: str) -> None:
        """Print above the progress bar without breaking it."""
        self._bar.write(message)

    # -- progress ---------------------------------------------------------------------------------
    def progress(self, step: int, updates: int, last_episode: Mapping[str, float] | None) -> None:
        """Advance the bar to ``step`` and refresh steps/s, updates/s, last episode reward and speed."""
        self._bar.update(step - self._bar.n)
        now = time.perf_counter()
        if now - self._last_time >= 2.0:
            dt = now - self._last_time
            self.steps_per_s = (step - self._last_step) / dt
            self.updates_per_s = (updates - self._last_updates) / dt
            self._last_time, self._last_step, self._last_updates = now, step, updates
            postfix = {"steps/s": f"{self.steps_per_s:.0f}", "upd/s": f"{self.updates_per_s:.1f}"}
            if last_episode:
                postfix["ep_rew"] = f"{last_episode['reward']:.1f}"
                postfix["km/h"] = f"{last_episode['mean_speed_kmh']:.1f}"
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self._bar.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def iter_metric_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(line, record)`` for each line of a ``metrics.jsonl`` that is a JSON object; others (a torn last
    line from a kill, a hand edit, bytes that are not UTF-8) are skipped. No file: nothing."""
    if not path.is_file():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield line, record


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` that have a ``type`` (see ``iter_metric_lines``)."""
    return [r for _, r in iter_metric_lines(Path(run_dir) / "metrics.jsonl") if isinstance(r.get("type"), str)]

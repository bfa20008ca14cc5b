"""One sweep trial: an ordinary ``av-td3 train`` run directory, trained in a subprocess.

Why a subprocess rather than calling ``Trainer`` in the Ray worker (measured and reasoned in
docs/benchmarks.md, "Sweeps on Ray Tune"): each Tune trial starts a fresh worker process, so torch and
av_td3 are imported once per trial either way (4 s), and the extra interpreter start costs 0.02 s; in return
the trial gets the exact ``train`` code path (its SIGINT/SIGTERM checkpointing needs the main thread,
while Tune runs function trainables in a side thread), its own OpenMP thread count, and a crash that
cannot take the Ray worker down.

The function is idempotent, so Tune's retries and a resumed sweep are safe:

* a run directory with ``summary.json`` is finished: its numbers are reported, nothing is trained;
* a run directory with a checkpoint continues with ``train --resume RUN_DIR``;
* a run directory without either (killed before its first checkpoint) starts over: ``train`` itself
  moves such leftovers to the run's ``superseded/`` folder, the one rule for every run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: summary.json keys a finished trial reports to Tune.
REPORTED_KEYS = ("total_timesteps", "eval_success_rate", "eval_route_completion", "eval_mean_reward",
                 "mean_episode_reward", "wall_time_s")


class TrialFailedError(RuntimeError):
    """``av-td3 train`` exited non-zero; the message names the log and quotes its last lines."""


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def train_command(trial: dict[str, Any], ctx: dict[str, Any], server: tuple[str, int] | None) -> list[str]:
    """The ``av-td3 train`` command line of ``trial`` (fresh, or ``--resume`` from its checkpoint)."""
    run_dir = Path(ctx["trials_dir"]) / trial["name"]
    overrides = list(trial["overrides"])
    if server is not None:
        overrides += [f"carla.host={json.dumps(server[0])}", f"carla.port={server[1]}"]
    cmd = [sys.executable, "-m", "av_td3.cli", "train"]
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += ["--config", ctx["base"], "--log-dir", ctx["trials_dir"], "--run-name", trial["name"]]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def trial_env(cpus: float) -> dict[str, str]:
    """The subprocess's environment: one OpenMP/torch thread per CPU the trial reserved."""
    threads = str(max(1, int(cpus)))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the training when its Ray worker dies (train then checkpoints and exits)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def run_trial(trial: dict[str, Any], ctx: dict[str, Any], server: tuple[str, int] | None = None) -> dict[str, Any]:
    """Train ``trial`` to completion (or find it finished) and return its summary numbers."""
    trials_dir, logs_dir = Path(ctx["trials_dir"]), Path(ctx["logs_dir"])
    run_dir = trials_dir / trial["name"]
    if is_finished(run_dir):
        return _reported(run_dir, trained=False)
    cmd = train_command(trial, ctx, server)
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"{trial['name']}.log"
    cwd = ctx.get("cwd") if ctx.get("cwd") and Path(ctx["cwd"]).is_dir() else None  # another node may lack it
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n[SWEEP] {time.strftime('%Y-%m-%d %H:%M:%S')} attempt: {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=trial_env(ctx["cpu"]),
                             cwd=cwd, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    end = time.time()
    with open(logs_dir / f"{trial['name']}.attempts.jsonl", "a") as f:
        f.write(json.dumps({"start": start, "end": end, "returncode": rc,
                            "server": f"{server[0]}:{server[1]}" if server else None}) + "\n")
    if rc != 0 or not is_finished(run_dir):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-12:])
        raise TrialFailedError(f"trial {trial['name']}: av-td3 train exited with code {rc}; log {log_path}; "
                               f"last lines:\n{tail}")
    return _reported(run_dir, trained=True)


def _reported(run_dir: Path, trained: bool) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {k: summary.get(k) for k in REPORTED_KEYS}
    out["trained_now"] = trained
    return {k: v for k, v in out.items() if v is not None}


def tune_trainable(config: dict[str, Any]) -> None:
    """The function Ray Tune runs per trial: take a CARLA server if the sweep has a pool, train, report."""
    from ray import tune

    trial, ctx = config["trial"], config["ctx"]
    server, pool = None, None
    if ctx.get("pool_actor"):
        import ray

        pool = ray.get_actor(ctx["pool_actor"], namespace=ctx["namespace"])
        while (server := ray.get(pool.acquire.remote(trial["name"]))) is None:
            time.sleep(1.0)  # every server busy: Tune's max_concurrent_trials makes this rare
        server = tuple(server)
    try:
        metrics = run_trial(trial, ctx, server)
    finally:
        if pool is not None:
            pool.release.remote(trial["name"])
    tune.report(metrics)

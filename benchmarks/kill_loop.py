"""Kill -9 a training run at random moments, resume it, repeat; then check that the run is consistent.

Each round starts ``av-td3 train`` (the first one new, later ones ``--resume auto``) with
``--save-buffer`` and a short checkpoint interval, waits until it has made progress past its resume
point, then sleeps a random time and sends SIGKILL (so kills land in env steps, updates, evaluations
and in the middle of checkpoint/buffer saves). After every kill the files on disk must form a valid
unit (``latest.pt`` readable, its buffer file present with the matching stamp and length). After the
last round the run is completed and checked: final step count, replay-buffer length (every step stored
exactly once), episode numbering (1..K without gaps or repeats, K = the checkpoint's episode count),
non-decreasing steps in ``metrics.jsonl`` and the summary.

    python benchmarks/kill_loop.py --kills 20 --max-timesteps 1500     # prints one JSON object

``tests/test_crash_kill_loop.py`` runs a short version of the same loop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAST = ["--set", "algorithm.batch_size=16", "--set", "training.buffer_size=5000", "--set", "env.max_episode_steps=30",
        "--set", "evaluation.num_episodes=1", "--set", "logging.progress_bar=false", "--set", "logging.log_interval=20",
        "--set", "algorithm.start_timesteps=40"]


def _train_command(log_dir: Path, name: str, max_steps: int, checkpoint_freq: int, eval_freq: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "av_td3.cli", "train", "--device", "cpu", "--log-dir", str(log_dir), "--run-name", name]
    if resume:
        return cmd + ["--resume", "auto", "--set", "logging.progress_bar=false"]
    return cmd + ["--max-timesteps", str(max_steps), "--checkpoint-freq", str(checkpoint_freq), "--eval-freq",
                  str(eval_freq), "--save-buffer", *FAST]


def _progress(run: Path) -> int:
    """Highest step recorded in metrics.jsonl (0 if none)."""
    best = 0
    try:
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                best = max(best, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError, TypeError):
                continue
    except OSError:
        pass
    return best


def check_unit(run: Path) -> dict:
    """The on-disk checkpoint + buffer unit is readable and consistent; returns its counters."""
    from av_td3.buffers import DictReplayBuffer
    from av_td3.training.checkpoint import load_checkpoint, load_checkpoint_buffer

    path = run / "checkpoints" / "latest.pt"
    if not path.is_file():
        return {"step": 0, "transitions": 0, "episodes": 0}
    data = load_checkpoint(path)
    buffer, why = load_checkpoint_buffer(path, data, DictReplayBuffer, "cpu")
    assert buffer is not None, f"latest.pt has no usable buffer: {why}"
    step = data["trainer"]["step"]
    assert len(buffer) == data["buffer"]["transitions"] == step, (len(buffer), data["buffer"], step)
    return {"step": step, "transitions": len(buffer), "episodes": data["trainer"]["episodes"]}


def check_final(run: Path, max_steps: int) -> dict:
    """The completed run: counts agree everywhere."""
    unit = check_unit(run)
    assert unit["step"] == max_steps, unit
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_timesteps"] == max_steps, summary
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(steps), "metrics.jsonl steps go backwards"
    episodes = [r for r in records if r["type"] == "episode"]
    numbers = [r["episode"] for r in episodes]
    assert numbers == list(range(1, len(numbers) + 1)), f"episode numbers {numbers}"
    assert len(numbers) == unit["episodes"] == summary["episodes"], (len(numbers), unit, summary["episodes"])
    ends = [r["step"] for r in episodes]
    assert ends == sorted(set(ends)), "two episodes end at the same step"
    updates = [r["updates"] for r in records if r["type"] == "train"]
    assert updates == sorted(set(updates)), "update counts repeat or go backwards"
    assert summary["updates"] >= (updates[-1] if updates else 0)
    assert not list((run / "checkpoints").glob(".*.tmp")), "temp files left behind"
    assert len(list((run / "checkpoints").glob("buffer-step*.npz"))) == 1
    return {**unit, "episode_records": len(numbers), "metric_records": len(records), "updates": summary["updates"]}


def kill_loop(workdir: Path, kills: int, max_steps: int, checkpoint_freq: int = 25, eval_freq: int = 100,
              max_delay_s: float = 3.0, seed: int = 0, timeout_s: float = 300.0) -> dict:
    """Run the loop in ``workdir``; returns counts (raises AssertionError on the first inconsistency)."""
    rng = random.Random(seed)
    src = str(ROOT / "src")  # this checkout's av_td3 in the training processes, installed or not
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    run = workdir / "run"
    delays, kill_steps, finished_early = [], [], 0
    for round_ in range(kills + 1):
        resume = (run / "checkpoints" / "latest.pt").is_file()
        start_step = _progress(run) if resume else 0
        cmd = _train_command(workdir, "run", max_steps, checkpoint_freq, eval_freq, resume)
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout_s
        if round_ < kills:
            while proc.poll() is None and _progress(run) <= start_step and time.time() < deadline:
                time.sleep(0.05)
            delay = rng.uniform(0.0, max_delay_s)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                delays.append(round(delay, 2))
                unit = check_unit(run)  # raises if the kill left an inconsistent unit
                kill_steps.append(unit["step"])
                continue
            finished_early += 1
        _, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
        assert proc.returncode == 0, err.decode()[-3000:]
        if _progress(run) >= max_steps and (run / "summary.json").is_file():
            break
    final = check_final(run, max_steps)
    return {"kills": len(delays), "finished_before_kill": finished_early,
            "checkpoint_steps_at_kills": kill_steps, "kill_delays_s": delays, "final": final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--max-timesteps", type=int, default=1500)
    parser.add_argument("--checkpoint-freq", type=int, default=25)
    parser.add_argument("--eval-freq", type=int, default=100)
    parser.add_argument("--max-delay-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="av_td3_kill_loop_") as tmp:
        result = kill_loop(Path(tmp), args.kills, args.max_timesteps, args.checkpoint_freq, args.eval_freq,
                           args.max_delay_s, args.seed)
    result.update(benchmark="kill_loop", wall_s=round(time.perf_counter() - start, 1), machine=machine_info(),
                  settings=vars(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

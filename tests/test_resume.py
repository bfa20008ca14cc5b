"""Kill -9 in the middle of training, then ``--resume auto``: same total steps, no corrupt file."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import FAST, ROOT


def test_kill9_then_resume_auto(tmp_path):
    args = [sys.executable, str(ROOT / "scripts/train_td3.py"), "--max-timesteps", "400", "--checkpoint-freq", "60",
            "--eval-freq", "0", "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "r", *FAST,
            "--set", "algorithm.start_timesteps=40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "r" / "checkpoints" / "latest.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=False)["trainer"]["step"] >= 120:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(ckpt, weights_only=False)["trainer"]["step"]
    assert 120 <= step_at_kill < 400

    res = subprocess.run(args[:2] + ["--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "r",
                                     "--set", "logging.progress_bar=false"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {ckpt} at step {step_at_kill}" in res.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["total_timesteps"] == 400
    data = torch.load(ckpt, weights_only=False)
    assert data["trainer"]["step"] == 400
    assert not list((tmp_path / "r" / "checkpoints").glob(".*.tmp")), "temp files of the killed save were left behind"
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "records from after the checkpoint were not dropped on resume"


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    args = [sys.executable, str(ROOT / "scripts/train_td3.py"), "--max-timesteps", "100000", "--checkpoint-freq", "0",
            "--eval-freq", "0", "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "t", *FAST]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "t" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err + out and "Traceback" not in err
    assert torch.load(tmp_path / "t" / "checkpoints" / "latest.pt", weights_only=False)["trainer"]["step"] > 0

"""Crash consistency of a run: checkpoint + replay buffer as one unit, a second Ctrl-C during a save,
a run that died before its first checkpoint, two trainings on one run, run names that escape --log-dir.

Kills at an exact point are made deterministic with a small driver that wraps ``torch.save`` in the
training process (``os._exit`` = kill -9 at that instant; ``os.kill(SIGINT)`` twice = a user pressing
Ctrl-C twice while the checkpoint is being written), then calls the real ``av_td3.cli.main``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from gymnasium import spaces

from av_td3.buffers import DictReplayBuffer
from av_td3.training import checkpoint as ckpt
from conftest import FAST, ROOT, run_cli

SCRIPT = str(ROOT / "scripts/train_td3.py")

#: ``python -c DRIVER STEP ACTION train ...``: at the checkpoint of step STEP, ACTION ("kill": exit as
#: kill -9 would; "ctrl-c-twice": two SIGINTs while torch serialises it).
DRIVER = r"""
import os, signal, sys, torch
step, action = int(sys.argv[1]), sys.argv[2]
original = torch.save

class TwoCtrlC:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return (int, (0,))

def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("format") == "av-td3-checkpoint" and obj["trainer"]["step"] == step:
        if action == "kill":
            os._exit(137)
        obj = {**obj, "_bomb": TwoCtrlC()}
    return original(obj, f, *args, **kwargs)

torch.save = save
from av_td3.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _train_args(tmp_path, name, *extra):
    return ["train", "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", name, *FAST,
            "--set", "algorithm.start_timesteps=20", "--eval-freq", "0", *extra]


def _driver(tmp_path, step, action, args):
    return run_cli(["-c", DRIVER, str(step), action, *args], cwd=tmp_path)


def _latest(run):
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=False)


@pytest.mark.slow
def test_a_kill_between_the_buffer_and_its_checkpoint_resumes_a_consistent_pair(tmp_path):
    args = _train_args(tmp_path, "k", "--max-timesteps", "90", "--checkpoint-freq", "30", "--save-buffer")
    res = _driver(tmp_path, 60, "kill", args)
    assert res.returncode == 137, res.stderr[-2000:]
    run = tmp_path / "k"
    assert _latest(run)["trainer"]["step"] == 30

    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "k",
                   "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "replay buffer restored: 30 transitions" in res.stdout  # not the 60 of the killed save
    data = _latest(run)
    assert data["trainer"]["step"] == 90 and data["buffer"]["transitions"] == 90  # each step stored once
    buffers = sorted(p.name for p in (run / "checkpoints").glob("buffer*.npz"))
    assert buffers == [data["buffer"]["file"]]
    assert len(DictReplayBuffer.load(run / "checkpoints" / buffers[0])) == 90


@pytest.mark.slow
def test_resuming_an_earlier_checkpoint_moves_the_later_work_aside(tmp_path):
    base = _train_args(tmp_path, "e", "--checkpoint-freq", "30", "--save-buffer")
    assert run_cli(["-m", "av_td3.cli", *base, "--max-timesteps", "30"], cwd=tmp_path).returncode == 0
    run = tmp_path / "e"
    early = run / "checkpoints" / "early.pt"
    early.write_bytes((run / "checkpoints" / "latest.pt").read_bytes())  # like best.pt: an earlier checkpoint
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "e",
                   "--set", "training.max_timesteps=90", "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    later_steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(later_steps) == 90

    res = run_cli([SCRIPT, "--resume", str(early), "--set", "training.max_timesteps=60",
                   "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "earlier than the run's latest checkpoint" in res.stdout and "nothing deleted" in res.stdout
    # its buffer file was replaced by later saves: said so, and the buffer is refilled, never the later one
    assert "which is missing" in res.stdout and "replay buffer restored" not in res.stdout
    (aside,) = (run / "superseded").iterdir()
    assert json.loads((aside / "summary.json").read_text())["total_timesteps"] == 90
    assert torch.load(aside / "latest.pt", weights_only=False)["trainer"]["step"] == 90
    moved = [json.loads(x) for x in (aside / "metrics.jsonl").read_text().splitlines()]
    assert moved and min(r["step"] for r in moved) > 30 and max(r["step"] for r in moved) == 90
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 60
    assert json.loads((run / "summary.json").read_text())["total_timesteps"] == 60


def test_a_buffer_from_another_save_is_refused(tmp_path):
    space = spaces.Dict({"image": spaces.Box(0, 255, (2, 36, 36), np.uint8),
                         "vector": spaces.Box(-1, 1, (3,), np.float32)})
    buf = DictReplayBuffer(space, 2, 10, device="cpu")
    obs = {"image": np.zeros((2, 36, 36), np.uint8), "vector": np.zeros(3, np.float32)}
    buf.add(obs, np.zeros(2, np.float32), obs, 0.0, True)
    buf.save(tmp_path / "buffer-step5-aaaa.npz", stamp={"checkpoint_id": "aaaa", "step": 5})
    data = {"trainer": {"step": 7}, "buffer": {"file": "buffer-step5-aaaa.npz", "checkpoint_id": "bbbb", "step": 7,
                                               "transitions": 1}}
    with pytest.raises(ckpt.CheckpointMismatchError, match="was not saved with checkpoint"):
        ckpt.load_checkpoint_buffer(tmp_path / "latest.pt", data, DictReplayBuffer, "cpu")
    data["buffer"]["checkpoint_id"] = "aaaa"
    restored, why = ckpt.load_checkpoint_buffer(tmp_path / "latest.pt", data, DictReplayBuffer, "cpu")
    assert len(restored) == 1 and "1 transitions" in why


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_save_abandons_it_cleanly(tmp_path):
    args = _train_args(tmp_path, "c", "--max-timesteps", "90", "--checkpoint-freq", "30", "--save-buffer")
    res = _driver(tmp_path, 60, "ctrl-c-twice", args)
    out = res.stdout + res.stderr
    assert res.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "Traceback" not in out and "unexpected pos" not in out
    lines = [x for x in out.splitlines() if "abandoned" in x]
    assert len(lines) == 1 and "the valid checkpoint is" in lines[0] and "(step 30)" in lines[0], out[-2000:]
    run = tmp_path / "c"
    assert _latest(run)["trainer"]["step"] == 30
    assert not list((run / "checkpoints").glob(".*.tmp"))
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "c",
                   "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0 and "replay buffer restored: 30 transitions" in res.stdout, res.stderr[-2000:]
    assert _latest(run)["buffer"]["transitions"] == 90


@pytest.mark.slow
def test_a_run_that_died_before_its_first_checkpoint_can_be_started_again(tmp_path):
    args = _train_args(tmp_path, "d", "--max-timesteps", "60", "--checkpoint-freq", "30")
    assert _driver(tmp_path, 30, "kill", args).returncode == 137
    run = tmp_path / "d"
    assert (run / "metrics.jsonl").is_file() and not (run / "checkpoints" / "latest.pt").exists()

    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "d"], cwd=tmp_path)
    assert res.returncode == 2 and "stopped before its first checkpoint" in res.stderr
    assert "without --resume" in res.stderr

    res = run_cli(["-m", "av_td3.cli", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stopped before its first checkpoint" in res.stdout
    assert _latest(run)["trainer"]["step"] == 60
    (aside,) = (run / "superseded").iterdir()
    assert (aside / "metrics.jsonl").is_file()
    episodes = [json.loads(x)["episode"] for x in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["type"] == "episode"]
    assert episodes == list(range(1, len(episodes) + 1))  # the new run numbers its episodes from 1


@pytest.mark.slow
def test_a_second_training_on_the_same_run_fails_at_once(tmp_path):
    args = [sys.executable, SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "l", *FAST,
            "--max-timesteps", "100000", "--checkpoint-freq", "20", "--eval-freq", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "l" / "checkpoints" / "latest.pt").is_file():
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "l"], cwd=tmp_path,
                      timeout=120)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert f"is in use by another training (pid {first.pid}" in res.stderr and "Traceback" not in res.stderr
        assert first.poll() is None  # the first one was left alone
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "l",
                   "--set", "training.max_timesteps=1", "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert "in use" not in res.stderr  # released on exit


def test_a_lock_held_by_a_dead_process_is_no_obstacle(tmp_path):
    from av_td3.training.run_dir import RunLock, RunLockedError

    run = tmp_path / "run"
    code = f"from av_td3.training.run_dir import RunLock; RunLock({str(run)!r}).acquire(); import os; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9  # died holding it (kill -9)
    assert (run / ".lock.owner").is_file()
    with RunLock(run):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(run).acquire()


@pytest.mark.parametrize("name", ["../escaped", "a/../../escaped", "/tmp/av_td3_abs_escape", ".."])
def test_run_names_cannot_escape_the_log_dir(tmp_path, name):
    logs = tmp_path / "logs"
    res = run_cli([SCRIPT, "--max-timesteps", "10", "--device", "cpu", "--log-dir", str(logs), "--run-name", name,
                   *FAST], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "must be a plain folder name inside --log-dir" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/av_td3_abs_escape")


def test_a_second_signal_outside_a_save_stops_at_once_and_inside_a_save_abandons_it():
    from av_td3.training.trainer import TrainingAborted, _SaveAbandoned, _SignalFlag

    flag = _SignalFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signum == signal.SIGINT  # the first one only asks for a checkpoint at the end of the step
        with pytest.raises(TrainingAborted, match="second SIGINT before saving"):
            os.kill(os.getpid(), signal.SIGINT)
        flag.saving = True
        with pytest.raises(_SaveAbandoned):
            os.kill(os.getpid(), signal.SIGTERM)
        assert flag.abandoned
        os.kill(os.getpid(), signal.SIGINT)  # a third press while leaving is ignored, not a traceback
    finally:
        flag.restore()


@pytest.mark.slow
def test_two_quick_ctrl_c_never_print_a_traceback(tmp_path):
    args = [sys.executable, SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "q", *FAST,
            "--max-timesteps", "100000", "--checkpoint-freq", "0", "--eval-freq", "0", "--save-buffer"]
    proc = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "q" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.stat().st_size > 0):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err + out
    # whichever moment the second press hit (before, during or after the save), one line says where things stand
    said = [x for x in (out + err).splitlines()
            if "valid checkpoint" in x or "checkpoint saved at" in x or "no checkpoint was saved yet" in x]
    assert len(said) == 1, out[-2000:] + err[-2000:]


def test_a_separate_checkpoint_dir_is_locked_with_the_run_and_released(tmp_path):
    from av_td3.training.run_dir import RunLock, RunLockedError

    ck = tmp_path / "ck"
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path / "logs"), "--run-name", "s", *FAST,
            "--eval-freq", "0", "--checkpoint-dir", str(ck), "--save-buffer"]
    assert run_cli(base + ["--max-timesteps", "30"], cwd=tmp_path).returncode == 0
    with RunLock(ck, "--checkpoint-dir"):  # another run using this checkpoint folder right now
        res = run_cli([SCRIPT, "--resume", "auto", "--checkpoint-dir", str(ck), "--set", "training.max_timesteps=40"],
                      cwd=tmp_path, timeout=120)
        assert res.returncode == 2 and f"--checkpoint-dir {ck} is in use by another training" in res.stderr
        with pytest.raises(RunLockedError):
            RunLock(ck).acquire()
    res = run_cli([SCRIPT, "--resume", "auto", "--checkpoint-dir", str(ck), "--set", "training.max_timesteps=40",
                   "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0 and "replay buffer restored: 30 transitions" in res.stdout, res.stderr[-2000:]
    assert torch.load(ck / "latest.pt", weights_only=False)["trainer"]["step"] == 40

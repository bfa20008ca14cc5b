"""OS faults end with one clear line (path, what was being written, the fix) and exit 2 (a location the
user chose) or 1 (a fault at run time), never a traceback, and lose nothing already saved.

Permission faults run the CLI as the unprivileged user ``nobody`` (``setpriv``: root would bypass the
permission checks); the full disk is a small tmpfs. Both need root and are skipped without it; the
file-in-the-way and encoding faults run everywhere.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT, run_cli

SCRIPT = str(ROOT / "scripts/train_td3.py")
NOBODY = 65534


def _clean(res):
    return "Traceback" not in res.stderr and res.stderr.count("av-td3: error:") == 1


# -- a file where a directory is expected, bad bytes --------------------------------------------------
def test_log_dir_that_is_a_file(tmp_path):
    (tmp_path / "logs").write_text("not a folder")
    res = run_cli([SCRIPT, "--max-timesteps", "10", "--log-dir", str(tmp_path / "logs"), "--run-name", "r"],
                  cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert f"{tmp_path / 'logs'} is a file where a directory is expected" in res.stderr


def test_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path):
    (tmp_path / "ckpts").write_text("")
    res = run_cli([SCRIPT, "--max-timesteps", "60", "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "r",
                   "--checkpoint-dir", str(tmp_path / "ckpts"), *FAST], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert "--checkpoint-dir" in res.stderr and "is a file where a directory is expected" in res.stderr
    assert not (tmp_path / "r").exists()  # nothing ran, nothing to clean up


@pytest.mark.parametrize("command", [["compare", "--classical", "--episodes", "50"],
                                     ["baseline", "--episodes", "50"]])
def test_output_that_is_a_file_fails_before_the_episodes(tmp_path, command):
    (tmp_path / "out").write_text("")
    res = run_cli(["-m", "av_td3.cli", *command, "--output", str(tmp_path / "out")], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert "--output" in res.stderr and "is a file where a directory is expected" in res.stderr


def test_config_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"algorithm:\n  batch_size: 16 # \xff\xfe caf\xe9\n")
    res = run_cli([SCRIPT, "--max-timesteps", "10", "--config", str(bad)], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and _clean(res) and "is not UTF-8" in res.stderr and str(bad) in res.stderr


# -- as a non-root user ---------------------------------------------------------------------------
def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A folder ``nobody`` can read, with a short run trained by root in ``runs/r``."""
    if not _can_drop_privileges():
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="av_td3_faults_"))
    folder.chmod(0o755)
    (folder / "mpl").mkdir(mode=0o777)
    (folder / "mpl").chmod(0o777)
    res = run_cli([SCRIPT, "--max-timesteps", "30", "--device", "cpu", "--eval-freq", "0", "--log-dir",
                   str(folder / "runs"), "--run-name", "r", *FAST], cwd=folder)
    assert res.returncode == 0, res.stderr[-2000:]
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HOME": str(cwd),
           "MPLCONFIGDIR": str(Path(cwd) / "mpl")}
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_train_into_a_folder_the_user_cannot_write(shared):
    res = _as_nobody([SCRIPT, "--max-timesteps", "10", "--log-dir", str(shared / "runs"), "--run-name", "mine"],
                     shared)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert "permission denied" in res.stderr and str(shared / "runs") in res.stderr and "ls -ld" in res.stderr


def test_resume_a_run_the_user_cannot_write(shared):
    before = (shared / "runs" / "r" / "metrics.jsonl").read_bytes()
    res = _as_nobody([SCRIPT, "--resume", "auto", "--log-dir", str(shared / "runs"), "--run-name", "r",
                      "--set", "training.max_timesteps=40"], shared)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert "permission denied" in res.stderr and str(shared / "runs" / "r") in res.stderr
    assert (shared / "runs" / "r" / "metrics.jsonl").read_bytes() == before


def test_evaluate_a_checkpoint_the_user_cannot_read(shared):
    private = shared / "private.pt"
    shutil.copy(shared / "runs" / "r" / "checkpoints" / "latest.pt", private)
    private.chmod(0o600)
    res = _as_nobody(["-m", "av_td3.cli", "evaluate", "--checkpoint", str(private), "--episodes", "1",
                      "--output", str(shared / "mpl" / "eval")], shared)
    assert res.returncode == 2 and _clean(res), res.stderr[-2000:]
    assert "reading the checkpoint" in res.stderr and "permission denied" in res.stderr
    assert "corrupt" not in res.stderr


def test_evaluate_and_report_into_a_run_the_user_cannot_write(shared):
    res = _as_nobody(["-m", "av_td3.cli", "evaluate", "--checkpoint", str(shared / "runs" / "r"), "--episodes", "1"],
                     shared)
    assert res.returncode == 2 and _clean(res) and "permission denied" in res.stderr, res.stderr[-2000:]
    res = _as_nobody(["-m", "av_td3.cli", "report", str(shared / "runs" / "r")], shared)
    assert res.returncode == 2 and _clean(res) and "permission denied" in res.stderr, res.stderr[-2000:]


# -- a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk():
    """A 70 MB tmpfs: room for one 42 MB checkpoint of the default agent, not for the second save."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp(prefix="av_td3_disk_"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=70m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        folder.rmdir()
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_full_disk_at_a_save_keeps_the_last_checkpoint_and_says_so(small_disk, tmp_path):
    res = run_cli([SCRIPT, "--max-timesteps", "90", "--checkpoint-freq", "30", "--eval-freq", "0", "--device", "cpu",
                   "--log-dir", str(small_disk), "--run-name", "full", "--save-buffer", *FAST,
                   "--set", "logging.tensorboard=false", "--set", "algorithm.start_timesteps=20"], cwd=tmp_path)
    assert res.returncode == 1 and _clean(res), res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert "writing the checkpoint" in line and "no space left on the device" in line and "df -h" in line
    assert f"the valid checkpoint is {small_disk / 'full' / 'checkpoints' / 'latest.pt'} (step 30)" in line
    ckpts = small_disk / "full" / "checkpoints"
    data = torch.load(ckpts / "latest.pt", weights_only=False)
    assert data["trainer"]["step"] == 30 and (ckpts / data["buffer"]["file"]).is_file()
    assert not list(ckpts.glob(".*.tmp"))

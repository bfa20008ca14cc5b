"""Bad configs, flags and files end with one clear line and exit code 2 — never a traceback."""

import pytest

from conftest import ROOT, run_cli

SCRIPT = str(ROOT / "scripts/train_td3.py")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "algorithm.batch_sise=64"], "did you mean 'algorithm.batch_size'"),
        (["--set", "networks.cnn.learning_rate=-1"], "allowed: > 0"),
        (["--set", "algorithm.batch_size=512", "--set", "training.buffer_size=100"], "batch_size <= buffer_size"),
        (["--config", "does/not/exist.yaml"], "config file not found"),
        (["--resume", "auto", "--log-dir", "empty_logs"], "no run with a checkpoint"),
        (["--set", "training.buffer_size=100000000000"], "the largest max_size that fits is"),
    ],
)
def test_bad_input_exits_2(tmp_path, args, needle):
    res = run_cli([SCRIPT, "--max-timesteps", "10", *args], cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_scenario_flag_exits_2(tmp_path):
    res = run_cli([SCRIPT, "--scenario", "3"], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "latest.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    res = run_cli(["-m", "av_td3.cli", "evaluate", "--checkpoint", str(bad)], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "corrupt or truncated" in res.stderr and "Traceback" not in res.stderr


def test_new_run_refuses_an_existing_run_directory(tmp_path):
    # a run with a checkpoint must be resumed (one that never reached a checkpoint restarts: test_crash_units)
    (tmp_path / "logs" / "taken" / "checkpoints").mkdir(parents=True)
    (tmp_path / "logs" / "taken" / "metrics.jsonl").write_text("")
    (tmp_path / "logs" / "taken" / "checkpoints" / "latest.pt").write_bytes(b"")
    res = run_cli([SCRIPT, "--max-timesteps", "10", "--log-dir", str(tmp_path / "logs"), "--run-name", "taken"],
                  cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "already holds a run" in res.stderr and "--resume auto" in res.stderr


def test_evaluate_on_missing_gpu_or_zero_episodes_is_a_usage_error(tmp_path):
    res = run_cli(["-m", "av_td3.cli", "compare", "--classical", "--episodes", "0"], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "must be >= 1" in res.stderr

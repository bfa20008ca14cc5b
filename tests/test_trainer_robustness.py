"""The trainer under trouble: buffer checkpoints, a diverging agent, failed resumes, health checks.

Each test provokes one failure that a long run meets sooner or later and checks that the run says what
happened, keeps what it had saved, and exits the documented way.
"""

import json

import numpy as np
import pytest
import torch

from av_td3.config import load_config
from av_td3.training.diagnostics import HealthMonitor, NonFiniteLossError
from av_td3.training.trainer import Trainer
from conftest import FAST, ROOT, run_cli

SCRIPT = str(ROOT / "scripts/train_td3.py")


def _fast_overrides(*extra):
    """FAST's ``--set`` values as a list for ``load_config``."""
    return [FAST[i + 1] for i in range(0, len(FAST), 2)] + list(extra)


def test_save_buffer_before_the_first_evaluation_then_resume(tmp_path):
    # The first checkpoint comes before anything else created the checkpoints folder.
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "b", *FAST,
            "--set", "algorithm.start_timesteps=20"]
    res = run_cli(base + ["--max-timesteps", "60", "--checkpoint-freq", "30", "--eval-freq", "0", "--save-buffer"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # the buffer is saved as the checkpoint's own file, named after its step (one file left)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").glob("buffer*.npz")] == [
        torch.load(tmp_path / "b" / "checkpoints" / "latest.pt", weights_only=False)["buffer"]["file"]]

    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "b",
                   "--set", "training.max_timesteps=90", "--set", "logging.progress_bar=false"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "replay buffer restored: 60 transitions" in res.stdout
    assert "RuntimeWarning" not in res.stderr  # the restarted episode starts a new frame sequence, quietly
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["total_timesteps"] == 90


def test_truncated_buffer_file_is_a_clear_error(tmp_path):
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "t", *FAST,
            "--set", "algorithm.start_timesteps=20"]
    assert run_cli(base + ["--max-timesteps", "40", "--eval-freq", "0", "--save-buffer"], cwd=tmp_path).returncode == 0
    (buffer_file,) = (tmp_path / "t" / "checkpoints").glob("buffer-step*.npz")
    buffer_file.write_bytes(buffer_file.read_bytes()[:5000])
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "t",
                   "--set", "training.max_timesteps=60"], cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert buffer_file.name in res.stderr and "Traceback" not in res.stderr


def test_truncated_checkpoint_on_resume_keeps_the_run_intact(tmp_path):
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "c", *FAST]
    assert run_cli(base + ["--max-timesteps", "30", "--eval-freq", "0"], cwd=tmp_path).returncode == 0
    run = tmp_path / "c"
    ckpt = run / "checkpoints" / "latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in (run / "config.yaml", run / "metrics.jsonl")}
    res = run_cli([SCRIPT, "--resume", str(ckpt)], cwd=tmp_path)
    assert res.returncode == 2 and "corrupt or truncated" in res.stderr and "Traceback" not in res.stderr
    assert {p.name: p.read_bytes() for p in (run / "config.yaml", run / "metrics.jsonl")} == before


def test_resume_with_other_network_widths_is_a_usage_error_that_keeps_the_config(tmp_path):
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "w", *FAST]
    assert run_cli(base + ["--max-timesteps", "30", "--eval-freq", "0"], cwd=tmp_path).returncode == 0
    config = (tmp_path / "w" / "config.yaml").read_text()
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "w",
                   "--set", "networks.actor.hidden_layers=[64,64]", "--set", "training.max_timesteps=60"], cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "does not fit this agent's 'actor' network" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "w" / "config.yaml").read_text() == config


@pytest.mark.parametrize("args, needle", [
    (["--set", "env.scenario=3"], "allowed: >= 0 and <= 2"),
    (["--set", "algorithm.name=sac"], "'td3' or 'ddpg'"),
])
def test_out_of_range_set_values_exit_2(tmp_path, args, needle):
    res = run_cli([SCRIPT, "--max-timesteps", "10", *args], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_evaluate_names_its_own_flag_for_a_missing_checkpoint(tmp_path):
    res = run_cli(["-m", "av_td3.cli", "evaluate", "--checkpoint", "nope.pt"], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "--checkpoint nope.pt: no such checkpoint" in res.stderr


# -- in-process trainer ----------------------------------------------------------------------------
def _trainer(tmp_path, *overrides, debug=False):
    cfg = load_config(None, _fast_overrides("training.eval_freq=0", "training.checkpoint_freq=0",
                                            "logging.tensorboard=false", *overrides))
    return Trainer(cfg, tmp_path / "run", "cpu", debug=debug)


def test_a_diverging_agent_stops_with_a_checkpoint_before_the_env_sees_nan(tmp_path, capsys):
    trainer = _trainer(tmp_path, "training.max_timesteps=200", "algorithm.start_timesteps=20",
                       "logging.log_interval=1000")
    original_train = trainer.agent.train

    def train_then_break():  # update 5 leaves NaN weights; the next loss check is far away
        stats = original_train()
        if trainer.agent.total_it == 5:
            with torch.no_grad():
                for p in trainer.agent.actor.parameters():
                    p.fill_(float("nan"))
        return stats

    trainer.agent.train = train_then_break
    try:
        with pytest.raises(NonFiniteLossError, match="action became"):
            trainer.run()
    finally:
        trainer.close()
    assert list((tmp_path / "run" / "checkpoints").glob("nonfinite_step*.pt"))
    assert "[HEALTH]" in capsys.readouterr().out


def test_debug_gradient_table_follows_its_own_interval(tmp_path, capsys):
    trainer = _trainer(tmp_path, "training.max_timesteps=61", "algorithm.start_timesteps=10",
                       "logging.log_interval=1000", "logging.debug_gradient_interval=10", debug=True)
    try:
        trainer.run()
    finally:
        trainer.close()
    out = capsys.readouterr().out
    assert trainer.updates == 46  # one update per step once the buffer holds a batch of 16 (step 15)
    assert out.count("[DEBUG] CNN gradients") == 5  # updates 1, 10, 20, 30, 40


def test_health_monitor_reports_a_parked_car_and_negative_q_blowup():
    monitor = HealthMonitor(window=100)
    for _ in range(100):
        monitor.observe_step(np.array([0.0, -0.5], np.float32), speed_kmh=0.0, from_policy=True)
    problems = {r.problem for r in monitor.check({"q_min": -5e5, "q_max": 3.0}, None, updates=300)}
    assert problems == {"stationary", "q_explosion"}
    assert {r.problem for r in monitor.check({"q_min": -5e5, "q_max": 3.0}, None, updates=301)} == set()  # no repeat
    for _ in range(100):
        monitor.observe_step(np.array([0.1, 0.5], np.float32), speed_kmh=20.0, from_policy=True)
    cleared = monitor.check({"q_min": -3.0, "q_max": 3.0}, None, updates=302)
    assert {(r.problem, r.active) for r in cleared} == {("stationary", False), ("q_explosion", False)}


def test_short_runs_watch_the_policy_over_a_shorter_window(tmp_path):
    trainer = _trainer(tmp_path, "training.max_timesteps=1000", "algorithm.start_timesteps=100")
    trainer.close()
    assert trainer.health.actions.maxlen == 450  # half of the 900 policy steps; 1000 in long runs


def test_evaluating_a_checkpoint_does_not_allocate_the_training_buffer(tmp_path, monkeypatch):
    from av_td3.buffers import memory as memory_module
    from av_td3.training.policies import load_checkpoint_policy

    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "e", *FAST]
    assert run_cli(base + ["--max-timesteps", "30", "--eval-freq", "0"], cwd=tmp_path).returncode == 0
    # 5,000 transitions need ~36 MB; a one-batch buffer for acting fits in 4 MB.
    monkeypatch.setattr(memory_module, "available_memory_bytes", lambda: 4 * 2**20)
    policy, cfg, algo = load_checkpoint_policy(tmp_path / "e", device="cpu")
    assert cfg.training.buffer_size == 5000 and algo == "td3"  # the run's config, as it was trained
    obs = {"image": np.zeros((4, 84, 84), np.uint8), "vector": np.zeros(23, np.float32)}
    assert policy(obs).shape == (2,)


def test_atomically_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from av_td3.io import atomic_write_text

    path = atomic_write_text(tmp_path / "sub" / "config.yaml", "a: 1\n")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600
    assert path.read_text() == "a: 1\n"

"""End to end: the seed's diagnostic command trains, prints the seed's lines and changes the CNN."""

import json

from conftest import FAST, ROOT, run_cli


def test_seed_diagnostic_command(tmp_path):
    # The seed's command, shortened from 1000 to 150 steps (its default start_timesteps=10000 exceeds
    # the run, so exploration is cut to 10% and updates start once a batch is stored).
    res = run_cli([str(ROOT / "scripts/train_td3.py"), "--scenario", "0", "--max-timesteps", "150", "--debug",
                   "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "diag", *FAST], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for line in ("[AGENT] CNN optimizer initialized with lr=0.0001",
                 "[AGENT] CNN mode: training (gradients enabled)",
                 "[AGENT] Using DictReplayBuffer for end-to-end CNN training",
                 "[AGENT] CNN passed to TD3Agent for end-to-end training",
                 "[AGENT] DictReplayBuffer enabled for gradient flow"):
        assert line in out, f"missing seed line {line!r}"
    assert "random exploration shortened to 15 steps" in out
    assert "[DEBUG] CNN gradients" in out and "NO GRADIENT" not in out
    run = tmp_path / "diag"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_timesteps"] == 150
    assert summary["updates"] == 150 - 15  # one update per step from step 15 (buffer then holds a batch of 16)
    assert summary["cnn_weight_change"] > 0
    for key in ("episodes", "mean_episode_reward", "mean_episode_length", "mean_speed_kmh", "eval_success_rate",
                "eval_route_completion", "env_steps_per_s", "updates_per_s", "wall_time_s"):
        assert key in summary
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"episode", "train", "eval", "summary"} <= {r["type"] for r in records}
    assert (run / "checkpoints" / "latest.pt").is_file()
    assert (run / "config.yaml").is_file()
    assert list((run / "tensorboard").glob("events.*"))
    report = (run / "report.md").read_text()
    assert "Compare with Previous Failure" in report and (run / "plots" / "reward.png").is_file()


def test_frozen_rollback_mode_trains_with_flat_states(tmp_path):
    """The seed's rollback plan (algorithm.use_end_to_end_cnn: false) runs through the whole app."""
    res = run_cli([str(ROOT / "scripts/train_td3.py"), "--max-timesteps", "100", "--device", "cpu", "--log-dir",
                   str(tmp_path), "--run-name", "frozen", *FAST, "--set", "algorithm.use_end_to_end_cnn=false"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[AGENT] CNN mode: frozen (no gradients)" in res.stdout
    assert "[AGENT] Using standard ReplayBuffer (flat states)" in res.stdout
    summary = json.loads((tmp_path / "frozen" / "summary.json").read_text())
    assert summary["updates"] == 100 - 15 and summary["cnn_weight_change"] == 0.0

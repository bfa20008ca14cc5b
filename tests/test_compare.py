"""``compare`` on tiny policies: the table, the Mann–Whitney statistics and the bar charts.

Also the CLI path end to end: a tiny trained checkpoint evaluated with a video, then compared against
the classical controller.
"""

import json

import gymnasium
import numpy as np
import pytest

import av_td3  # noqa: F401  (registers the envs)
from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.report.comparison import compare_policies, write_comparison
from conftest import FAST, ROOT, run_cli

SHORT_ENV = {"env": {"npc_count": 0, "max_episode_steps": 60}}


def _make_env():
    return gymnasium.make("av_td3/Town-v0", config=SHORT_ENV)


def test_compare_two_tiny_policies(tmp_path):
    env = _make_env()
    driver = PurePursuit(wheelbase_m=env.unwrapped.wheelbase_m, target_speed_kmh=30.0)
    env.close()
    policies = {"TD3": lambda obs: driver(obs), "Still": lambda obs: np.array([0.0, -1.0], np.float32)}
    comparison = compare_policies(policies, _make_env, episodes=4, seed=3, scenario=0)
    paths = write_comparison(comparison, tmp_path)

    data = json.loads(paths["json"].read_text())
    assert set(data["policies"]) == {"TD3", "Still"} and data["reference"] == "TD3"
    tests = {t["metric"]: t for t in data["tests"]}
    assert set(tests) == {"episode reward", "route completion"}
    # 4 vs 4 episodes, every driving episode beats every standing one: U is its maximum, 4 * 4 = 16
    assert tests["episode reward"]["U"] == 16.0
    assert tests["episode reward"]["p_value"] < 0.05
    md = paths["markdown"].read_text()
    assert "| Metric | TD3 | Still |" in md and "Mann–Whitney U" in md
    assert md.count("| Still | ") == 2
    for key in ("success_rate", "episode_reward", "collisions_per_km"):
        assert (tmp_path / f"compare_{key}.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    res = run_cli([str(ROOT / "scripts/train_td3.py"), "--max-timesteps", "60", "--device", "cpu", "--log-dir", str(logs),
                   "--run-name", "tiny", *FAST, "--set", "env.npc_count=0", "--set", "env.route=default"], cwd=logs)
    assert res.returncode == 0, res.stderr[-2000:]
    return logs / "tiny"


def test_evaluate_cli_with_video(tiny_run, tmp_path):
    res = run_cli(["-m", "av_td3.cli", "evaluate", "--checkpoint", str(tiny_run), "--episodes", "2", "--video",
                   "--output", str(tmp_path), "--device", "cpu", "--set", "evaluation.video_format=gif"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert len(result["episodes"]) == 2
    agg = result["aggregate"]["success_rate"]
    assert agg["ci_low"] <= agg["mean"] <= agg["ci_high"]
    assert "| Success rate (%) |" in (tmp_path / "eval.md").read_text()
    gif = tmp_path / "eval_video.gif"
    assert gif.stat().st_size > 5_000


def test_compare_cli_checkpoint_vs_classical(tiny_run, tmp_path):
    res = run_cli(["-m", "av_td3.cli", "compare", "--episodes", "2", "--checkpoint", f"TD3={tiny_run}", "--classical",
                   "--output", str(tmp_path), "--device", "cpu", "--set", "env.npc_count=0",
                   "--set", "env.max_episode_steps=1000"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert set(data["policies"]) == {"TD3", "Classical"}
    assert data["policies"]["Classical"]["aggregate"]["success_rate"]["mean"] == 1.0  # no traffic: it always arrives
    assert len(data["tests"]) == 2

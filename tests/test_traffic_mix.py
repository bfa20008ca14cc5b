"""One policy for every density (``env.traffic_mix``) on random routes: the town draws the NPC count per
training episode, evaluation keeps ``env.scenario``, and a short training with both runs end to end."""

from __future__ import annotations

import json

import pytest

from av_td3.config import ConfigError, load_config
from av_td3.envs.town.env import TownEnv
from av_td3.training.setup import make_env
from conftest import FAST, ROOT, run_cli


def test_the_training_env_draws_the_density_per_episode_from_the_seed():
    env = TownEnv(traffic_mix=[0, 1, 2], route="random")
    counts = []
    for seed in range(12):
        env.reset(seed=seed)
        counts.append(env.npc_count)
        assert len(env.traffic.x) == env.npc_count
    assert set(counts) == {20, 50, 100}
    env.reset(seed=3)
    first = env.npc_count
    env.reset(seed=3)
    assert env.npc_count == first  # seeded


def test_evaluation_envs_play_env_scenario():
    cfg = load_config(None, ["env.traffic_mix=[0,1,2]", "env.scenario=1"])
    eval_env = make_env(cfg)
    train_env = make_env(cfg, training=True)
    seen = set()
    for seed in range(8):
        eval_env.reset(seed=seed)
        train_env.reset(seed=seed)
        assert eval_env.unwrapped.npc_count == 50
        seen.add(train_env.unwrapped.npc_count)
    assert len(seen) > 1


@pytest.mark.parametrize("overrides, message", [
    (["env.traffic_mix=[0,3]"], "holds scenarios 0, 1 or 2"),
    (["env.traffic_mix=[0,1]", "env.npc_count=5"], "set only one"),
    (["env.traffic_mix=[0,1]", "env.name=carla"], "supported by the town only"),
])
def test_bad_mixes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_short_training_with_mixed_traffic_and_random_routes(tmp_path):
    res = run_cli([str(ROOT / "scripts/train_td3.py"), "--max-timesteps", "120", "--device", "cpu", "--log-dir",
                   str(tmp_path), "--run-name", "mix", *FAST, "--set", "env.traffic_mix=[0,1,2]",
                   "--set", "env.route=random", "--set", "env.max_episode_steps=30"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "mix" / "summary.json").read_text())
    assert summary["total_timesteps"] == 120 and summary["episodes"] >= 4
    saved = (tmp_path / "mix" / "config.yaml").read_text()
    assert "traffic_mix" in saved and "route: random" in saved

"""The reward design rule of reward version 1 (the additive reward, kept for comparison) over whole town
episodes: following the route safely at the target speed earns clearly more than standing still,
spinning, crawling or leaving the road. Version 2 (the default) is tested in test_reward_v2_rule.py."""

from __future__ import annotations

import numpy as np
import pytest

from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.envs.town.env import TownEnv


def _episode(policy) -> tuple[float, dict, list[dict]]:
    env = TownEnv(npc_count=0, route="default", config={"reward": {"version": 1}})
    obs, info = env.reset(seed=0)
    total, infos = 0.0, []
    while True:
        a = policy(obs) if callable(policy) else np.asarray(policy, dtype=np.float32)
        obs, r, term, trunc, info = env.step(a)
        total += r
        infos.append(info)
        if term or trunc:
            return total, info, infos


@pytest.fixture(scope="module")
def returns() -> dict[str, tuple[float, dict, list[dict]]]:
    return {
        "route": _episode(PurePursuit(target_speed_kmh=30.0)),
        "crawl": _episode(PurePursuit(target_speed_kmh=12.0)),
        "still": _episode([0.0, -1.0]),
        "spin": _episode([1.0, 0.4]),
        "off_road": _episode([0.3, 0.6]),
    }


def test_route_following_is_clearly_the_best(returns):
    best, info, _ = returns["route"]
    assert info["success"]
    for name in ("still", "spin", "off_road"):
        assert best > 100.0 + 5.0 * max(returns[name][0], 1.0), name
    assert best > 1.5 * returns["crawl"][0]


def test_bad_behaviours_score_zero_or_less(returns):
    assert returns["still"][0] == pytest.approx(0.0, abs=1e-6)
    assert returns["still"][1]["termination_reason"] == "stalled"
    assert returns["spin"][0] < 0.0 and returns["off_road"][0] < 0.0
    assert returns["off_road"][1]["termination_reason"] == "off_road"


def test_goal_bonus_is_paid_once_and_no_term_dominates(returns):
    _, _, infos = returns["route"]
    goals = [i["reward_components"]["goal"] for i in infos]
    assert sum(g > 0 for g in goals) == 1 and goals[-1] > 0
    sums = {k: sum(i["reward_components"][k] for i in infos) for k in infos[0]["reward_components"]}
    # Over a good episode the positive terms are of the same order; penalties are small.
    assert 0.2 < sums["progress"] / sums["efficiency"] < 5.0
    assert sums["goal"] < sums["efficiency"]
    per_step = np.array([sum(i["reward_components"].values()) for i in infos])
    assert per_step.max() <= 15.0 and per_step[:-1].max() < 2.0

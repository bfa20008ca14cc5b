"""The design rule of reward version 2 (the default) over whole scripted town episodes.

Five behaviours on the default route without traffic, each scripted from the contract vector with the
pure-pursuit controller: drive the route safely at the 30 km/h target; the same at 45 km/h with jerky
pedals (full throttle / full brake every 3 steps); weave across the lane line; drive safely and then leave
the road at 60% of the route (an infraction, like a collision); stand still. Safe and smooth must be
clearly the best, standing still clearly the worst, and the crash worse than finishing slowly (25 km/h).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.envs.config import RewardConfig
from av_td3.envs.contract import LATERAL_SCALE_M
from av_td3.envs.town.env import TownEnv

GAMMA = 0.99


def _episode(policy) -> dict:
    env = TownEnv(npc_count=0, route="default")
    obs, info = env.reset(seed=0)
    rewards, invasions, t, sums = [], 0, 0, {}
    while True:
        obs, r, term, trunc, info = env.step(policy(obs, info, t))
        rewards.append(r)
        for k, v in info["reward_components"].items():
            sums[k] = sums.get(k, 0.0) + v
        invasions += bool(info["lane_invasion"])
        t += 1
        if term or trunc:
            discounts = GAMMA ** np.arange(len(rewards))
            return {"return": float(sum(rewards)), "discounted": float(np.dot(discounts, rewards)),
                    "info": info, "invasion_steps": invasions, "components": sums}


def _weave(pp: PurePursuit, amplitude_m: float = 1.0, period_steps: int = 100):
    """Pure pursuit on a path shifted sideways by a sine: the car swings across the centre line."""

    def policy(obs, info, t):
        v = obs["vector"].astype(np.float64)
        shift = amplitude_m * math.sin(2.0 * math.pi * t / period_steps)
        v[4::2] += shift / 20.0           # waypoints' y (right), over the 20 m lookahead normaliser
        v[1] -= shift / LATERAL_SCALE_M   # and the lateral deviation it implies
        return pp({"vector": v})

    return policy


@pytest.fixture(scope="module")
def episodes() -> dict[str, dict]:
    safe, fast, slow = PurePursuit(target_speed_kmh=30.0), PurePursuit(target_speed_kmh=45.0), PurePursuit(target_speed_kmh=25.0)

    def jerky(obs, info, t):
        return np.array([fast(obs)[0], 1.0 if (t // 3) % 2 == 0 else -1.0], dtype=np.float32)

    def crash_at_60(obs, info, t):
        a = safe(obs)
        if info["route_completion"] >= 0.6:
            a[0] = 1.0  # full right into the kerb
        return a

    return {
        "safe": _episode(lambda o, i, t: safe(o)),
        "jerky_fast": _episode(jerky),
        "weave": _episode(_weave(PurePursuit(target_speed_kmh=30.0))),
        "crash_at_60": _episode(crash_at_60),
        "still": _episode(lambda o, i, t: np.array([0.0, -1.0], dtype=np.float32)),
        "slow_finish": _episode(lambda o, i, t: slow(o)),
    }


def test_scripts_do_what_they_say(episodes):
    assert episodes["safe"]["info"]["success"] and episodes["safe"]["invasion_steps"] == 0
    assert episodes["slow_finish"]["info"]["success"]
    assert episodes["jerky_fast"]["info"]["route_completion"] > 0.9
    assert episodes["weave"]["invasion_steps"] > 50
    assert episodes["crash_at_60"]["info"]["termination_reason"] == "off_road"
    assert 0.6 <= episodes["crash_at_60"]["info"]["route_completion"] < 0.7
    assert episodes["still"]["info"]["termination_reason"] == "stalled"


def test_safe_and_smooth_is_clearly_the_best(episodes):
    best = episodes["safe"]["return"]
    assert best > 250.0  # about +1 per metre of the 284 m route
    for name in ("jerky_fast", "weave", "crash_at_60", "still"):
        assert best > 1.5 * episodes[name]["return"], name
        assert episodes["safe"]["discounted"] > episodes[name]["discounted"], name


def test_standing_still_is_clearly_the_worst(episodes):
    assert episodes["still"]["return"] == pytest.approx(0.0, abs=1e-9)
    for name in ("jerky_fast", "weave", "crash_at_60", "slow_finish"):
        assert episodes[name]["return"] > 40.0, name


def test_a_crash_is_worse_than_finishing_slowly(episodes):
    assert episodes["crash_at_60"]["return"] < episodes["slow_finish"]["return"] - 100.0
    # Finishing later is discounted more: the target speed is still the better choice.
    assert episodes["safe"]["discounted"] > episodes["slow_finish"]["discounted"]


def test_components_say_what_each_penalty_cost(episodes):
    """The components sum to the return; the jerky run loses most to comfort and overspeed (efficiency),
    the weave to lane keeping, the crash to safety (the infraction penalty)."""
    for name, ep in episodes.items():
        assert sum(ep["components"].values()) == pytest.approx(ep["return"], abs=1e-6), name
    penalties = ("efficiency", "lane_keeping", "comfort", "safety")

    def worst(name):
        return min(penalties, key=lambda k: episodes[name]["components"][k])

    assert worst("weave") == "lane_keeping"
    assert episodes["crash_at_60"]["components"]["safety"] <= -RewardConfig().infraction_penalty
    jerky = episodes["jerky_fast"]["components"]
    assert jerky["comfort"] < 3 * episodes["safe"]["components"]["comfort"] and jerky["efficiency"] < -20.0

"""Env steps per second with an 84x84 camera, one process: our town vs highway-env, in one run.

    python benchmarks/env_speed.py [--seconds 6] [--no-highway]

Ours: ``av_td3/Town-v0`` through ``gymnasium.make`` (default wrappers), front camera 4x84x84, scenario
0/1/2 (20/50/100 NPCs), resets included, with random exploration actions (steer ~ N(0, 0.3), throttle
~ N(0.5, 0.3): short episodes, many resets) and with the pure-pursuit driver (long episodes; its own
compute is included). Reference: highway-env ``highway-v0`` with GrayscaleObservation 84x84 stacked 4,
ContinuousAction, simulation frequency = policy frequency = 20 Hz, the same vehicle counts, random
actions. Each configuration runs for ``--seconds`` of wall time. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # highway-env renders its observation off-screen
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import av_td3  # noqa: E402,F401  (registers av_td3/Town-v0)
from av_td3.baselines.pure_pursuit import PurePursuit  # noqa: E402
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

TARGETS = {"town_scenario_0": 1000.0, "town_scenario_2": 500.0}


def _time_loop(env: gym.Env, act, seconds: float, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    steps = resets = 0
    start = time.perf_counter()
    while True:
        for _ in range(50):  # check the clock every 50 steps
            obs, _, terminated, truncated, _ = env.step(act(obs))
            steps += 1
            if terminated or truncated:
                obs, _ = env.reset()
                resets += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return {
        "steps": steps,
        "resets": resets,
        "seconds": round(elapsed, 3),
        "steps_per_s": round(steps / elapsed, 1),
        "mean_episode_steps": round(steps / resets, 1) if resets else None,  # None: no episode ended
    }


def bench_town(scenario: int, policy: str, seconds: float) -> dict:
    env = gym.make("av_td3/Town-v0", scenario=scenario)
    if policy == "random":
        rng = np.random.default_rng(0)

        def act(_obs):
            return np.clip([rng.normal(0.0, 0.3), rng.normal(0.5, 0.3)], -1.0, 1.0).astype(np.float32)
    else:
        act = PurePursuit(wheelbase_m=env.unwrapped.wheelbase_m)
    env.reset(seed=0)  # build the map (once per process) outside the timed loop
    out = {"env": "av_td3/Town-v0", "scenario": scenario, "vehicles": env.unwrapped.npc_count, "policy": policy}
    out.update(_time_loop(env, act, seconds, seed=0))
    env.close()
    return out


def bench_highway(vehicles: int, seconds: float) -> dict:
    import highway_env

    gym.register_envs(highway_env)
    config = {
        "observation": {
            "type": "GrayscaleObservation",
            "observation_shape": (84, 84),
            "stack_size": 4,
            "weights": [0.2989, 0.5870, 0.1140],
            "scaling": 1.75,
        },
        "action": {"type": "ContinuousAction"},
        "simulation_frequency": 20,
        "policy_frequency": 20,
        "vehicles_count": vehicles,
        "duration": 50,  # seconds of simulated time, i.e. 1000 steps at 20 Hz like ours
    }
    env = gym.make("highway-v0", config=config)
    env.action_space.seed(0)
    out = {"env": "highway-v0", "vehicles": vehicles, "policy": "random", "highway_env": highway_env.__version__}
    out.update(_time_loop(env, lambda _obs: env.action_space.sample(), seconds, seed=0))
    env.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="wall time per configuration")
    ap.add_argument("--no-highway", action="store_true", help="skip the highway-env reference")
    args = ap.parse_args(argv)

    results = [bench_town(s, "random", args.seconds) for s in (0, 1, 2)]
    results += [bench_town(s, "pure_pursuit", args.seconds) for s in (0, 2)]
    if not args.no_highway:
        results += [bench_highway(n, args.seconds) for n in (20, 50, 100)]

    def rate(env, vehicles, policy="random"):
        for r in results:
            if r["env"] == env and r["vehicles"] == vehicles and r["policy"] == policy:
                return r["steps_per_s"]
        return None

    summary = {
        "town_scenario_0_steps_per_s": rate("av_td3/Town-v0", 20),
        "town_scenario_2_steps_per_s": rate("av_td3/Town-v0", 100),
        "targets_steps_per_s": TARGETS,
        "targets_met": bool(
            min(r["steps_per_s"] for r in results if r["env"] == "av_td3/Town-v0" and r["vehicles"] == 20)
            >= TARGETS["town_scenario_0"]
            and min(r["steps_per_s"] for r in results if r["env"] == "av_td3/Town-v0" and r["vehicles"] == 100)
            >= TARGETS["town_scenario_2"]
        ),
    }
    for n in (20, 50, 100):
        ours, ref = rate("av_td3/Town-v0", n), rate("highway-v0", n)
        if ours and ref:
            summary[f"speedup_vs_highway_{n}_vehicles"] = round(ours / ref, 1)
    doc = {
        "benchmark": "env_speed",
        "machine": machine_info(),
        "image": [4, 84, 84],
        "results": results,
        "summary": summary,
    }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()

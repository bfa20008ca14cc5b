"""Where does a policy cross lane lines? Plays seeded test episodes on the town and describes each crossing.

A crossing starts on the step a lane line comes between the ego's wheels (``info["lane_invasion"]`` turns
true; ``av-td3 compare`` counts the same onsets per km). For each one it records where the ego was: in a
junction, a corner or on a straight road (distance to the nearest map node of that kind), which side of
the lane centre (``left`` = toward the oncoming lane, ``right`` = toward the road edge), what the route
does around it (turn angle over the 15 m before and after, + = left), speed, and how many steps the line
stayed between the wheels. It prints JSON with every crossing and counts by place, side and turn.

    python benchmarks/lane_crossings.py --checkpoint runs/<run> --episodes 20          # test seeds 10000+
    python benchmarks/lane_crossings.py --classical --episodes 20                        # the reference
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from av_td3.config import load_config
from av_td3.envs.town.map import CORNER_RADIUS_M, JUNCTION_RADIUS_M
from av_td3.training.setup import make_env
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)


def place_of(town, x: float, y: float) -> str:
    """``junction`` / ``corner`` inside a node's turning area, else ``road``."""
    d = np.hypot(town.nodes[:, 0] - x, town.nodes[:, 1] - y)
    k = int(np.argmin(d))
    kind = town.node_kind[k]
    radius = {"junction": JUNCTION_RADIUS_M, "corner": CORNER_RADIUS_M}.get(kind, 0.0)
    return kind if d[k] <= radius + 2.0 else "road"


def route_turn_deg(route, progress_m: float, span_m: float = 15.0) -> float:
    """Heading change of the route from ``progress - span`` to ``progress + span``, degrees (+ = left)."""
    _, _, h0 = route.point_at(max(progress_m - span_m, 0.0))
    _, _, h1 = route.point_at(min(progress_m + span_m, route.length_m))
    return math.degrees(math.remainder(h1 - h0, 2.0 * math.pi))


def crossings_of_episode(env, policy, seed: int) -> tuple[list[dict], float, bool]:
    """Play one episode; returns ``(crossings, distance_m, success)``."""
    obs, info = env.reset(seed=seed)
    town, out, current = env.unwrapped.map, [], None
    while True:
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
        if info["lane_invasion"]:
            if current is None:
                ego = env.unwrapped.vehicle
                turn = route_turn_deg(env.unwrapped.route, info["progress_m"])
                current = {"seed": seed, "progress_m": round(info["progress_m"], 1),
                           "place": place_of(town, ego.x, ego.y),
                           # lateral_m > 0 = right of the lane centre (RouteProjection)
                           "side": "right" if info["lateral_deviation_m"] > 0 else "left",
                           "lateral_m": round(info["lateral_deviation_m"], 2),
                           "route_turn_deg": round(turn, 1),
                           "turn": "left" if turn > 20 else "right" if turn < -20 else "straight",
                           "speed_kmh": round(info["speed_kmh"], 1), "steps_on_line": 0}
                out.append(current)
            current["steps_on_line"] += 1
        else:
            current = None
        if terminated or truncated:
            return out, float(info["distance_m"]), bool(info["success"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="a run directory or checkpoint file")
    who.add_argument("--classical", action="store_true", help="the classical controller")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--scenario", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="first episode seed (default: evaluation.seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()

    if a.classical:
        from av_td3.baselines.classical import make_classical_policy

        cfg = load_config(None, [f"env.scenario={a.scenario}"])
        controller = make_classical_policy(cfg)
        env = make_env(cfg)

        def policy(obs, info):
            return controller(obs, info)
    else:
        from av_td3.training.policies import load_checkpoint_policy

        act, cfg, _ = load_checkpoint_policy(a.checkpoint, [f"env.scenario={a.scenario}"], a.device)
        env = make_env(cfg)

        def policy(obs, info):
            return act(obs)
    if cfg.env.name != "town":
        p.error("lane_crossings.py reads the town's map; the run was trained on " + cfg.env.name)
    first = cfg.evaluation.seed if a.seed is None else a.seed
    crossings, km, successes = [], 0.0, 0
    for seed in range(first, first + a.episodes):
        if a.classical:
            controller.reset(env)
        found, metres, success = crossings_of_episode(env, policy, seed)
        crossings += found
        km += metres / 1000.0
        successes += success
    counts = Counter(f"{c['place']}/{c['side']}/{c['turn']}" for c in crossings)
    result = {
        "benchmark": "lane_crossings", "policy": "classical" if a.classical else a.checkpoint,
        "scenario": a.scenario, "episodes": a.episodes, "first_seed": first, "km": round(km, 3),
        "success_rate": successes / a.episodes, "crossings": len(crossings),
        "crossings_per_km": round(len(crossings) / km, 2) if km > 0 else None,
        "by_place_side_turn": dict(counts.most_common()),
        "by_place": dict(Counter(c["place"] for c in crossings).most_common()),
        "by_side": dict(Counter(c["side"] for c in crossings).most_common()),
        "mean_steps_on_line": round(float(np.mean([c["steps_on_line"] for c in crossings])), 1) if crossings else 0,
        "every_crossing": crossings, "machine": machine_info(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The classical PID + pure-pursuit baseline on the town: success rate and driving metrics per scenario.

Runs ``make_classical_policy(cfg)`` on the default route, with no NPCs and at scenarios 0/1/2
(20/50/100 NPCs), ``--episodes`` seeded episodes each (seeds ``seed, seed + 1, ...``: the same episodes
``av-td3 baseline`` and ``av-td3 compare`` play), and prints one JSON object: per setting the aggregate
metrics of ``evaluate(...).aggregate()`` (mean and 95% CI: Wilson for rates, Student t for means,
bootstrap for per-km rates) and the count of each termination reason.

    python benchmarks/classical_baseline.py --episodes 20
    python benchmarks/classical_baseline.py --episodes 5 --set classical.target_speed_kmh=25
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import sys
import time

from av_td3.baselines.classical import make_classical_policy
from av_td3.config import load_config
from av_td3.envs.town.env import TownEnv
from av_td3.training.evaluation import evaluate
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

#: Aggregate metrics reported (keys of ``EvaluationResult.aggregate()``).
REPORTED = ("success_rate", "route_completion", "mean_speed_kmh", "collisions_per_km", "lane_invasions_per_km",
            "off_road_rate", "min_ttc_s", "mean_abs_jerk_mps3", "episode_reward", "episode_length")


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None




def run_setting(cfg, scenario: int, npc_count: int | None, episodes: int, seed: int) -> dict:
    """Evaluate the controller on one setting; JSON-ready dict."""
    env = TownEnv(scenario=scenario, config=cfg, npc_count=npc_count)
    policy = make_classical_policy(cfg)
    start = time.perf_counter()
    try:
        result = evaluate(env, policy, episodes, seed)
    finally:
        env.close()
    agg = result.aggregate()
    return {
        "scenario": scenario,
        "npcs": env.npc_count,
        "episodes": episodes,
        "metrics": {k: {s: _finite(v) for s, v in agg[k].items()} for k in REPORTED},
        "termination_reasons": dict(collections.Counter(e.termination_reason for e in result.episodes)),
        # The mean of per-episode minimum TTCs mixes in 1000 s ("never closing in"); this count does not.
        "episodes_with_min_ttc_below_2s": sum(e.min_ttc_s < 2.0 for e in result.episodes),
        "wall_s": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="seeded episodes per setting")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: evaluation.seed)")
    parser.add_argument("--scenarios", type=int, nargs="+", default=[0, 1, 2], choices=(0, 1, 2))
    parser.add_argument("--no-empty", action="store_true", help="skip the no-NPC setting")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. classical.speed_kp=0.6 (repeatable)")
    args = parser.parse_args(argv)
    cfg = load_config(None, ["env.route=default", *args.overrides])
    seed = cfg.evaluation.seed if args.seed is None else args.seed
    settings = ([] if args.no_empty else [("no_npcs", 0, 0)]) + [(f"scenario_{s}", s, None) for s in args.scenarios]
    out = {
        "benchmark": "classical_baseline",
        "env": "town", "route": "default", "seed": seed,
        "classical": cfg.classical.model_dump(),
        "machine": machine_info(),
        "date": datetime.date.today().isoformat(),
        "results": {name: run_setting(cfg, scenario, npcs, args.episodes, seed) for name, scenario, npcs in settings},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

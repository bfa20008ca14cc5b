"""Collection throughput: env steps per second with N parallel town envs vs one, in one run.

    python benchmarks/env_collection.py [--envs 1 2] [--seconds 8] [--mode async] [--scenario 0]

What the trainer does per vector step, minus the learning: N random throttle-biased actions, one
``step`` of N envs (``envs/vector.py``: gymnasium's vector API, async = one process per env with
shared-memory images; N = 1 is the single env in process, the reference), finished envs reset with
their own seeds. Each configuration runs ``--seconds`` of wall time after one warm-up step; the
speed-up of each N over N = 1 is in ``summary``. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from av_td3.config import load_config
from av_td3.envs.vector import EnvBatch, make_vector_env, select_envs
from av_td3.training.setup import make_env
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)


def collect(num_envs: int, mode: str, seconds: float, scenario: int) -> dict:
    cfg = load_config(None, [f"env.scenario={scenario}"])
    envs = EnvBatch.single(make_env(cfg)) if num_envs == 1 else EnvBatch(make_vector_env(cfg, num_envs, mode))
    rng = np.random.default_rng(0)
    try:
        seeds = iter(range(10**9))
        obs, _ = envs.reset([next(seeds) for _ in range(num_envs)])
        steps = resets = 0
        start = None
        while True:
            actions = np.clip(np.stack([rng.normal(0.0, 0.3, num_envs), rng.normal(0.5, 0.3, num_envs)], 1),
                              -1, 1).astype(np.float32)
            next_obs, _, terminated, truncated, _ = envs.step(actions)
            done = terminated | truncated
            obs = next_obs
            if done.any():
                reset_obs, _ = envs.reset([next(seeds) if d else None for d in done], done)
                obs = reset_obs if done.all() else select_envs(reset_obs, done, next_obs)
                resets += int(done.sum())
            if start is None:  # the first step (process start-up, map build) is not timed
                start, steps, resets = time.perf_counter(), 0, 0
                continue
            steps += num_envs
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    finally:
        envs.close()
    return {"num_envs": num_envs, "mode": "in-process" if num_envs == 1 else mode, "scenario": scenario,
            "steps": steps, "resets": resets, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 2], help="env counts to time (1 = the reference)")
    ap.add_argument("--seconds", type=float, default=8.0, help="wall time per configuration")
    ap.add_argument("--mode", choices=["async", "sync"], default="async")
    ap.add_argument("--scenario", type=int, default=0)
    args = ap.parse_args(argv)
    counts = sorted(set([1, *args.envs]))
    results = [collect(n, args.mode, args.seconds, args.scenario) for n in counts]
    base = results[0]["steps_per_s"]
    doc = {
        "benchmark": "env_collection",
        "machine": machine_info(),
        "image": [4, 84, 84],
        "results": results,
        "summary": {f"speedup_{r['num_envs']}_envs_vs_1": round(r["steps_per_s"] / base, 2) for r in results[1:]},
        "cores": os.cpu_count(),
    }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()

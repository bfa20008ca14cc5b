"""Replay memory per transition and sample() time: our DictReplayBuffer vs SB3's and the seed design.

Observation (4, 84, 84) uint8 + (23,) float32, action (2,) float32 (the contract's defaults).

- ours: ``DictReplayBuffer.nbytes / max_size`` (every allocated array counted, filled or not).
- SB3: ``stable_baselines3.common.buffers.DictReplayBuffer`` built with the same spaces
  (``optimize_memory_usage=False``: SB3 does not support it for dict observations); all its arrays
  divided by its ``buffer_size``.
- seed design: float32 obs and next_obs stored per transition, computed analytically.
- sample(256) wall time, median of repeated calls on a filled buffer, for ours (n_step 1 and 3) and SB3.

Prints one JSON object; exits non-zero if ours exceeds the 7,500 bytes/transition goal (docs/design.md §4).

    python benchmarks/buffer_memory.py [--fill 20000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from av_td3 import DictReplayBuffer
from av_td3.envs.contract import FrameStack, make_action_space, make_observation_space
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

GOAL_BYTES = 7_500
BATCH = 256


def contract_episodes(add, steps: int, episode_len: int = 1000, seed: int = 0) -> float:
    """Feed ``steps`` transitions of contract-style episodes to ``add``; returns mean add() time, µs."""
    rng = np.random.default_rng(seed)
    fs = FrameStack(4)

    def reset():
        return {
            "image": fs.reset(rng.integers(0, 256, (84, 84), dtype=np.uint8)),
            "vector": rng.normal(size=23).astype(np.float32),
        }

    obs, t_ep, spent = reset(), 0, 0.0
    for _ in range(steps):
        next_obs = {
            "image": fs.push(rng.integers(0, 256, (84, 84), dtype=np.uint8)),
            "vector": rng.normal(size=23).astype(np.float32),
        }
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        t_ep += 1
        truncated = t_ep == episode_len
        start = time.perf_counter()
        add(obs, action, next_obs, float(rng.normal()), False, truncated)
        spent += time.perf_counter() - start
        obs = next_obs
        if truncated:
            obs, t_ep = reset(), 0
    return spent / steps * 1e6


def median_ms(fn, repeats: int) -> float:
    for _ in range(5):  # warm-up
        out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()  # the previous batch stays alive until replaced, as in a training loop
        times.append(time.perf_counter() - start)
    del out
    return float(np.median(times) * 1e3)


def _fill_and_time(fill: int, n_step: int, repeats: int) -> tuple[float, float, int]:
    """(add µs, sample(256) ms, transitions held) for one filled buffer of ours."""
    buf = DictReplayBuffer(make_observation_space(), action_dim=2, max_size=fill, n_step=n_step, gamma=0.99, seed=0)

    def add(o, a, n, r, d, t):
        buf.add(obs_dict=o, action=a, next_obs_dict=n, reward=r, done=d, truncated=t)

    add_us = contract_episodes(add, fill)
    return add_us, median_ms(lambda: buf.sample(BATCH), repeats), len(buf)


def ours(fill: int, repeats: int) -> dict:
    sizing = DictReplayBuffer(make_observation_space(), action_dim=2, max_size=100_000)  # np.empty: not touched
    result = {"bytes_per_transition": sizing.nbytes / sizing.max_size, "nbytes_at_max_size_100000": sizing.nbytes}
    del sizing
    for n_step in (1, 3):
        add_us, sample_ms, held = _fill_and_time(fill, n_step, repeats)
        result[f"sample_{BATCH}_ms_n_step_{n_step}"] = sample_ms
        if n_step == 1:
            result["add_us"], result["filled_transitions"] = add_us, held
    return result


def sb3(fill: int, repeats: int) -> dict:
    try:
        from stable_baselines3.common.buffers import DictReplayBuffer as SB3DictReplayBuffer
    except ImportError:
        return {"error": "stable-baselines3 not installed (pip install -e '.[bench]')"}
    size = 1000
    buf = SB3DictReplayBuffer(
        size, make_observation_space(), make_action_space(), device="cpu", n_envs=1, optimize_memory_usage=False
    )
    arrays = [
        *buf.observations.values(),
        *buf.next_observations.values(),
        buf.actions,
        buf.rewards,
        buf.dones,
        buf.timeouts,
    ]
    per = sum(a.nbytes for a in arrays) / size
    del buf
    buf = SB3DictReplayBuffer(
        fill, make_observation_space(), make_action_space(), device="cpu", n_envs=1, optimize_memory_usage=False
    )

    def add(o, a, n, r, d, t):
        obs = {k: v[None] for k, v in o.items()}
        nxt = {k: v[None] for k, v in n.items()}
        buf.add(obs, nxt, a[None], np.array([r]), np.array([d or t]), [{"TimeLimit.truncated": t}])

    contract_episodes(add, fill)
    return {
        "bytes_per_transition": per,
        f"sample_{BATCH}_ms": median_ms(lambda: buf.sample(BATCH), repeats),
        "filled_transitions": fill,
    }


def seed_design() -> dict:
    obs = 4 * 84 * 84 * 4 + 23 * 4  # float32 image stack + vector
    return {
        "bytes_per_transition": 2 * obs + 2 * 4 + 4 + 4,
        "note": "float32 obs + next_obs + action + reward + not_done, analytic",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=20_000, help="transitions added before timing sample() (ours)")
    parser.add_argument(
        "--sb3-fill", type=int, default=5_000, help="transitions in SB3's buffer for its sample() timing"
    )
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "benchmark": "buffer_memory",
        "observation": "image (4, 84, 84) uint8 + vector (23,) float32, action (2,) float32",
        "machine": {**machine_info(), "numpy": np.__version__},
        "ours": ours(args.fill, args.repeats),
        "sb3_dict_replay_buffer": sb3(args.sb3_fill, args.repeats),
        "seed_design": seed_design(),
        "goal_bytes_per_transition": GOAL_BYTES,
    }
    ours_bytes = result["ours"]["bytes_per_transition"]
    result["ratio_sb3_over_ours"] = (
        result["sb3_dict_replay_buffer"].get("bytes_per_transition", float("nan")) / ours_bytes
    )
    result["ratio_seed_over_ours"] = result["seed_design"]["bytes_per_transition"] / ours_bytes
    result["meets_goal"] = ours_bytes <= GOAL_BYTES
    print(json.dumps(result, indent=2))
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""TD3 gradient updates per second: ours vs Stable-Baselines3 ``TD3("MultiInputPolicy")``, in one run.

Both: batch 256, NatureCNN with 512 features, MLP 256-256, observation ``image`` uint8 (4, 84, 84) +
``vector`` float32 (23,), replay buffer pre-filled with random episodes, same torch thread count,
timed after warm-up. Ours: the default config (``critic`` encoder mode, random shift pad 4, 3-step
returns, ``networks.cnn.precision: auto``, i.e. bfloat16 autocast for the CNN where the CPU has native
bf16), the same in plain float32 (like SB3), and ``separate`` mode. SB3: ``model.train(gradient_steps=N, batch_size=256)``.
Timed in alternating blocks (each system in turn, repeated), so a load spike from another process
hits all of them; the median block of each is reported, every block is listed.

``--device cuda``: both on the GPU. Ours then runs its default CUDA path (the whole update replayed
from CUDA graphs, the replay ring in GPU memory: ``training.cuda_graph``, ``training.buffer_device``)
and, as the reference for it, the eager update sampling from the host buffer (``ours_critic_eager``).
Each timed block ends with ``torch.cuda.synchronize()``.

Prints one JSON object. Usage::

    python benchmarks/td3_updates.py [--rounds 3] [--updates 10] [--sb3-updates 5] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import os
import statistics
import time

import numpy as np
import torch

from av_td3.envs.contract import FrameStack, make_observation_space
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

BATCH = 256




def random_episodes(space, n: int, seed: int = 0, episode_len: int = 200):
    """Yield ``(obs, action, next_obs, reward, terminated)`` over random-pixel episodes (consistent stacks)."""
    rng = np.random.default_rng(seed)
    k, h, w = space["image"].shape
    vdim = space["vector"].shape[0]
    stack = FrameStack(k)
    image = stack.reset(rng.integers(0, 256, (h, w), dtype=np.uint8))
    vector = rng.standard_normal(vdim).astype(np.float32)
    t = 0
    for _ in range(n):
        next_image = stack.push(rng.integers(0, 256, (h, w), dtype=np.uint8))
        next_vector = rng.standard_normal(vdim).astype(np.float32)
        t += 1
        done = t % episode_len == 0
        yield ({"image": image, "vector": vector}, rng.uniform(-1, 1, 2).astype(np.float32),
               {"image": next_image, "vector": next_vector}, float(rng.standard_normal()), done)
        image, vector = next_image, next_vector
        if done:
            image = stack.reset(rng.integers(0, 256, (h, w), dtype=np.uint8))


def rate(run, n: int, device: str = "cpu") -> tuple[float, float]:
    """``run(n)`` (n updates) -> (updates per wall-clock second, process CPU seconds per update)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    run(n)
    _sync(device)  # GPU work is asynchronous: a block ends when the device is done
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ours(space, mode: str, buffer: int, precision: str = "auto", device: str = "cpu", **training):
    """``run(n)``: n updates of our agent (default config but ``mode`` encoder, CNN ``precision`` and
    ``training`` keys, e.g. ``cuda_graph=False``)."""
    from av_td3 import NatureCNN, TD3Agent

    torch.manual_seed(0)
    cfg = {"algorithm": {"encoder_mode": mode}, "training": {"buffer_size": buffer, **training},
           "networks": {"cnn": {"precision": precision}}}
    with contextlib.redirect_stdout(sys.stderr):  # the [AGENT] lines must not break the JSON on stdout
        agent = TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(4, 512), use_dict_buffer=True, config=cfg,
                         observation_space=space, device=device)
    for obs, action, next_obs, reward, done in random_episodes(space, buffer):
        agent.replay_buffer.add(obs_dict=obs, action=action, next_obs_dict=next_obs, reward=reward, done=done)
    def run(n: int) -> None:
        for _ in range(n):
            agent.train(BATCH)  # returns tensors: no host sync inside the timed loop

    return run


def sb3(space, buffer: int, device: str = "cpu"):
    """``run(n)``: n updates of SB3's TD3 (same widths and batch) via ``model.train(gradient_steps=n)``."""
    import gymnasium as gym
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure

    class Env(gym.Env):
        observation_space = space
        action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    torch.manual_seed(0)
    model = TD3("MultiInputPolicy", Env(), buffer_size=buffer, batch_size=BATCH, learning_starts=0, device=device,
                policy_kwargs={"net_arch": [256, 256], "features_extractor_kwargs": {"cnn_output_dim": 512}})
    model.set_logger(configure(None, []))
    for obs, action, next_obs, reward, done in random_episodes(space, buffer):
        batch = {k: v[None] for k, v in obs.items()}, {k: v[None] for k, v in next_obs.items()}  # n_envs = 1
        model.replay_buffer.add(*batch, action[None], np.array([reward]), np.array([done]), [{}])
    return lambda n: model.train(gradient_steps=n, batch_size=BATCH)


def _auto_precision(device: str = "cpu") -> str:
    from av_td3.agents.networks import cnn_compute_dtype

    return "float32" if cnn_compute_dtype("auto", torch.device(device)) is None else "bfloat16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed blocks per system")
    parser.add_argument("--updates", type=int, default=10, help="updates of ours per block")
    parser.add_argument("--sb3-updates", type=int, default=5, help="updates of SB3 per block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--buffer", type=int, default=5000, help="transitions pre-filled in each buffer")
    parser.add_argument("--skip-separate", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "td3_updates.py: --device cuda but torch sees no CUDA GPU\n")
    space = make_observation_space(4, 84, 84)
    builders = {"ours_critic": (lambda: ours(space, "critic", args.buffer, device=dev), args.updates),
                "sb3_td3": (lambda: sb3(space, args.buffer, dev), args.sb3_updates),
                "ours_critic_float32": (lambda: ours(space, "critic", args.buffer, "float32", device=dev), args.updates)}
    if dev == "cuda":  # the reference for the graph path: eager updates from the host buffer
        builders["ours_critic_eager"] = (lambda: ours(space, "critic", args.buffer, device=dev, cuda_graph=False,
                                                      buffer_device="cpu"), args.updates)
    if not args.skip_separate:
        builders["ours_separate"] = (lambda: ours(space, "separate", args.buffer, device=dev), args.updates)
    # on CUDA the first updates are eager warm-up and the graph capture: keep them out of the timing
    warmup = args.warmup if dev == "cpu" else max(args.warmup, 10)
    systems, errors = {}, {}
    for name, (build, n) in builders.items():
        try:  # one failing system (e.g. a capture error on a new GPU stack) must not lose the others' numbers
            run = build()
            run(warmup)
            systems[name] = (run, n)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON
            errors[name] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"[td3_updates] {name} failed: {errors[name]}", file=sys.stderr)
    # Alternating blocks: load from other processes hits every system alike; the median block is reported.
    blocks = {name: [] for name in systems}
    cpu = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, (run, n) in systems.items():
            updates_per_s, cpu_s = rate(run, n, dev)
            blocks[name].append(updates_per_s)
            cpu[name].append(cpu_s)

    med = {name: statistics.median(r) for name, r in blocks.items()}
    result: dict = {f"{name}_updates_per_s": round(r, 3) for name, r in med.items()}
    for name in ("ours_critic", "ours_critic_float32", "ours_separate"):
        if name in med and "sb3_td3" in med:
            result[f"ratio_{name}_vs_sb3"] = round(med[name] / med["sb3_td3"], 3)
    if "ours_critic" in med and "ours_critic_eager" in med:
        result["ratio_ours_critic_vs_ours_eager"] = round(med["ours_critic"] / med["ours_critic_eager"], 3)
    if errors:
        result["errors"] = errors
    result["blocks_updates_per_s"] = {name: [round(x, 3) for x in r] for name, r in blocks.items()}
    # CPU time is less sensitive than wall time to other processes sharing the cores.
    result["cpu_seconds_per_update_median"] = {name: round(statistics.median(c), 4) for name, c in cpu.items()}
    try:
        import stable_baselines3
        sb3_version = stable_baselines3.__version__
    except ImportError:
        sb3_version = None

    result["setup"] = {"batch_size": BATCH, "obs": "image uint8 (4,84,84) + vector float32 (23,)",
                       "cnn_features": 512, "mlp": [256, 256], "buffer_prefill": args.buffer,
                       "ours_config": "defaults (critic encoder, image_pad 4, n_step 3, CNN precision auto)",
                       "ours_cnn_precision_auto_resolves_to": _auto_precision(dev),
                       "device": dev,
                       "ours_update_path": "CUDA graphs, replay ring on the GPU" if dev == "cuda" else "eager",
                       "rounds": args.rounds, "updates_per_block": {"ours": args.updates, "sb3": args.sb3_updates},
                       "warmup": args.warmup}
    result["machine"] = {**machine_info(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                         "stable_baselines3": sb3_version, "cuda": torch.cuda.is_available(),
                         "gpu": torch.cuda.get_device_name() if dev == "cuda" else None}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

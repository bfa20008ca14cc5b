"""Wall-clock time until a training run drives: evaluation success >= 80% at scenario 0.

    python benchmarks/time_to_drive.py [--config configs/td3.yaml] [--eval-every 5000] [--budget-s 900]
                                       [--device auto] [--set key=value ...] [--out result.json]

Trains with the given config (``training.max_timesteps`` caps the run) and, every ``--eval-every``
env steps, evaluates 5 seeded episodes (the seeds ``evaluation.seed, +1, ...``, the same every time)
on a separate env, as the trainer's own evaluation does. The clock starts before the trainer builds
its envs and agent and includes the evaluations; ``train_seconds`` excludes them. The run stops at
the first evaluation reaching ``--target`` success, or when ``--budget-s`` of wall time has passed,
or at ``max_timesteps``. Prints one JSON document (and writes it to ``--out``): the time to target
(null if not reached) and the whole evaluation curve.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from av_td3.config import load_config
from av_td3.training.setup import resolve_device
from av_td3.training.trainer import Trainer
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)


class _Stop(Exception):
    """Raised from an evaluation to end the run (target reached or budget spent)."""


class TimedTrainer(Trainer):
    """The trainer, recording each evaluation with its wall time and stopping on the target or budget."""

    def __init__(self, *args, target: float, budget_s: float, clock_start: float, **kwargs):
        self.curve: list[dict] = []
        self.eval_seconds = 0.0
        self.target, self.budget_s, self.clock_start = target, budget_s, clock_start
        super().__init__(*args, **kwargs)

    def _evaluate(self, episodes: int):
        t0 = time.perf_counter()
        result = super()._evaluate(episodes)
        self.eval_seconds += time.perf_counter() - t0
        elapsed = time.perf_counter() - self.clock_start
        success = float(self.last_eval["success_rate"])
        self.curve.append({"step": self.step, "updates": self.updates, "wall_s": round(elapsed, 2),
                           "success_rate": success, "route_completion": self.last_eval["route_completion"],
                           "episode_reward": self.last_eval["episode_reward"]})
        if success >= self.target or elapsed >= self.budget_s:
            raise _Stop()
        return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/td3.yaml")
    ap.add_argument("--eval-every", type=int, default=5000, help="env steps between evaluations (K)")
    ap.add_argument("--episodes", type=int, default=5, help="seeded evaluation episodes")
    ap.add_argument("--target", type=float, default=0.8, help="success rate that counts as driving")
    ap.add_argument("--budget-s", type=float, default=900.0, help="stop after this much wall time")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)

    overrides = [*args.set, "env.scenario=0", f"training.eval_freq={args.eval_every}",
                 f"evaluation.num_episodes={args.episodes}", "evaluation.video=false", "logging.tensorboard=false",
                 "logging.progress_bar=false", "training.checkpoint_freq=0"]
    cfg = load_config(args.config, overrides)
    device = resolve_device(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(sys.stderr):
        trainer = TimedTrainer(cfg, Path(run_dir), device, target=args.target, budget_s=args.budget_s,
                               clock_start=start)
        try:
            trainer.run()
        except _Stop:
            pass
        finally:
            trainer.close()
    wall = time.perf_counter() - start
    reached = next((p for p in trainer.curve if p["success_rate"] >= args.target), None)
    doc = {
        "benchmark": "time_to_drive",
        "config": args.config,
        "overrides": args.set,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "target_success": args.target,
        "eval_every_steps": args.eval_every,
        "eval_episodes": args.episodes,
        "reached": reached is not None,
        "seconds_to_target": reached["wall_s"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "wall_seconds": round(wall, 1),
        "train_seconds": round(wall - trainer.eval_seconds, 1),
        "steps": trainer.step,
        "updates": trainer.updates,
        "num_envs": cfg.training.num_envs,
        "batch_size": cfg.algorithm.batch_size,
        "updates_per_step": cfg.training.updates_per_step,
        "curve": trainer.curve,
        "machine": {**machine_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return doc


if __name__ == "__main__":
    main()

"""Write README pictures of the town: a front-camera frame, a bird's-eye (BEV) frame and a render() frame.

    python scripts/render_town_frames.py [--out docs/images] [--scale 4] [--steps 300] [--seed 0]

A pure-pursuit driver follows the default route with scenario-0 traffic for ``--steps`` steps, then the
frames are saved as PNGs (grayscale frames upscaled ``--scale`` times with nearest-neighbour).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.envs.town.env import TownEnv


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _drive(view: str, steps: int, seed: int) -> TownEnv:
    env = TownEnv(scenario=0, render_mode="rgb_array", config={"env": {"camera": {"view": view}}})
    pp = PurePursuit(wheelbase_m=env.wheelbase_m, target_speed_kmh=env.cfg.target_speed_kmh)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(pp(obs))
        if terminated or truncated:
            break
    env.last_obs = obs
    return env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    front = _drive("front", args.steps, args.seed)
    bev = _drive("bev", args.steps, args.seed)
    paths = {
        "town_front_camera.png": _upscale(front.last_obs["image"][-1], args.scale),
        "town_bev_camera.png": _upscale(bev.last_obs["image"][-1], args.scale),
        "town_render_rgb.png": _upscale(front.render(), 2),
    }
    for name, img in paths.items():
        imageio.imwrite(args.out / name, img)
        print(f"wrote {args.out / name} {img.shape}")


if __name__ == "__main__":
    main()

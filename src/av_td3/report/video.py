"""Videos of evaluation episodes: the agent's camera beside the ``rgb_array`` view, with overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from av_td3.config import Config
from av_td3.training.evaluation import run_episode


def compose_frame(camera: np.ndarray, view: np.ndarray, action: np.ndarray, reward: float, info: dict) -> np.ndarray:
    """``(H, W1 + W2, 3)`` uint8: newest camera frame (upscaled, grey) | rgb view, text overlaid.

    Args:
        camera: ``(k, h, w)`` uint8 stack from the observation.
        view: ``(H, W2, 3)`` uint8 from ``env.render()``.
    """
    height = view.shape[0]
    newest = camera[-1]
    cam = Image.fromarray(newest).resize((round(newest.shape[1] * height / newest.shape[0]), height), Image.NEAREST)
    canvas = Image.new("RGB", (cam.width + view.shape[1], height))
    canvas.paste(cam.convert("RGB"), (0, 0))
    canvas.paste(Image.fromarray(view), (cam.width, 0))
    draw = ImageDraw.Draw(canvas)
    text = (f"speed {info['speed_kmh']:5.1f} km/h\nsteer {action[0]:+.2f}  pedal {action[1]:+.2f}\n"
            f"reward {reward:+.2f}\ncompletion {100 * info['route_completion']:.0f}%")
    draw.multiline_text((6, 6), text, fill=(255, 255, 0))
    if info.get("termination_reason", "none") != "none":
        draw.text((6, height - 16), info["termination_reason"], fill=(255, 80, 80))
    return np.asarray(canvas)


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` to even height and width by repeating the last row/column (H.264 needs it)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame


def record_episodes(cfg: Config, policy: Callable[[dict], np.ndarray], path: Path, episodes: int, seed: int) -> Path:
    """Play ``episodes`` evaluation episodes on a rendering env and stream them to ``path`` (mp4/gif).

    Frames are written as they come (memory stays flat for long evaluations); gifs keep every second
    frame at 10 fps to stay small.
    """
    from av_td3.training.setup import make_env

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gif = path.suffix == ".gif"
    writer = imageio.get_writer(path, duration=0.1, loop=0) if gif else imageio.get_writer(path, fps=20, macro_block_size=1)
    env = make_env(cfg, render_mode="rgb_array")
    count = 0

    def on_step(env_, obs, action, reward, info):
        nonlocal count
        if not gif or count % 2 == 0:
            writer.append_data(even_size(compose_frame(obs["image"], env_.render(), np.asarray(action), reward, info)))
        count += 1

    try:
        for i in range(episodes):
            run_episode(env, policy, seed + i, on_step)
    finally:
        env.close()
        writer.close()
    return path

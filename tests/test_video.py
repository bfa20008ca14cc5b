"""Evaluation videos: odd frame sizes still make a valid mp4; gifs are written; frames carry overlays."""

import imageio.v2 as imageio
import numpy as np

from av_td3.config import Config
from av_td3.report.video import compose_frame, even_size, record_episodes


def test_even_size_pads_odd_frames():
    frame = np.zeros((145, 401, 3), np.uint8)
    assert even_size(frame).shape == (146, 402, 3)
    assert even_size(np.zeros((4, 6, 3), np.uint8)).shape == (4, 6, 3)


def test_mp4_with_odd_camera_width(tmp_path):
    # an 85-row camera upscaled beside the 256-px view gives an odd total width (253 + 256)
    cfg = Config.from_any({"env": {"image_height": 85, "npc_count": 0, "max_episode_steps": 12}})
    path = record_episodes(cfg, lambda obs: np.array([0.0, 0.5], np.float32), tmp_path / "v.mp4", episodes=1, seed=0)
    frames = imageio.mimread(path, memtest=False)
    assert len(frames) == 13  # the reset frame and 12 steps
    assert frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0


def test_overlay_changes_pixels():
    camera = np.full((4, 84, 84), 100, np.uint8)
    view = np.zeros((256, 256, 3), np.uint8)
    info = {"speed_kmh": 12.0, "route_completion": 0.5, "termination_reason": "collision"}
    frame = compose_frame(camera, view, np.array([0.1, 0.2]), 0.5, info)
    assert frame.shape == (256, 512, 3)
    assert (frame[:40, :120] != np.array([100, 100, 100])).any()  # text drawn over the camera
    assert (frame[240:, :60, 0] > 200).any()  # red termination label

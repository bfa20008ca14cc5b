"""Shared test helpers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Overrides that make an end-to-end run take seconds on a 2-core CPU (tiny batch, short episodes).
FAST = [
    "--set", "algorithm.batch_size=16",
    "--set", "training.buffer_size=5000",
    "--set", "env.max_episode_steps=80",
    "--set", "evaluation.num_episodes=1",
    "--set", "logging.progress_bar=false",
    "--set", "logging.log_interval=20",
]


def run_cli(args, cwd, timeout=300, **popen):
    """Run the seed script (``scripts/train_td3.py``) or ``python -m av_td3.cli`` in ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture
def root():
    return ROOT

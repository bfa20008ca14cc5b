"""Turning a saved checkpoint into a policy ``obs -> action`` for evaluation and comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from av_td3.config import Config, load_config

Policy = Callable[[dict], np.ndarray]


def load_checkpoint_policy(path: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str = "auto",
                           observation_space=None) -> tuple[Policy, Config, str]:
    """Load a training checkpoint (file or run directory) as a deterministic policy.

    Returns ``(policy, config, algo)``; ``config`` is the run's saved config with ``overrides`` applied
    (e.g. another scenario), so evaluation env and agent match what was trained.
    """
    from av_td3.training.checkpoint import find_checkpoint, load_checkpoint, saved_config
    from av_td3.training.setup import build_agent, make_env, resolve_device

    path = find_checkpoint(path, ".", None, flag="--checkpoint")
    saved = load_checkpoint(path)
    cfg = load_config(None, list(overrides), base=saved_config(saved))
    algo = cfg.algorithm.name
    if observation_space is None:
        env = make_env(cfg)
        observation_space = env.observation_space
        env.close()
    # A policy never samples: a one-batch replay buffer instead of the run's (GBs at 1M transitions).
    acting_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"buffer_size": cfg.algorithm.batch_size})})
    agent = build_agent(acting_cfg, observation_space, resolve_device(device), verbose=False)
    agent.load_state_dict(saved["agent"])
    return (lambda obs: agent.select_action(obs, noise=0.0)), cfg, algo

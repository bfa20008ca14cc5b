"""Gymnasium ids of the driving backends, registered on ``import av_td3``.

Entry points are strings so that importing av_td3 does not import a simulator (or the ``carla``
client) until ``gymnasium.make`` asks for it.
"""

from __future__ import annotations

import gymnasium

TOWN_ID = "av_td3/Town-v0"
CARLA_ID = "av_td3/Carla-v0"


def register_envs() -> None:
    """Register every backend once (idempotent)."""
    registered = gymnasium.envs.registry
    if TOWN_ID not in registered:
        gymnasium.register(id=TOWN_ID, entry_point="av_td3.envs.town.env:TownEnv")
    if CARLA_ID not in registered:
        gymnasium.register(id=CARLA_ID, entry_point="av_td3.envs.carla.env:CarlaEnv")

"""What a driving env reads from the config, resolved in one place for every backend.

``DrivingSections`` is the ``env`` + ``reward`` view (the town's); the CARLA backend widens it with
``carla`` (``envs/carla/config.py``). ``resolve_sections`` takes whatever the env was given (the
root ``Config``, a nested dict, None) and merges the env's keyword arguments into the ``env`` section:

    sections = resolve_sections(DrivingSections, config, {"npc_count": 0}, owner="TownEnv")
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from pydantic import Field

from av_td3.config_base import Sections, validate_model
from av_td3.envs.config import EnvConfig, RewardConfig

__all__ = ["DrivingSections", "resolve_sections"]

S = TypeVar("S", bound="DrivingSections")


class DrivingSections(Sections):
    """The sections every driving backend reads."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)


def resolve_sections(view: type[S], config: Any, env_overrides: Mapping[str, Any], owner: str) -> S:
    """``view`` of ``config`` with ``env_overrides`` (``env`` field names, e.g. ``npc_count=0``) applied.

    Raises:
        TypeError: an override is no ``env`` field (named with ``owner``, the env class).
        ConfigError: the config, or the ``env`` section with the overrides, is invalid.
    """
    sections = view.from_any(config)
    if not env_overrides:
        return sections
    fields = EnvConfig.model_fields
    unknown = sorted(set(env_overrides) - set(fields))
    if unknown:
        raise TypeError(f"{owner} got unknown argument(s) {unknown}; keyword arguments must be env config fields: "
                        f"{', '.join(fields)}")
    merged = {**sections.model_dump(), "env": {**sections.env.model_dump(), **env_overrides}}
    return validate_model(view, merged)

"""The ``carla`` config section: where the CARLA 0.9.16 server is and how to talk to it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CarlaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "localhost"
    port: int = Field(2000, ge=1, le=65535)
    timeout_s: float = Field(10.0, gt=0, description="Connect and tick time-out, seconds.")
    town: str = "Town01"

"""The ``classical`` config section: gains and targets of the PID + pure-pursuit controller."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClassicalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    target_speed_kmh: float = Field(30.0, gt=0, le=130, description="Cruise speed on straight road.")
    speed_kp: float = Field(0.5, ge=0, description="PID gains on speed error (m/s) -> throttle_brake.")
    speed_ki: float = Field(0.05, ge=0)
    speed_kd: float = Field(0.0, ge=0)

"""Config sections read by the driving envs: ``env`` (shared by every backend) and ``reward``.

Every key here is read by the env code; a key no backend reads must not exist.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class CameraConfig(_Strict):
    view: Literal["front", "bev"] = "front"
    pitch_deg: float = Field(-10.0, ge=-60, le=30, description="Front camera pitch, degrees (negative looks down).")


class EnvConfig(_Strict):
    name: Literal["town", "carla"] = "town"
    scenario: int = Field(0, ge=0, le=2, description="0/1/2 = 20/50/100 NPC vehicles.")
    npc_count: int | None = Field(None, ge=0, le=300, description="NPC vehicles; None = the scenario's 20/50/100.")
    route: Literal["default", "random"] = "default"
    max_episode_steps: int = Field(1000, ge=1)
    frame_stack: int = Field(4, ge=1, le=16)
    image_height: int = Field(84, ge=16, le=512)
    image_width: int = Field(84, ge=16, le=512)
    num_waypoints: int = Field(10, ge=1, le=50)
    waypoint_spacing_m: float = Field(2.0, gt=0, le=20)
    target_speed_kmh: float = Field(30.0, gt=0, le=130)
    off_road_lateral_m: float = Field(3.0, gt=0, le=20, description="|lateral deviation| beyond this is off-road.")
    goal_tolerance_m: float = Field(2.0, gt=0, le=20, description="Goal reached when this close to the route end (along it).")
    stall_steps: int = Field(200, ge=1, description="Truncate after this many consecutive steps below 0.5 km/h.")
    camera: CameraConfig = Field(default_factory=CameraConfig)


class RewardConfig(_Strict):
    """Weights of the shared reward module (``av_td3.envs.reward``)."""

    efficiency: float = Field(1.0, ge=0, description="Weight of speed along the route toward the target.")
    lane_keeping: float = Field(0.5, ge=0, description="Weight of the lateral / heading error penalty.")
    comfort: float = Field(0.1, ge=0, description="Weight of the jerk / steering-change penalty.")
    safety: float = Field(1.0, ge=0, description="Weight of the event and proximity penalties.")
    progress: float = Field(1.0, ge=0, description="Reward per metre gained along the route.")
    goal_bonus: float = Field(10.0, ge=0, description="Paid once, on the step the goal is reached.")
    collision_penalty: float = Field(10.0, ge=0, description="Safety units for a collision (episode ends).")
    off_road_penalty: float = Field(10.0, ge=0, description="Safety units for leaving the road (episode ends).")
    lane_invasion_penalty: float = Field(1.0, ge=0, description="Safety units per step touching a lane marking.")
    ttc_threshold_s: float = Field(2.0, gt=0, le=10, description="Time-to-collision below which proximity is penalised.")

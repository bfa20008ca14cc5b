"""Config sections read by the driving envs: ``env`` (shared by every backend) and ``reward``.

Every key here is read by the env code; a key no backend reads must not exist.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from av_td3.config_base import StrictModel


class CameraConfig(StrictModel):
    view: Literal["front", "bev"] = "front"
    pitch_deg: float = Field(-10.0, ge=-60, le=30, description="Front camera pitch, degrees (negative looks down).")


class ActuatorConfig(StrictModel):
    """How fast the ego's actuators follow the commanded action (every backend applies it the same way).

    Real steering racks and pedals cannot jump from one end to the other in one 0.05 s step; without a
    limit a policy's step-to-step action changes turn straight into jerk (an RL policy measured 44 m/s^3
    mean |jerk| against the classical controller's 2.6). ``None`` = ideal actuators (the action is applied
    at once, as before reward v2).
    """

    steer_rate_per_s: float | None = Field(
        2.0, gt=0, le=1000, description="Largest change of the applied steer per second, in action units "
        "(2.0: centre to full lock in 0.5 s); None = no limit.")
    pedal_rate_per_s: float | None = Field(
        2.0, gt=0, le=1000, description="Largest change of the applied throttle_brake per second, in action "
        "units (2.0: coast to full brake in 0.5 s); None = no limit.")


class EnvConfig(StrictModel):
    name: Literal["town", "carla"] = "town"
    scenario: int = Field(0, ge=0, le=2, description="0/1/2 = 20/50/100 NPC vehicles.")
    npc_count: int | None = Field(None, ge=0, le=300, description="NPC vehicles; None = the scenario's 20/50/100.")
    traffic_mix: list[int] | None = Field(
        None, min_length=1, description="Scenarios (0/1/2) drawn uniformly per TRAINING episode, e.g. [0, 1, 2] "
        "for one policy that drives every density; evaluation always uses env.scenario. None = env.scenario "
        "(or env.npc_count) in training too.")
    lane_invasion_ends_episode: bool = Field(
        False, description="TRAINING env only: a lane line between the wheels ends the episode (terminated, "
        "reason lane_invasion), as a collision does, so crossing a line costs the rest of the route. Evaluation "
        "episodes keep driving, so the lane-invasion rate counts every crossing.")
    route: Literal["default", "random"] = Field(
        "random", description="random: a new seeded 100-300 m route per episode (evaluation seeds are disjoint "
        "from training seeds, so evaluation routes are unseen); default: the fixed 284 m route.")
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
    actuator: ActuatorConfig = Field(default_factory=ActuatorConfig)

    @model_validator(mode="after")
    def _check_traffic_mix(self) -> "EnvConfig":
        if self.traffic_mix is not None:
            bad = [s for s in self.traffic_mix if s not in (0, 1, 2)]
            if bad:
                raise ValueError(f"env.traffic_mix holds scenarios 0, 1 or 2 (20/50/100 NPCs), got {bad}")
            if self.npc_count is not None:
                raise ValueError("env.traffic_mix and env.npc_count both set the training traffic; set only one")
        return self


#: Reward keys read only by ``reward.version: 1`` (additive terms) and only by ``version: 2`` (CaRL-style).
REWARD_V1_KEYS = ("efficiency", "lane_keeping", "comfort", "safety", "collision_penalty", "off_road_penalty",
                  "lane_invasion_penalty")
REWARD_V2_KEYS = ("infraction_penalty", "lane_centre_penalty", "lane_centre_scale_m", "lane_marking_penalty",
                  "overspeed_penalty", "ttc_penalty", "comfort_penalty")


class RewardConfig(StrictModel):
    """Weights of the shared reward module (``av_td3.envs.reward``); its docstring defines every term.

    ``version: 2`` (default): progress along the route is the reward, scaled DOWN by soft penalties
    (lane-centre distance, a lane line between the wheels, overspeed, time-to-collision, comfort limits);
    a collision or leaving the road ends the episode with ``infraction_penalty``. ``version: 1``: the
    earlier additive sum (efficiency + progress + lane keeping + comfort + safety + goal), kept for
    comparison. Changing a key that the chosen version does not read is an error.
    """

    version: Literal[1, 2] = Field(2, description="2: progress scaled by soft penalties (CaRL); 1: additive terms.")
    # Both versions
    progress: float = Field(1.0, ge=0, description="Reward per metre gained along the route.")
    goal_bonus: float = Field(10.0, ge=0, description="Paid once, on the step the goal is reached.")
    ttc_threshold_s: float = Field(2.0, gt=0, le=10, description="Time-to-collision below which proximity is penalised.")
    # Version 1 only
    efficiency: float = Field(1.0, ge=0, description="v1: weight of speed along the route toward the target.")
    lane_keeping: float = Field(0.5, ge=0, description="v1: weight of the lateral / heading error penalty.")
    comfort: float = Field(0.1, ge=0, description="v1: weight of the jerk / steering-change penalty.")
    safety: float = Field(1.0, ge=0, description="v1: weight of the event and proximity penalties.")
    collision_penalty: float = Field(10.0, ge=0, description="v1: safety units for a collision (episode ends).")
    off_road_penalty: float = Field(10.0, ge=0, description="v1: safety units for leaving the road (episode ends).")
    lane_invasion_penalty: float = Field(1.0, ge=0, description="v1: safety units per step touching a lane marking.")
    # Version 2 only
    infraction_penalty: float = Field(
        5.0, ge=0, le=1e6, description="v2: paid once when a collision or leaving the road ends the episode, "
        "in reward units (5 = the reward of 5 m of clean progress). Ending the episode is the main cost: "
        "it forfeits the rest of the route. Large values (50) taught TD3 to stand still: every random "
        "exploration episode ended off the road, so any motion looked worse than none.")
    lane_centre_penalty: float = Field(
        0.5, ge=0, le=1, description="v2: progress is scaled by 1 - this * min(|lateral deviation| / "
        "lane_centre_scale_m, 1).")
    lane_centre_scale_m: float = Field(1.75, gt=0, le=20, description="v2: lateral deviation of the full lane-centre penalty, m.")
    lane_marking_penalty: float = Field(
        1.0, ge=0, le=1, description="v2: progress is scaled by 1 - this on a step with a lane line between the "
        "wheels (1.0: crossing a line earns nothing).")
    overspeed_penalty: float = Field(
        2.0, ge=0, le=100, description="v2: progress is scaled by 1 - min(this * (speed / target - 1), 1) above "
        "the target speed (2.0: nothing at 1.5x the target).")
    ttc_penalty: float = Field(
        1.0, ge=0, le=1, description="v2: progress is scaled by 1 - this * (1 - ttc / ttc_threshold_s) below the "
        "TTC threshold.")
    comfort_penalty: float = Field(
        1.0, ge=0, le=1, description="v2: progress is scaled by 1 - this * (fraction of the five nuPlan comfort "
        "limits exceeded this step: longitudinal acceleration and jerk, jerk magnitude, lateral "
        "acceleration, yaw rate).")

    @model_validator(mode="after")
    def _keys_of_the_chosen_version(self) -> "RewardConfig":
        unread = REWARD_V2_KEYS if self.version == 1 else REWARD_V1_KEYS
        # A key at its default is harmless (saved run configs list every key); a changed one would be ignored.
        fields = type(self).model_fields
        stray = sorted(k for k in self.model_fields_set if k in unread and getattr(self, k) != fields[k].default)
        if stray:
            other = 2 if self.version == 1 else 1
            raise ValueError(
                f"reward.{', reward.'.join(stray)} {'is' if len(stray) == 1 else 'are'} read only by reward.version "
                f"{other}, but reward.version is {self.version}; remove {'it' if len(stray) == 1 else 'them'} or set "
                f"reward.version: {other}"
            )
        return self

"""``TownEnv``: the embedded town driving simulator behind the shared contract (``contract.py``).

One step (0.05 s): validate the action -> move the ego (kinematic bicycle) -> move the NPCs (IDM,
junction yielding) -> measure events (collision, lane invasion, off-road, obstacle ahead, TTC) -> the
backend-agnostic ``DrivingTask`` builds the vector, reward, episode end and ``info`` -> render the
camera frame and push it on the frame stack.

    env = gymnasium.make("av_td3/Town-v0", scenario=0, render_mode=None, config=None)
    env = TownEnv(scenario=2, config={"env": {"route": "random"}}, npc_count=0)   # kwargs: env fields
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from av_td3.config_base import ConfigError
from av_td3.envs.actuators import ActuatorLimiter
from av_td3.envs.contract import (
    SCENARIO_NPCS,
    STEP_SECONDS,
    FrameStack,
    action_to_controls,
    make_action_space,
    make_observation_space,
)
from av_td3.envs.route import Route
from av_td3.envs.sections import DrivingSections, resolve_sections
from av_td3.envs.task import DrivingTask, EgoState, StepEvents, nearest_obstacle_ahead
from av_td3.envs.town.camera import Boxes, FrontCamera, TopDownCamera
from av_td3.envs.town.events import EgoEvents
from av_td3.envs.town.map import get_town_map
from av_td3.envs.town.traffic import MAX_NPCS, SPAWN_SPACING_M, Traffic
from av_td3.envs.town.vehicle import Vehicle, VehicleParams

__all__ = ["TownEnv", "SCENARIO_NPCS"]

#: Size of ``render()`` frames (RGB, top-down chase view), pixels.
RENDER_SIZE = 256


class TownEnv(gym.Env):
    """The town simulator (see the module docstring).

    Args:
        scenario: 0/1/2 = 20/50/100 NPCs; ``None`` keeps ``config.env.scenario``.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns a 256x256x3 top-down colour view).
        config: a ``Config``, a (partial) nested config dict or ``None``; its ``env`` and ``reward``
            sections are used (``DrivingSections``).
        **kwargs: overrides of ``env`` fields, e.g. ``npc_count=0``, ``route="random"``.

    Attributes:
        wheelbase_m: the ego's wheelbase (2.875 m), for controllers.
        map, vehicle, traffic, task, route: the simulator parts (read-only use outside tests).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / STEP_SECONDS))}

    def __init__(
        self, scenario: int | None = None, render_mode: str | None = None, config: Any = None, **kwargs: Any
    ):
        overrides = dict(kwargs)
        if scenario is not None:
            overrides["scenario"] = scenario
        cfg = resolve_sections(DrivingSections, config, overrides, owner="TownEnv")
        env_cfg = cfg.env
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.cfg = env_cfg
        self.reward_cfg = cfg.reward
        self.render_mode = render_mode
        self.npc_count = SCENARIO_NPCS[env_cfg.scenario] if env_cfg.npc_count is None else env_cfg.npc_count
        if self.npc_count > MAX_NPCS:
            raise ConfigError(
                f"env.npc_count={self.npc_count} is more NPC vehicles than the town fits: at most {MAX_NPCS} "
                f"(spawned >= {SPAWN_SPACING_M:g} m apart); set env.npc_count <= {MAX_NPCS}"
            )

        self.map = get_town_map()
        self.params = VehicleParams()
        self.wheelbase_m = self.params.wheelbase_m
        self.vehicle = Vehicle(self.params)
        self.traffic = Traffic(self.map.graph)
        self.events = EgoEvents(self.map.raster, self.params)
        self.task = DrivingTask(env_cfg, cfg.reward, STEP_SECONDS)
        self.actuators = ActuatorLimiter(env_cfg.actuator, STEP_SECONDS)
        h, w = env_cfg.image_height, env_cfg.image_width
        cam = env_cfg.camera
        self.camera = (
            FrontCamera(self.map.raster, h, w, pitch_deg=cam.pitch_deg) if cam.view == "front"
            else TopDownCamera(self.map.raster, h, w)
        )
        self._viewer: TopDownCamera | None = None
        self.frames = FrameStack(env_cfg.frame_stack)
        self.observation_space = make_observation_space(env_cfg.frame_stack, h, w, env_cfg.num_waypoints)
        self.action_space = make_action_space()
        self.route: Route | None = None
        self._default_route: Route | None = None
        self._last_info: dict = {}

    # ------------------------------------------------------------------------------------------
    def _make_route(self) -> Route:
        if self.cfg.route == "default":
            if self._default_route is None:  # fixed geometry: build once
                self._default_route = Route(self.map.path_polyline(*self.map.default_route()), self.cfg.waypoint_spacing_m)
            return self._default_route
        lanes, s0, s1 = self.map.random_route(self.np_random)
        return Route(self.map.path_polyline(lanes, s0, s1), self.cfg.waypoint_spacing_m)

    def _npcs(self) -> Boxes:
        t = self.traffic
        return Boxes(t.x, t.y, t.cos, t.sin, t.length, t.width)

    def _ego(self) -> EgoState:
        v = self.vehicle
        return EgoState(v.x, v.y, v.yaw, v.speed)

    def _measure(self) -> StepEvents:
        v, t = self.vehicle, self.traffic
        lane_invasion, off_road = self.events.surface(v.x, v.y, v.yaw)
        collision = self.events.collision(v.x, v.y, v.yaw, self._npcs())
        gap, ttc = nearest_obstacle_ahead(
            self._ego(), t.xy, t.yaw, t.v, self.params.length_m, t.length,
            corridor_half_width_m=0.5 * (self.params.width_m + 1.9),
        )
        return StepEvents(collision, lane_invasion, off_road, gap, ttc)

    def _frame(self) -> np.ndarray:
        v = self.vehicle
        if isinstance(self.camera, FrontCamera):
            return self.camera.render(v.x, v.y, v.yaw, self._npcs())
        return self.camera.render(v.x, v.y, v.yaw, self._npcs(), ego_size=(self.params.length_m, self.params.width_m))

    def _obs(self, vector: np.ndarray, frame: np.ndarray, push: bool) -> dict[str, np.ndarray]:
        image = self.frames.push(frame) if push else self.frames.reset(frame)
        return {"image": image, "vector": vector}

    # ------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode: new route (``random`` routes draw from the seed), ego at the route start
        at rest, NPCs spawned >= 20 m away (``env.traffic_mix``: their number drawn from the seed too).
        ``options`` is accepted for API compatibility and unused."""
        super().reset(seed=seed)
        self.route = self._make_route()
        x, y, yaw = self.route.point_at(0.0)
        self.vehicle.reset(x, y, yaw, 0.0)
        self.actuators.reset()
        if self.cfg.traffic_mix is not None:
            self.npc_count = SCENARIO_NPCS[int(self.np_random.choice(self.cfg.traffic_mix))]
        self.traffic.reset(self.np_random, self.npc_count, x, y)
        vector, info = self.task.reset(self.route, self._ego(), self._measure())
        self._last_info = info
        return self._obs(vector, self._frame(), push=False), info

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.route is None:
            raise RuntimeError("TownEnv.step() called before reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,) = [steer, throttle_brake], got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        applied = self.actuators(a)  # rate-limited, clipped to [-1, 1]
        steer, throttle, brake = action_to_controls(applied)
        v = self.vehicle
        v.step(steer, throttle, brake, STEP_SECONDS)
        self.traffic.step(STEP_SECONDS, v.x, v.y, v.yaw, v.speed, self.params.length_m, self.params.width_m)
        vector, reward, terminated, truncated, info = self.task.step(self._ego(), applied, self._measure())
        self._last_info = info
        return self._obs(vector, self._frame(), push=True), reward, terminated, truncated, info

    # ------------------------------------------------------------------------------------------
    def render(self) -> np.ndarray | None:
        """``(256, 256, 3)`` uint8 top-down colour view around the ego (route in green), or None."""
        if self.render_mode != "rgb_array":
            return None
        if self._viewer is None:
            self._viewer = TopDownCamera(self.map.raster, RENDER_SIZE, RENDER_SIZE, behind_m=20.0, ahead_m=40.0, channels=3)
        v = self.vehicle
        route_xy = self.route.waypoints if self.route is not None else None
        return self._viewer.render(
            v.x, v.y, v.yaw, self._npcs(), ego_size=(self.params.length_m, self.params.width_m), route_xy=route_xy
        )

    def close(self) -> None:
        self._viewer = None

"""``av_td3/Carla-v0``: the shared driving contract on a CARLA 0.9.16 server.

The env is a thin coordinator; each job lives in its own module:

* ``connection.py`` - client, time-outs, retries with backoff, helpful errors;
* ``world.py``      - town, synchronous fixed-step settings, Traffic Manager, restore on close;
* ``route_planner.py`` - routes on the map's topology (the pip wheel has no ``agents`` package);
* ``actors.py``     - ego and NPC spawning (NPC handler), accounting, batch destruction;
* ``sensors.py``    - camera -> grayscale frames, collision / lane-invasion / obstacle events;
* ``frames.py``     - CARLA's left-handed frame -> the route/task frame;
* ``av_td3.envs.task`` - vector, reward, termination and ``info``, shared with the town backend, so
  both backends compute them identically from (x, y, yaw, speed) and the step's events.

Connecting: the constructor's first connection retries with backoff (``carla.retries``,
``carla.backoff_s``) within ``carla.timeout_s`` in total (``connection.connect_with_retries``).

Faults: a ``RuntimeError`` from the server while stepping (typically ``World.tick`` timing out) ends
the episode as truncated with ``info["termination_reason"] == "error"`` and ``info["error"]``; the next
``reset()`` reconnects with backoff (``carla.retries``, ``carla.backoff_s``), destroys what the old
connection left behind and rebuilds the world.

Destruction: every actor the env spawns (ego, sensors, NPCs) is recorded in ``self.actors`` and is
destroyed with one batch of ``carla.command.DestroyActor`` on reset and close; the sensors are
``stop()``ped first.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from av_td3.envs.carla.actors import (
    ActorBook,
    RoleNames,
    destroy_ids,
    far_spawn_points,
    leftover_actors,
    npc_blueprints,
    pick_blueprint,
    spawn_ego,
    spawn_npcs,
)
from av_td3.envs.carla.connection import (
    DOCKER_COMMAND,
    ClientFactory,
    connect,
    connect_with_retries,
    import_carla,
    real_client_factory,
    with_retries,
)
from av_td3.envs.carla.errors import CarlaConnectionError, CarlaUnavailableError
from av_td3.envs.carla.frames import ego_state, xy_to_route_frame
from av_td3.envs.carla.route_planner import PlannedRoute, RoutePlanner
from av_td3.envs.carla.camera import CameraSpec, camera_spec
from av_td3.envs.carla.config import CarlaSections
from av_td3.envs.carla.sensors import SensorSuite
from av_td3.envs.carla import world as shared_world
from av_td3.envs.carla.world import SyncWorld, restore_settings, shut_down_tm, tm_port_for
from av_td3.envs.actuators import ActuatorLimiter
from av_td3.envs.contract import (
    SCENARIO_NPCS,
    STEP_SECONDS,
    FrameStack,
    action_to_controls,
    make_action_space,
    make_observation_space,
)
from av_td3.envs.reward import COMPONENTS
from av_td3.envs.route import Route
from av_td3.envs.sections import resolve_sections
from av_td3.envs.task import NO_OBSTACLE_DISTANCE_M, NO_OBSTACLE_TTC_S, DrivingTask, StepEvents

logger = logging.getLogger(__name__)

#: The ego spawns this high above the road (CARLA drops it onto the surface), m.
SPAWN_LIFT_M = 0.3

#: Ego geometry used when the server's physics control does not give it (see ``vehicle_geometry``):
#: a Tesla Model 3's wheelbase, m, and the town backend's wheel angle at full lock, degrees.
FALLBACK_WHEELBASE_M = 2.875
FALLBACK_MAX_STEER_DEG = 35.0
#: A wheelbase read from the server outside this range (m) is taken as a misread (e.g. a unit change).
PLAUSIBLE_WHEELBASE_M = (1.0, 10.0)
_geometry_warned: list[bool] = []


class CarlaEnv(gym.Env):
    """The contract's driving task (``contract.py``) against a CARLA server the user started.

    Args:
        scenario: 0 / 1 / 2 = 20 / 50 / 100 NPCs; None = ``env.scenario``.
        host, port: server address; None = ``carla.host`` and ``carla.port + env_index * carla.port_step``.
        render_mode: None or ``"rgb_array"`` (the last camera image, RGB ``(h, w, 3)``).
        config: a ``Config``, a (partial) nested dict, or None (defaults). Reads the ``env``, ``reward``
            and ``carla`` sections (``CarlaSections``).
        client_factory: ``(host, port, timeout_s) -> client``; None = the real ``carla.Client``. Tests
            pass an in-process stand-in here (its ``carla_module`` attribute supplies the value types).
        env_index: index of this env among parallel envs: selects its server port and Traffic Manager port.
        carla_module: the module providing ``Transform``, ``VehicleControl``, ``command``...; None = the
            factory's ``carla_module`` or the real ``carla``.
        sleep: injectable wait used between connection attempts (first connection and reconnects).
        **env_overrides: ``env`` config fields, e.g. ``npc_count=0`` or ``route="random"`` (as for ``TownEnv``).

    Attributes ``wheelbase_m`` and ``max_steer_rad`` give the ego's geometry for classical controllers,
    read from its physics control at every spawn (``vehicle_geometry``; fallback 2.875 m and 35 deg).

    The constructor connects at once, retrying with backoff within ``carla.timeout_s`` in total (see
    ``connection.first_connect_schedule``), so that a server that is still starting is waited for and
    a missing one is reported after ``carla.timeout_s`` with the command that starts one
    (``CarlaConnectionError``); a missing ``carla`` package raises ``CarlaNotInstalledError`` with the
    install command.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / STEP_SECONDS))}

    def __init__(
        self,
        scenario: int | None = None,
        host: str | None = None,
        port: int | None = None,
        render_mode: str | None = None,
        config: Any = None,
        client_factory: ClientFactory | None = None,
        env_index: int = 0,
        carla_module: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        **env_overrides: Any,
    ):
        super().__init__()
        if scenario is not None:
            env_overrides["scenario"] = scenario
        # like TownEnv: keyword arguments are ``env`` fields (npc_count=0, route="random")
        cfg = resolve_sections(CarlaSections, config, env_overrides, owner="CarlaEnv")
        scenario = cfg.env.scenario
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if env_index < 0:
            raise ValueError(f"env_index must be >= 0, got {env_index}")
        self.cfg, self.env_cfg, self.carla_cfg = cfg, cfg.env, cfg.carla
        self.scenario = scenario
        self.npc_count = cfg.env.npc_count if cfg.env.npc_count is not None else SCENARIO_NPCS[scenario]
        self.env_index = int(env_index)
        self.host = host if host is not None else cfg.carla.host
        self.port = int(port) if port is not None else cfg.carla.port + self.env_index * cfg.carla.port_step
        self.tm_port = tm_port_for(self.port, self.env_index, cfg.carla.tm_port)
        self.roles = RoleNames(self.tm_port)
        self._share_key = (self.host, self.port, self.tm_port)  # see world.hold / release
        self.render_mode = render_mode
        self._factory = client_factory or real_client_factory
        self._api = carla_module or getattr(client_factory, "carla_module", None) or import_carla()
        self._sleep = sleep

        self.observation_space = make_observation_space(
            cfg.env.frame_stack, cfg.env.image_height, cfg.env.image_width, cfg.env.num_waypoints
        )
        self.action_space = make_action_space()
        self.task = DrivingTask(cfg.env, cfg.reward, STEP_SECONDS)
        self.actuators = ActuatorLimiter(cfg.env.actuator, STEP_SECONDS)  # the town's actuator limits
        self._frames = FrameStack(cfg.env.frame_stack)
        self._camera = self._camera_spec()

        self.actors = ActorBook()  # every actor spawned and not yet destroyed, across connections
        self._session: SyncWorld | None = None
        self._original_settings: Any = None
        self._planners: dict[str, RoutePlanner] = {}
        self._default_routes: dict[str, PlannedRoute] = {}
        self._tm_seed = cfg.carla.tm_seed
        self._ego: Any = None
        self.wheelbase_m, self.max_steer_rad = FALLBACK_WHEELBASE_M, math.radians(FALLBACK_MAX_STEER_DEG)
        self._sensors: SensorSuite | None = None
        self.route: Route | None = None
        self.planned_route: PlannedRoute | None = None
        self._last_obs: dict[str, np.ndarray] | None = None
        self._last_info: dict[str, Any] = {}
        self._faulted = False
        self.npc_ids: list[int] = []
        try:
            self._session = self._open_session(first=True)
        except CarlaUnavailableError:
            raise
        except RuntimeError as exc:  # connected, but the world could not be set up (e.g. load time-out)
            raise CarlaConnectionError(
                f"the CARLA server at {self.host}:{self.port} answered but setting up {cfg.carla.town} failed: {exc}"
            ) from exc

    # ------------------------------------------------------------------------------------------------
    # gymnasium API
    # ------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Destroy the previous episode's actors, plan a route, spawn ego, sensors and NPCs, tick once.

        After a fault (or when the server went away) this reconnects with backoff and rebuilds the world.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._tm_seed = int(seed)

        def attempt() -> tuple[dict, dict]:
            try:
                if self._session is None:
                    self._session = self._open_session()
                else:
                    self._end_episode(tick=True)
                    if seed is not None:
                        self._session.reseed(self._tm_seed)
                return self._start_episode()
            except RuntimeError:
                self._drop_session()
                raise

        try:
            return with_retries(attempt, self.carla_cfg.retries, self.carla_cfg.backoff_s,
                                f"reset of CARLA env {self.env_index} ({self.host}:{self.port})", self._sleep)
        except CarlaUnavailableError:
            raise
        except RuntimeError as exc:  # the server answers but an episode cannot be set up (or it hangs)
            raise CarlaUnavailableError(
                f"CARLA env {self.env_index} could not start an episode on {self.host}:{self.port} after "
                f"{self.carla_cfg.retries + 1} attempts; last error: {exc}. If the server hangs or crashed, "
                f"restart it ({DOCKER_COMMAND})."
            ) from exc

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._faulted:  # stepping after a fault without reset: repeat the truncation
            return self._last_obs, 0.0, False, True, dict(self._last_info)
        if self._ego is None or self._session is None:
            raise RuntimeError("CarlaEnv.step() called before reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,) = [steer, throttle_brake], got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        action = self.actuators(a)  # clipped to [-1, 1], rate-limited as in the town
        steer, throttle, brake = action_to_controls(action)
        try:
            self._ego.apply_control(self._api.VehicleControl(throttle=throttle, steer=steer, brake=brake))
            frame = self._session.tick()
            gray = self._sensors.wait_image(frame, self.carla_cfg.timeout_s)
            transform, velocity = self._ego.get_transform(), self._ego.get_velocity()
            state = ego_state(transform, velocity)
            events = self._step_events(transform, state.speed_mps, frame)
        except RuntimeError as exc:
            return self._fault(exc)
        vector, reward, terminated, truncated, info = self.task.step(state, action, events)
        obs = {"image": self._frames.push(gray), "vector": vector}
        self._last_obs, self._last_info = obs, info
        return obs, float(reward), bool(terminated), bool(truncated), dict(info)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        rgb = self._sensors.last_rgb() if self._sensors is not None else None
        if rgb is None:
            h, w = (self._camera.height, self._camera.width) if self._camera else (self.env_cfg.image_height,
                                                                                  self.env_cfg.image_width)
            return np.zeros((h, w, 3), dtype=np.uint8)
        return rgb

    def close(self) -> None:
        """Destroy every actor this env spawned; the last env of this process on this server and TM port
        also restores the world's original settings and shuts the TM down (best effort)."""
        if self._session is not None:
            try:
                self._end_episode(tick=False)
            except RuntimeError as exc:
                logger.warning("CARLA: cleanup on close failed: %s", exc)
            if shared_world.release(self._share_key, self):
                self._session.restore()
            self._session = None
        elif len(self.actors) or self._original_settings is not None:
            self._cleanup_after_fault()
        self._original_settings = None  # restored: a second close() has nothing to do
        self._ego = None
        super().close()

    # ------------------------------------------------------------------------------------------------
    # connection and episode life cycle
    # ------------------------------------------------------------------------------------------------
    def _open_session(self, first: bool = False) -> SyncWorld:
        """Connect and set the world up. ``first``: the constructor's connection, retried within
        ``carla.timeout_s``; otherwise one attempt (``reset()`` retries the whole session)."""
        c = self.carla_cfg
        if first:
            client = connect_with_retries(self._factory, self.host, self.port, c.timeout_s, c.retries, c.backoff_s,
                                          self._sleep)
        else:
            client = connect(self._factory, self.host, self.port, c.timeout_s)
        originals = self._original_settings or shared_world.shared_originals(self._share_key)
        session = SyncWorld.open(
            client, town=c.town, tm_port=self.tm_port, seed=self._tm_seed, no_rendering=c.no_rendering,
            timeout_s=c.timeout_s, load_timeout_s=c.load_timeout_s, original_settings=originals,
        )
        self._original_settings = session.original_settings
        try:
            destroyed = 0
            if len(self.actors):  # left behind by a faulted connection
                destroyed += self.actors.destroy_all(client, self._api, world=session.world)
            # ... and by an earlier process of this env that crashed (recognised by their role names)
            destroyed += destroy_ids(client, self._api, leftover_actors(session.world, self.roles))
            if destroyed:
                logger.info("CARLA: destroyed %d actors left by an earlier connection", destroyed)
                session.tick()  # the server removes them before anything spawns at the same spots
            name = str(session.map.name)
            if name not in self._planners:
                self._planners[name] = RoutePlanner(session.map, self.env_cfg.waypoint_spacing_m)
            library = session.world.get_blueprint_library()
            self._ego_bp = pick_blueprint(library, c.ego_blueprint, self.roles.ego)
            self._npc_bps = npc_blueprints(library, c.npc_filter)
            self._spawn_points = session.map.get_spawn_points()
        except Exception:
            if shared_world.shared_originals(self._share_key) is None:  # no other env of ours uses it
                session.restore()  # a synchronous world nobody ticks would freeze the server for everyone
            raise
        shared_world.hold(self._share_key, self, self._original_settings)
        self._faulted = False
        return session

    def _start_episode(self) -> tuple[dict, dict]:
        s, c = self._session, self.carla_cfg
        self.actuators.reset()  # wheels straight, pedals released
        planner = self._planners[str(s.map.name)]
        if self.env_cfg.route == "random":
            planned = planner.random_route(self._spawn_points, self.np_random, c.route_length_m)
        else:  # the same every episode: planned once per town
            key = str(s.map.name)
            if key not in self._default_routes:
                self._default_routes[key] = planner.default_route(self._spawn_points, c.route_start_index, c.route_length_m)
            planned = self._default_routes[key]
        self.planned_route = planned
        self.route = Route(xy_to_route_frame(planned.points), spacing_m=self.env_cfg.waypoint_spacing_m)

        # the route start first; a few waypoints on if something stands there
        candidates = [self._route_transform(planned, k) for k in range(0, min(4, len(planned.points) - 1))]
        self._ego, ego_at = spawn_ego(s.world, self.actors, self._ego_bp, candidates)
        self.wheelbase_m, self.max_steer_rad = vehicle_geometry(self._ego)
        bb = self._ego.bounding_box
        self._sensors = SensorSuite(  # records each sensor in self.actors as it spawns
            s.world, self._api, self._ego, self._camera,
            (self.env_cfg.image_height, self.env_cfg.image_width), c.obstacle_distance_m,
            obstacle_x_m=float(bb.location.x + bb.extent.x), book=self.actors, role_name=self.roles.sensor,
        )
        npc_points = far_spawn_points(self._spawn_points, ego_at.location, c.npc_min_distance_m)
        self.npc_ids = spawn_npcs(s.client, self._api, self.actors, self._npc_bps, npc_points, self.npc_count,
                                  self.np_random, s.tm_port, role_name=self.roles.npc)

        frame = s.tick()
        gray = self._sensors.wait_image(frame, c.timeout_s)
        transform = self._ego.get_transform()
        state = ego_state(transform, self._ego.get_velocity())
        events = self._step_events(transform, state.speed_mps, frame, episode_start=True)
        # the ego settling onto the road is not a collision or lane invasion of the episode
        events = StepEvents(off_road=events.off_road, obstacle_distance_m=events.obstacle_distance_m, ttc_s=events.ttc_s)
        vector, info = self.task.reset(self.route, state, events)
        obs = {"image": self._frames.reset(gray), "vector": vector}
        self._last_obs, self._last_info = obs, info
        return obs, dict(info)

    def _end_episode(self, tick: bool) -> None:
        """Stop the sensors, then destroy every actor of this env (sensors, ego, NPCs) in one batch."""
        if self._sensors is not None:
            self._sensors.stop()  # before destroy: a destroyed sensor still listening keeps its stream open
            self._sensors = None
        self._ego = None
        self.actors.destroy_all(self._session.client, self._api)
        if tick:
            self._session.tick()  # the server drops them before anything respawns at the same spots

    def _drop_session(self) -> None:
        """Forget a connection that failed; its actors stay in the book for the next one to destroy. Its
        Traffic Manager is shut down: else the reconnect would get it back (one TM per port and process)."""
        if self._sensors is not None:
            self._sensors.stop()
            self._sensors = None
        if self._session is not None:
            shared_world.release(self._share_key, self)
            shut_down_tm(self._session.tm)  # stale for every env of the process: they reconnect to a fresh one
        self._ego = None
        self._session = None

    def _fault(self, exc: BaseException) -> tuple[dict, float, bool, bool, dict]:
        message = f"CARLA server fault at {self.host}:{self.port}: {exc}"
        logger.warning("%s; the episode is truncated and the next reset() reconnects", message)
        self._drop_session()
        self._faulted = True
        info = dict(self._last_info)
        info.update(
            termination_reason="error", error=message, collision=False, lane_invasion=False, off_road=False,
            success=False, reward_components={k: 0.0 for k in COMPONENTS},
        )
        self._last_info = info
        return self._last_obs, 0.0, False, True, dict(info)

    def _cleanup_after_fault(self) -> None:
        """On close without a live connection: one attempt to destroy leftovers and restore settings."""
        try:
            client = connect(self._factory, self.host, self.port, self.carla_cfg.timeout_s)
            world = client.get_world()
            self.actors.destroy_all(client, self._api, world=world)
            if self._original_settings is not None:
                restore_settings(world, client.get_trafficmanager(self.tm_port), self._original_settings)
        except RuntimeError as exc:
            logger.warning("CARLA: could not clean up after the fault (%s); %d actors may remain", exc, len(self.actors))

    # ------------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------------
    def _camera_spec(self) -> CameraSpec | None:
        """The town's camera geometry in CARLA (``camera.py``); None without rendering."""
        if self.carla_cfg.no_rendering:
            return None  # GPU sensors deliver nothing without rendering: frames stay black
        return camera_spec(self.env_cfg, self.carla_cfg)

    def _route_transform(self, planned: PlannedRoute, k: int) -> Any:
        """Transform at route point ``k`` heading along the route (CARLA frame), lifted above the road
        surface there (hilly towns: the road height comes from the map, not from the route's start)."""
        (x0, y0), (x1, y1) = planned.points[k], planned.points[k + 1]
        api = self._api
        road = self._session.map.get_waypoint(api.Location(x=float(x0), y=float(y0)))
        z = float(road.transform.location.z) if road is not None else 0.0
        return api.Transform(
            api.Location(x=float(x0), y=float(y0), z=z + SPAWN_LIFT_M),
            api.Rotation(yaw=math.degrees(math.atan2(y1 - y0, x1 - x0))),
        )

    def _step_events(self, transform: Any, speed_mps: float, frame: int, episode_start: bool = False) -> StepEvents:
        """Events of simulation frame ``frame`` (matched by ``event.frame``) and the off-road test."""
        ev = self._sensors.start_episode(frame) if episode_start else self._sensors.pop_events(frame)
        off_road = self._session.map.get_waypoint(
            transform.location, project_to_road=False, lane_type=self._api.LaneType.Driving
        ) is None
        gap, ttc = NO_OBSTACLE_DISTANCE_M, NO_OBSTACLE_TTC_S
        if math.isfinite(ev.obstacle_distance_m):
            gap = max(ev.obstacle_distance_m, 0.0)
            ttc = time_to_collision(gap, transform, speed_mps, ev.obstacle_actor)
        return StepEvents(collision=ev.collision, lane_invasion=ev.lane_invasion, off_road=off_road,
                          obstacle_distance_m=gap, ttc_s=ttc)


def vehicle_geometry(vehicle: Any) -> tuple[float, float]:
    """``(wheelbase m, max front-wheel angle rad)`` from ``vehicle.get_physics_control().wheels``.

    CARLA 0.9.x lists the wheels front-left, front-right, rear-left, rear-right; ``position`` is the
    wheel's WORLD position in centimetres (Unreal units, unlike the rest of the API; carla#2153) and
    ``max_steer_angle`` is in degrees. The wheelbase is the distance between the front and rear axle
    centres. When the control cannot be read (no such method, fewer than 4 wheels, a wheelbase outside
    ``PLAUSIBLE_WHEELBASE_M``, no steered wheel) the fallback ``FALLBACK_WHEELBASE_M`` /
    ``FALLBACK_MAX_STEER_DEG`` is used and logged. A ``RuntimeError`` (server time-out) propagates.
    """
    fallback = FALLBACK_WHEELBASE_M, math.radians(FALLBACK_MAX_STEER_DEG)
    try:
        wheels = list(vehicle.get_physics_control().wheels)
        if len(wheels) < 4:
            raise ValueError(f"{len(wheels)} wheels")
        axle = [[sum(getattr(w.position, k) for w in pair) / 200.0 for k in "xyz"]  # cm -> m, mean of 2
                for pair in (wheels[0:2], wheels[2:4])]
        wheelbase = math.dist(*axle)
        steer_deg = max(float(w.max_steer_angle) for w in wheels[0:2])
        if not PLAUSIBLE_WHEELBASE_M[0] <= wheelbase <= PLAUSIBLE_WHEELBASE_M[1] or not 0.0 < steer_deg < 90.0:
            raise ValueError(f"wheelbase {wheelbase:.3f} m, max steer {steer_deg:.1f} deg")
    except (AttributeError, TypeError, ValueError) as exc:
        log = logger.debug if _geometry_warned else logger.warning  # once per process, not every reset
        _geometry_warned.append(True)
        log("could not read the ego's geometry from its physics control (%s); using wheelbase "
                       "%.3f m and max steer %.0f deg", exc, FALLBACK_WHEELBASE_M, FALLBACK_MAX_STEER_DEG)
        return fallback
    return wheelbase, math.radians(steer_deg)


def time_to_collision(gap_m: float, ego_transform: Any, ego_speed_mps: float, other: Any) -> float:
    """Gap / closing speed along the ego's heading, s (``NO_OBSTACLE_TTC_S`` when not closing in).

    Same definition as ``task.nearest_obstacle_ahead``; computed in CARLA's frame (both vectors are).
    """
    other_speed_along = 0.0
    if other is not None:
        yaw = math.radians(ego_transform.rotation.yaw)
        v = other.get_velocity()
        other_speed_along = float(v.x) * math.cos(yaw) + float(v.y) * math.sin(yaw)
    closing = ego_speed_mps - other_speed_along
    if closing <= 1e-3:
        return NO_OBSTACLE_TTC_S
    return min(gap_m / closing, NO_OBSTACLE_TTC_S)

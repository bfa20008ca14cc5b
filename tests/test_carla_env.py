"""Tests of the CARLA 0.9.16 backend (``av_td3.envs.carla``).

No CARLA server can run on these machines (it needs a GPU and a docker engine), so every env test
runs against the in-process stand-in of ``tests/carla_standin.py``, which reproduces the subset of the
client/world/actor/sensor/Traffic-Manager API the env uses. A few tests use the REAL ``carla`` wheel
where it is installed: the connection error path and its retries (a real ``carla.Client`` pointed at
an unused port) and route planning on a real ``carla.Map`` built from a hand-made OpenDRIVE file (no
server needed).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import types

import gymnasium
from gymnasium.utils.env_checker import check_env
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the stand-in lives beside this file
from carla_standin import (  # noqa: E402
    FakeClock,
    Location,
    Rotation,
    StandinCluster,
    StandinServer,
    Transform,
    Vector3D,
    grid_town,
    ring_xodr,
    settings_tuple,
)

from av_td3.config import Config, ConfigError  # noqa: E402
from av_td3.envs.carla import connection  # noqa: E402
from av_td3.envs.carla.connection import (  # noqa: E402
    DOCKER_COMMAND,
    INSTALL_COMMAND,
    MIN_ATTEMPT_S,
    CarlaConnectionError,
    CarlaNotInstalledError,
    first_connect_schedule,
    with_retries,
)
from av_td3.envs.carla.env import SCENARIO_NPCS, CarlaEnv  # noqa: E402
from av_td3.envs.carla.frames import ego_state, xy_to_route_frame  # noqa: E402
from av_td3.envs.carla.route_planner import RoutePlanner  # noqa: E402
from av_td3.envs.carla.sensors import GrayscaleResizer  # noqa: E402
from av_td3.envs.contract import INFO_KEYS, LATERAL_SCALE_M  # noqa: E402
from av_td3.envs.route import Route  # noqa: E402
from av_td3.envs.task import DrivingTask, EgoState, StepEvents  # noqa: E402

FAST = {"carla": {"timeout_s": 0.5, "backoff_s": 0.0, "retries": 2, "route_length_m": 150.0}}


def make_cfg(**sections) -> Config:
    raw = {k: dict(v) for k, v in FAST.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return Config.from_any(raw)


@pytest.fixture
def server():
    return StandinServer()


@pytest.fixture
def env(server):
    e = CarlaEnv(client_factory=server, config=make_cfg())
    yield e
    e.close()


def hero_count(server) -> int:
    return sum(v.attributes.get("role_name", "").startswith("av_td3_ego_") for v in server.vehicles())


# ------------------------------------------------------------------------------------------------
# connection, settings, ticking
# ------------------------------------------------------------------------------------------------
def test_connect_loads_town_and_sets_synchronous_fixed_step(server):
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"tm_seed": 7, "load_timeout_s": 33.0}))
    assert server.factory_calls == [("localhost", 2000, 0.5)]
    assert server.loads == [("Town01", 33.0)]  # the stand-in starts on another map, like a fresh server
    assert settings_tuple(server.settings) == (True, False, 0.05)
    tm = server.tms[env.tm_port]
    assert env.tm_port == 8000 and tm.synchronous and tm.seed == 7
    env.reset(seed=5)
    assert tm.seed == 5  # reset(seed) reseeds the Traffic Manager too
    env.close()


def test_bev_camera_looks_down_from_above(server):
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"camera": {"view": "bev"}}, carla={"bev_height_m": 25.0}))
    env.reset(seed=0)
    cam = next(s for s in server.sensors() if s.type_id == "sensor.camera.rgb")
    # straight down from 25 m over the centre of the town's BEV rectangle (10 m behind .. 30 m ahead)
    assert (cam._transform.location.x, cam._transform.location.z, cam._transform.rotation.pitch) == pytest.approx((10, 25, -90))
    assert float(cam.attributes["fov"]) == pytest.approx(math.degrees(2 * math.atan(20 / 25)))
    env.close()


def test_a_world_left_synchronous_is_released_before_loading(server):
    server.settings.synchronous_mode = True  # left so by a client that crashed
    server.settings.fixed_delta_seconds = 0.1
    env = CarlaEnv(client_factory=server, config=make_cfg())
    assert server.settings_history[0][0] is False  # released before load_world
    assert server.loads[-1][0] == "Town01" and settings_tuple(server.settings) == (True, False, 0.05)
    env.close()
    # synchronous settings found on connect were left by a crashed client: close() restores the rest of
    # what it found, but asynchronous (a synchronous world nobody ticks freezes the server)
    assert settings_tuple(server.settings) == (False, False, 0.1)


def test_ticks_are_synchronous_one_per_step(env, server):
    env.reset(seed=0)
    npc = next(v for v in server.vehicles() if v.autopilot_port is not None)
    ticks, pos = server.ticks, (npc.get_location().x, npc.get_location().y)
    time.sleep(0.05)  # wall time passing does not move a synchronous world
    assert (npc.get_location().x, npc.get_location().y) == pos
    for k in range(1, 6):
        env.step(np.array([0.0, 0.3], np.float32))
        assert server.ticks == ticks + k
    moved = math.dist(pos, (npc.get_location().x, npc.get_location().y))
    assert moved == pytest.approx(5 * 0.05 * server.npc_speed_mps, rel=1e-6)
    assert server.async_ticks == 0 and server.tm_async_ticks == 0


def test_reset_obs_info_and_spaces(env, server):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(INFO_KEYS) <= set(info)
    assert info["termination_reason"] == "none"
    assert hero_count(server) == 1
    hero = server.hero()
    assert hero.type_id == "vehicle.tesla.model3"
    # heading along the route, at its start
    start = env.planned_route.points[0]
    assert math.dist((hero.get_location().x, hero.get_location().y), start) < 0.5
    assert abs(info["heading_error_rad"]) < 1e-6 and abs(info["lateral_deviation_m"]) < 1e-6
    # camera: 168x168 (twice the 84x84 image, same aspect), 90 deg at x=1.6 z=1.5; plus collision, lane invasion, obstacle
    cams = [s for s in server.sensors() if s.type_id == "sensor.camera.rgb"]
    assert len(cams) == 1
    cam = cams[0]
    assert (cam.attributes["image_size_x"], cam.attributes["image_size_y"], float(cam.attributes["fov"])) == ("168", "168", 90.0)
    assert (cam._transform.location.x, cam._transform.location.z) == pytest.approx((1.6, 1.5))
    assert cam._transform.rotation.pitch == pytest.approx(Config().env.camera.pitch_deg)
    kinds = sorted(s.type_id for s in server.sensors())
    assert kinds == ["sensor.camera.rgb", "sensor.other.collision", "sensor.other.lane_invasion", "sensor.other.obstacle"]


def test_ego_geometry_from_physics_control_reaches_the_classical_controller(env, server, monkeypatch):
    from av_td3.baselines.classical import make_classical_policy
    from carla_standin import Vehicle

    env.reset(seed=0)  # wheel positions are world centimetres; the ego may face any way
    assert env.wheelbase_m == pytest.approx(Vehicle.WHEELBASE_M)
    assert env.max_steer_rad == pytest.approx(math.radians(Vehicle.MAX_STEER_DEG))
    controller = make_classical_policy()
    controller.reset(env)
    assert (controller.wheelbase_m, controller.max_steer_rad) == (env.wheelbase_m, env.max_steer_rad)
    # a server whose physics control cannot be read: the documented fallback (2.875 m, 35 deg)
    monkeypatch.setattr(Vehicle, "get_physics_control", lambda self: types.SimpleNamespace(wheels=[]))
    env.reset(seed=1)
    assert (env.wheelbase_m, env.max_steer_rad) == (2.875, pytest.approx(math.radians(35.0)))
    monkeypatch.delattr(Vehicle, "get_physics_control")
    env.reset(seed=2)
    assert env.wheelbase_m == 2.875


@pytest.mark.parametrize("scenario", [0, 1, 2])
def test_npcs_per_scenario_on_autopilot_away_from_ego(scenario):
    server = StandinServer(map_factory=lambda name: grid_town(nx=6, ny=4, spawn_every_m=12.0, name=f"Carla/Maps/{name}"))
    env = CarlaEnv(scenario=scenario, client_factory=server, config=make_cfg())
    env.reset(seed=scenario)
    npcs = [v for v in server.vehicles() if v.autopilot_port is not None]
    assert len(npcs) == SCENARIO_NPCS[scenario]
    assert {v.autopilot_port for v in npcs} == {env.tm_port}
    ego = server.hero().get_location()
    assert min(math.hypot(v.get_location().x - ego.x, v.get_location().y - ego.y) for v in npcs) >= 20.0
    env.close()


def test_npc_count_override_and_bad_scenario(server):
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 3}))
    env.reset(seed=0)
    assert len([v for v in server.vehicles() if v.autopilot_port is not None]) == 3
    env.close()
    with pytest.raises(ConfigError, match="scenario"):
        CarlaEnv(scenario=5, client_factory=server, config=make_cfg())
    with pytest.raises(TypeError, match="unknown argument"):
        CarlaEnv(client_factory=server, config=make_cfg(), npc_cuont=3)
    env = CarlaEnv(client_factory=server, config=make_cfg(), npc_count=2)  # env fields as kwargs, like TownEnv
    env.reset(seed=0)
    assert len([v for v in server.vehicles() if v.autopilot_port is not None]) == 2
    for bad in ([0.0], [np.nan, 0.0]):
        with pytest.raises(ValueError, match="action"):
            env.step(np.array(bad))
    env.close()


# ------------------------------------------------------------------------------------------------
# sensors -> observations, controls
# ------------------------------------------------------------------------------------------------
def two_tone(frame, camera):
    """Left half red, right half blue; brightness grows with the frame number."""
    w, h = int(camera.attributes["image_size_x"]), int(camera.attributes["image_size_y"])
    img = np.zeros((h, w, 4), np.uint8)
    level = min(40 * frame, 255)
    img[:, : w // 2, 2] = level  # BGRA: red
    img[:, w // 2 :, 0] = level  # blue
    img[..., 3] = 255
    return img


@pytest.mark.parametrize("delay_s", [0.0, 0.02])
def test_camera_callbacks_become_grayscale_frame_stack(server, delay_s):
    server.image_fn = two_tone
    server.sensor_delay_s = delay_s  # CARLA delivers sensor data on its own threads, after tick() returns
    env = CarlaEnv(client_factory=server, config=make_cfg())
    obs, _ = env.reset(seed=0)
    first = server.frame
    img = obs["image"]
    assert img.shape == (4, 84, 84) and img.dtype == np.uint8
    assert all((img[k] == img[0]).all() for k in range(4))  # stack filled with the first frame

    def expected(frame):
        level = min(40 * frame, 255)
        return round(0.299 * level), round(0.114 * level)  # luma of red, of blue

    red, blue = expected(first)
    assert img[0, :, :40].min() == img[0, :, :40].max() == red
    assert img[0, :, 44:].min() == img[0, :, 44:].max() == blue
    obs, *_ = env.step(np.zeros(2, np.float32))
    red2, blue2 = expected(server.frame)
    assert (obs["image"][-1, :, :40] == red2).all() and (obs["image"][-1, :, 44:] == blue2).all()
    assert (obs["image"][:3] == img[1:]).all()  # oldest first: the stack shifted by one
    env.close()


def test_render_returns_last_camera_image_rgb(server):
    server.image_fn = two_tone
    env = CarlaEnv(client_factory=server, config=make_cfg(), render_mode="rgb_array")
    env.reset(seed=0)
    rgb = env.render()
    assert rgb.shape == (168, 168, 3)
    assert rgb[0, 0, 0] > 0 and rgb[0, 0, 2] == 0 and rgb[0, -1, 2] > 0 and rgb[0, -1, 0] == 0
    env.close()


@pytest.mark.parametrize(
    "action, steer, throttle, brake",
    [([0.3, 0.5], 0.3, 0.5, 0.0), ([-1.0, -0.7], -1.0, 0.0, 0.7), ([2.0, 3.0], 1.0, 1.0, 0.0), ([0.0, 0.0], 0.0, 0.0, 0.0)],
)
def test_action_maps_to_vehicle_control(server, action, steer, throttle, brake):
    ideal = {"actuator": {"steer_rate_per_s": None, "pedal_rate_per_s": None}}
    env = CarlaEnv(client_factory=server, config=make_cfg(env=ideal))
    env.reset(seed=0)
    env.step(np.array(action, np.float32))
    c = server.hero().controls_applied[-1]
    assert (c.steer, c.throttle, c.brake) == pytest.approx((steer, throttle, brake))
    assert not c.reverse and not c.hand_brake
    env.close()


def test_actuator_rate_limit_applies_as_in_the_town(env, server):
    """env.actuator (default 2.0 per second): the control moves 0.1 per 0.05 s step toward the command,
    and starts from rest again after a reset."""
    env.reset(seed=0)
    seen = []
    for _ in range(3):
        env.step(np.array([1.0, -1.0], np.float32))
        c = server.hero().controls_applied[-1]
        seen += [c.steer, c.brake]
    assert seen == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    env.reset(seed=1)
    env.step(np.array([-1.0, 1.0], np.float32))
    c = server.hero().controls_applied[-1]
    assert (c.steer, c.throttle) == pytest.approx((-0.1, 0.1))


def test_events_end_the_episode(env, server):
    env.reset(seed=0)
    server.inject_lane_invasion(server.hero().id)
    _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert info["lane_invasion"] and not terminated
    server.inject_collision(server.hero().id)
    _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert terminated and not truncated and info["collision"] and info["termination_reason"] == "collision"


def test_obstacle_ahead_gives_gap_and_ttc(server):
    server.physics = False
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    hero = server.hero()
    t = hero.get_transform()
    yaw = math.radians(t.rotation.yaw)
    hero.set_target_velocity(Vector3D(x=10 * math.cos(yaw), y=10 * math.sin(yaw)))
    # a parked car 15 m ahead (centre to centre): gap = 15 - 2.4 (bumper mount) - 2.4 (its half length)
    ahead = Transform(Location(x=t.location.x + 15 * math.cos(yaw), y=t.location.y + 15 * math.sin(yaw), z=0.3),
                      Rotation(yaw=t.rotation.yaw))
    parked = server.world.spawn_actor(server.library.find("vehicle.audi.a2"), ahead)
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["obstacle_distance_m"] == pytest.approx(15 - 2.4 - 2.4, abs=1e-6)
    assert info["ttc_s"] == pytest.approx((15 - 4.8) / 10.0, rel=1e-6)
    parked.destroy()
    env.close()


# ------------------------------------------------------------------------------------------------
# frames, parity with the town's task
# ------------------------------------------------------------------------------------------------
def test_frame_conversion_signs():
    # CARLA: yaw 0 faces +x and +y is on the vehicle's right; yaw 90 faces +y (south in map view)
    s = ego_state(Transform(Location(x=3.0, y=4.0), Rotation(yaw=90.0)), Vector3D(x=0.0, y=5.0))
    assert (s.x, s.y, s.yaw, s.speed_mps) == pytest.approx((3.0, -4.0, -math.pi / 2, 5.0))
    pts = xy_to_route_frame(np.array([[0.0, 0.0], [10.0, 0.0]]))
    route = Route(pts, spacing_m=2.0)
    right_of_lane = ego_state(Transform(Location(x=5.0, y=1.0), Rotation(yaw=0.0)), Vector3D())
    p = route.project(right_of_lane.x, right_of_lane.y, right_of_lane.yaw)
    assert p.lateral_m == pytest.approx(1.0)  # CARLA +y of an eastbound route is its right: positive
    turned_right = ego_state(Transform(Location(x=5.0, y=0.0), Rotation(yaw=10.0)), Vector3D())
    assert route.project(turned_right.x, turned_right.y, turned_right.yaw).heading_error_rad == pytest.approx(-math.radians(10))


def test_lateral_deviation_sign_in_env(server):
    server.physics = False
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    hero = server.hero()
    t = hero.get_transform()
    yaw = math.radians(t.rotation.yaw)
    right = (-math.sin(yaw), math.cos(yaw))  # CARLA's right vector
    hero.set_transform(Transform(Location(x=t.location.x + 1.0 * right[0], y=t.location.y + 1.0 * right[1], z=0.3),
                                 Rotation(yaw=t.rotation.yaw + 5.0)))
    obs, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["lateral_deviation_m"] == pytest.approx(1.0, abs=1e-6)
    assert obs["vector"][1] == pytest.approx(1.0 / LATERAL_SCALE_M, abs=1e-6)
    assert info["heading_error_rad"] == pytest.approx(-math.radians(5.0), abs=1e-6)
    env.close()


def as_carla_stores(s: EgoState) -> EgoState:
    """The state rounded as CARLA keeps it (float32 metres and degrees), so both sides see the same numbers."""
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    return EgoState(f32(s.x), -f32(-s.y), -math.radians(f32(-math.degrees(s.yaw))), s.speed_mps)


def test_reward_and_termination_parity_with_the_shared_task(server):
    """The town computes reward/termination with ``DrivingTask`` from (x, y, yaw, speed); feeding the
    same states to a reference ``DrivingTask`` and, converted to CARLA's frame, to this env must give
    identical rewards, flags and info: this checks the env's state extraction and conversions."""
    server.physics = False
    cfg = make_cfg(env={"npc_count": 0})
    env = CarlaEnv(client_factory=server, config=cfg)
    env.reset(seed=0)
    hero = server.hero()
    ref = DrivingTask(cfg.env, cfg.reward)
    ref_route = Route(env.route.waypoints, spacing_m=None)
    x0, y0 = env.route.waypoints[0]
    yaw0 = float(env.route.headings[0])
    ref.reset(ref_route, EgoState(x0, y0, yaw0, 0.0))
    rng = np.random.default_rng(0)
    # route-frame states along the route: some left, some right of the centre, turning, speeding up...
    for k in range(1, 41):
        progress = 0.4 * k
        x, y, tangent = ref_route.point_at(progress)
        lateral = 1.2 * math.sin(k / 3.0)  # within the lane: no lane invasion, no off-road
        x, y = x + lateral * math.sin(tangent), y - lateral * math.cos(tangent)  # right normal (sin, -cos)
        state = as_carla_stores(EgoState(x, y, tangent + 0.2 * math.sin(k / 5.0), 8.0 + k * 0.1))
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        # the same state in CARLA's frame
        hero.set_transform(Transform(Location(x=state.x, y=-state.y, z=0.3), Rotation(yaw=-math.degrees(state.yaw))))
        hero.speed = state.speed_mps
        obs, reward, terminated, truncated, info = env.step(action)
        r_vec, r_reward, r_term, r_trunc, r_info = ref.step(state, action, StepEvents())
        # (velocity is float32 in CARLA too: ~1e-6 relative on the speed)
        assert reward == pytest.approx(r_reward, abs=1e-5)
        assert (terminated, truncated) == (r_term, r_trunc)
        np.testing.assert_allclose(obs["vector"], r_vec, atol=1e-5)
        for key in ("lateral_deviation_m", "heading_error_rad", "speed_kmh", "route_completion", "distance_m"):
            assert info[key] == pytest.approx(r_info[key], abs=1e-5), key
        assert info["reward_components"] == pytest.approx(r_info["reward_components"], abs=1e-5)
    # and off the road on the left, across the centre line (a lane invasion too): both end the same way
    x, y, tangent = ref_route.point_at(0.4 * 41)
    state = as_carla_stores(EgoState(x - 6.0 * math.sin(tangent), y + 6.0 * math.cos(tangent), tangent, 8.0))
    hero.set_transform(Transform(Location(x=state.x, y=-state.y, z=0.3), Rotation(yaw=-math.degrees(state.yaw))))
    hero.speed = state.speed_mps
    _, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    events = StepEvents(off_road=True, lane_invasion=True)
    _, r_reward, r_term, r_trunc, r_info = ref.step(state, np.zeros(2, np.float32), events)
    assert terminated and r_term and info["termination_reason"] == r_info["termination_reason"] == "off_road"
    assert info["off_road"] and info["lane_invasion"]
    assert reward == pytest.approx(r_reward, abs=1e-5)
    env.close()


def test_town_env_and_carla_env_agree_when_the_ego_states_agree():
    """End to end: the town env drives its default route (pure-pursuit baseline plus a weave, so the ego
    swings left and right of the lane centre); the CARLA env (a stand-in world whose only lane is that
    route, mirrored into CARLA's frame) gets the town ego's state after every step. Rewards, flags and
    info must agree. Only the route's first straight is driven: in bends the CARLA env's re-traced
    route (``Waypoint.next`` every 1 m) is discretised a few cm differently from the town's."""
    from av_td3.baselines.pure_pursuit import PurePursuit
    from av_td3.envs.town.env import TownEnv
    from carla_standin import Lane, StandinMap

    cfg = make_cfg(env={"npc_count": 0})
    town = TownEnv(config=cfg)
    t_obs, _ = town.reset(seed=0)
    pts = np.stack([town.route.waypoints[:, 0], -town.route.waypoints[:, 1]], axis=1)  # to CARLA's frame

    def pose(i, a, b):  # at point i, heading from point a to point b
        return Transform(Location(x=float(pts[i, 0]), y=float(pts[i, 1]), z=0.3),
                         Rotation(yaw=math.degrees(math.atan2(pts[b, 1] - pts[a, 1], pts[b, 0] - pts[a, 0]))))

    def route_map(name):  # spawn points at the route's start and end: the default route is the whole lane
        return StandinMap(f"Carla/Maps/{name}", [Lane(0, pts, 0, -1, width=7.0)], [pose(0, 0, 1), pose(-1, -2, -1)])

    server = StandinServer(map_factory=route_map)
    server.physics = False
    env = CarlaEnv(client_factory=server, config=cfg)
    c_obs, _ = env.reset(seed=0)
    assert env.route.length_m == pytest.approx(town.route.length_m, abs=0.1)
    np.testing.assert_allclose(c_obs["vector"], t_obs["vector"], atol=1e-5)
    driver = PurePursuit(wheelbase_m=town.wheelbase_m, target_speed_kmh=cfg.env.target_speed_kmh,
                         waypoint_scale_m=cfg.env.num_waypoints * cfg.env.waypoint_spacing_m)
    hero = server.hero()
    laterals = []
    for k in range(120):
        action = driver(t_obs) + np.array([0.2 * math.sin(k / 6.0), 0.0], np.float32)
        t_obs, t_reward, t_term, t_trunc, t_info = town.step(action)
        v = town.vehicle
        hero.set_transform(Transform(Location(x=v.x, y=-v.y, z=0.3), Rotation(yaw=-math.degrees(v.yaw))))
        hero.speed = v.speed
        c_obs, c_reward, c_term, c_trunc, c_info = env.step(action)
        assert (c_term, c_trunc) == (t_term, t_trunc)
        assert c_reward == pytest.approx(t_reward, abs=1e-4)
        np.testing.assert_allclose(c_obs["vector"], t_obs["vector"], atol=1e-4)
        for key in ("lateral_deviation_m", "heading_error_rad", "speed_kmh", "route_completion"):
            assert c_info[key] == pytest.approx(t_info[key], abs=1e-4), key
        for key in ("collision", "lane_invasion", "off_road", "termination_reason"):
            assert c_info[key] == t_info[key], key
        laterals.append(t_info["lateral_deviation_m"])
    assert min(laterals) < -0.05 and max(laterals) > 0.05  # both sides of the lane centre were visited
    assert town.route.project(town.vehicle.x, town.vehicle.y, town.vehicle.yaw).segment < 30  # still on the straight
    env.close()
    town.close()


# ------------------------------------------------------------------------------------------------
# routes
# ------------------------------------------------------------------------------------------------
def on_some_lane(town, pts_xy, tol=0.05):
    return all(town.project(x, y)[2] <= tol for x, y in pts_xy)


def test_route_planning_on_a_hand_made_topology():
    town = grid_town(nx=3, ny=2, block_m=100.0)
    planner = RoutePlanner(town, spacing_m=2.0)
    # straight through a junction along the bottom street (eastbound lane: y = +1.75 in CARLA)
    r = planner.plan((20.0, 1.75), (180.0, 1.75), 0.0, 0.0)
    assert r.length_m == pytest.approx(160.0, abs=0.05)
    assert r.start_yaw_deg == pytest.approx(0.0)
    assert np.allclose(r.points[:, 1], 1.75)
    spacing = np.hypot(*np.diff(r.points, axis=0).T)
    assert np.allclose(spacing[:-1], 2.0) and spacing[-1] <= 2.0 + 1e-9
    # right turn at x=100 into the southbound lane (x = 98.25), not around the block
    r = planner.plan((20.0, 1.75), (98.25, 50.0), 0.0, 90.0)
    assert 118.0 < r.length_m < 128.0
    assert on_some_lane(town, r.points) and np.allclose(r.points[-1], (98.25, 50.0))
    # the opposite direction of the same street: the westbound lane, reached by going round a block
    r = planner.plan((20.0, 1.75), (50.0, -1.75), 0.0, 180.0)
    assert r.length_m > 200.0 and on_some_lane(town, r.points)
    assert np.allclose(r.points[-1], (50.0, -1.75))


def test_default_and_random_routes_from_spawn_points():
    town = grid_town()
    planner = RoutePlanner(town, spacing_m=2.0)
    spawns = town.get_spawn_points()
    a = planner.default_route(spawns, 0, 150.0)
    b = planner.default_route(spawns, 0, 150.0)
    assert np.array_equal(a.points, b.points) and abs(a.length_m - 150.0) < 30.0
    r1 = planner.random_route(spawns, np.random.default_rng(3), 150.0)
    r2 = planner.random_route(spawns, np.random.default_rng(3), 150.0)
    others = [planner.random_route(spawns, np.random.default_rng(s), 150.0) for s in range(4, 8)]
    assert np.array_equal(r1.points, r2.points)
    assert any(len(o.points) != len(r1.points) or not np.allclose(o.points, r1.points) for o in others)
    for r in [r1, *others]:
        assert 75.0 <= r.length_m <= 225.0 and on_some_lane(town, r.points)


def test_env_random_route_is_seeded(server):
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"route": "random", "npc_count": 2}))
    env.reset(seed=11)
    first = env.planned_route.points.copy()
    env.reset(seed=11)
    assert np.array_equal(first, env.planned_route.points)
    env.close()


def test_route_planning_on_a_real_carla_map_from_opendrive():
    carla = pytest.importorskip("carla")
    cmap = carla.Map("ring", ring_xodr())  # a real carla.Map; needs no server
    planner = RoutePlanner(cmap, spacing_m=2.0)
    assert len(planner.edges) == 16  # 8 roads x 2 directions
    r = planner.plan((20.0, 1.75), (100.0, 1.75), 0.0, 0.0)
    assert r.length_m == pytest.approx(80.0, abs=0.1)
    # behind the start on the same lane: once round the ring (perimeter of the lane's centre line)
    r = planner.plan((100.0, 1.75), (20.0, 1.75), 0.0, 0.0)
    perimeter = 2 * (100.0 + 40.0) + 2 * math.pi * (10.0 + 1.75) - 80.0
    assert r.length_m == pytest.approx(perimeter, rel=0.01)
    # every point on lane -1 (the ring direction); get_waypoint snaps to a ~0.1 m approximation on arcs
    for x, y in r.points:
        wp = cmap.get_waypoint(carla.Location(x=float(x), y=float(y)))
        assert wp.lane_id == -1 and wp.transform.location.distance(carla.Location(x=float(x), y=float(y))) < 0.25


# ------------------------------------------------------------------------------------------------
# accounting, faults, close
# ------------------------------------------------------------------------------------------------
def test_no_actor_leaks_over_100_resets(server):
    env = CarlaEnv(client_factory=server, config=make_cfg())
    for k in range(100):
        env.reset(seed=k if k % 10 == 0 else None)
        if k % 25 == 0:
            env.step(np.array([0.1, 0.5], np.float32))
        npcs = [v for v in server.vehicles() if v.autopilot_port is not None]
        assert len(npcs) == 20
        assert len(server.actors) == 1 + 4 + 20 == len(env.actors)
        assert set(server.actors) == set(env.actors.ids)
        assert hero_count(server) == 1
    env.close()
    assert server.actors == {}
    assert server.destroyed_listening == 0  # every sensor was stop()ped before destroy()
    assert server.spawned == server.destroyed == 100 * 25
    assert server.single_destroys == 0 and len(server.destroy_batches) == 100  # one batch per reset/close


def test_sensors_are_stopped_then_destroyed_in_the_one_batch(env, server):
    """Against the in-process stand-in (no CARLA server can run here): on reset and on close the
    sensors are stop()ped and then destroyed in the same single batch of DestroyActor as the ego and
    the NPCs (sensors first, ahead of the vehicle they are attached to), never one RPC per sensor."""
    env.reset(seed=0)
    for end in (lambda: env.reset(seed=1), env.close):
        sensors = server.sensors()
        sensor_ids, everything = {a.id for a in sensors}, set(server.actors)
        assert len(sensor_ids) == 4 and len(everything) == 1 + 4 + 20
        server.destroy_batches.clear()
        end()
        assert len(server.destroy_batches) == 1  # one batch for all of them
        batch = server.destroy_batches[0]
        assert sorted(batch) == sorted(everything) and set(batch[:4]) == sensor_ids  # sensors first
        assert server.single_destroys == 0
        assert all(s.stop_calls == 1 and not s.is_alive for s in sensors)
        assert server.destroyed_listening == 0  # stop() came before the batch destroyed them
    assert server.actors == {} and len(env.actors) == 0


def test_half_built_sensor_suite_is_destroyed_by_the_batch(server, monkeypatch):
    """Against the in-process stand-in (no CARLA server can run here): when a sensor fails to spawn
    part way, the sensors already spawned are stop()ped and left in the actor account; the retry
    destroys them, with the ego, in one batch (no single-actor destroys, nothing leaks)."""
    from carla_standin import World

    spawn = World.spawn_actor
    failures = [RuntimeError("time-out of 500ms while waiting for the simulator")]

    def flaky(self, blueprint, transform, attach_to=None, attachment_type=None):
        if blueprint.id == "sensor.other.obstacle" and failures:
            raise failures.pop()
        return spawn(self, blueprint, transform, attach_to, attachment_type)

    monkeypatch.setattr(World, "spawn_actor", flaky)
    env = CarlaEnv(client_factory=server, config=make_cfg())
    half_built = {}
    real_start = env._start_episode

    def start():
        try:
            return real_start()
        except RuntimeError:
            half_built.update({a.id: a for a in server.actors.values()})
            raise

    env._start_episode = start
    env.reset(seed=0)
    assert sorted(a.type_id for a in half_built.values()) == [
        "sensor.camera.rgb", "sensor.other.collision", "sensor.other.lane_invasion", "vehicle.tesla.model3"]
    assert server.destroy_batches[0] == sorted(half_built, key=lambda i: not half_built[i].type_id.startswith("sensor."))
    assert server.single_destroys == 0 and server.destroyed_listening == 0
    assert all(a.stop_calls == 1 for a in half_built.values() if a.type_id.startswith("sensor."))
    assert len(server.actors) == len(env.actors) == 25 and not set(half_built) & set(server.actors)
    env.close()
    assert server.actors == {} and server.single_destroys == 0


def test_tick_timeout_truncates_then_reset_reconnects_cleanly(env, server):
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0.0, 0.5], np.float32))
    connections = server.connections
    server.fail_ticks(1)
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.5], np.float32))
    assert truncated and not terminated and reward == 0.0
    assert info["termination_reason"] == "error" and "time-out" in info["error"]
    assert set(INFO_KEYS) <= set(info) and env.observation_space.contains(obs)
    again = env.step(np.zeros(2, np.float32))  # stepping on without reset repeats the truncation
    assert again[3] and again[4]["termination_reason"] == "error"
    obs, info = env.reset()
    assert server.connections == connections + 1  # reconnected
    assert info["termination_reason"] == "none" and "error" not in info
    assert len(server.actors) == len(env.actors) == 25 and hero_count(server) == 1  # old actors destroyed
    assert server.destroyed_listening == 0 and server.single_destroys == 0  # stopped, then one batch
    _, _, terminated, truncated, info = env.step(np.array([0.0, 0.5], np.float32))
    assert not truncated and info["termination_reason"] == "none"


def test_server_crash_and_restart(server):
    sleeps = []
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"backoff_s": 0.5, "retries": 3}), sleep=sleeps.append)
    env.reset(seed=0)
    server.crash()
    *_, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and info["termination_reason"] == "error"
    with pytest.raises(CarlaConnectionError) as err:
        env.reset()
    assert DOCKER_COMMAND in str(err.value)
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff between the 4 attempts
    server.restart()  # a fresh server: default map and settings, no actors
    sleeps.clear()
    obs, info = env.reset()
    assert sleeps == [] and server.loads[-1][0] == "Town01"
    assert settings_tuple(server.settings) == (True, False, 0.05)
    assert len(server.actors) == len(env.actors) == 25
    env.close()
    assert server.actors == {} and settings_tuple(server.settings) == (False, False, 0.0)


def test_transient_refusal_is_retried(server):
    sleeps = []
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"backoff_s": 0.25}), sleep=sleeps.append)
    env.reset(seed=0)
    server.fail_ticks(1)
    env.step(np.zeros(2, np.float32))
    server.refuse_next = 1  # the server is restarting: the first reconnect times out
    env.reset()
    assert sleeps == [0.25] and len(server.actors) == 25
    env.close()


def test_settings_restored_on_close(server):
    before = settings_tuple(server.settings)
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"no_rendering": False}))
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    tm = server.tms[env.tm_port]
    assert tm.synchronous
    env.close()
    assert settings_tuple(server.settings) == before == (False, False, 0.0)
    assert not tm.synchronous and server.actors == {}
    env.close()  # idempotent
    # after a fault, close() reconnects once to clean up and restore
    env = CarlaEnv(client_factory=server, config=make_cfg())
    env.reset(seed=0)
    server.fail_ticks(1)
    env.step(np.zeros(2, np.float32))
    assert len(server.actors) == 25
    env.close()
    assert server.actors == {} and settings_tuple(server.settings) == before


def test_no_rendering_mode_spawns_no_camera(server):
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"no_rendering": True}))
    obs, _ = env.reset(seed=0)
    assert settings_tuple(server.settings) == (True, True, 0.05)
    assert not any(s.type_id == "sensor.camera.rgb" for s in server.sensors())
    assert not obs["image"].any()
    env.close()


def test_several_envs_against_several_servers():
    servers = [StandinServer(port=2000), StandinServer(port=2003)]
    cluster = StandinCluster(servers)
    envs = [CarlaEnv(client_factory=cluster, config=make_cfg(env={"npc_count": 5}), env_index=i) for i in range(2)]
    assert [e.port for e in envs] == [2000, 2003]  # carla.port + index * carla.port_step
    assert [e.tm_port for e in envs] == [8000, 8004]  # port + 6000 + index: distinct
    for e in envs:
        e.reset(seed=0)
    for _ in range(3):
        for e in envs:
            e.step(np.array([0.0, 0.5], np.float32))
    for s, e in zip(servers, envs):
        assert list(s.tms) == [e.tm_port] and s.tms[e.tm_port].synchronous
        assert len(s.actors) == 1 + 4 + 5 and s.ticks >= 4
    for e in envs:
        e.close()
    assert all(s.actors == {} for s in servers)


def test_gymnasium_make_and_env_checker(server):
    server.image_fn = lambda frame, cam: np.full((168, 168, 4), 90, np.uint8)  # same image for the same seed
    env = gymnasium.make("av_td3/Carla-v0", scenario=0, config=make_cfg(env={"npc_count": 1}), client_factory=server)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    assert server.actors == {}


# ------------------------------------------------------------------------------------------------
# connection errors
# ------------------------------------------------------------------------------------------------
def test_no_server_fails_fast_with_the_docker_command():
    server = StandinServer()
    server.crash()  # the factory raises exactly the RuntimeError the real client raises on time-out
    t0 = time.monotonic()
    with pytest.raises(CarlaConnectionError) as err:
        CarlaEnv(client_factory=server, config=make_cfg(carla={"retries": 5, "backoff_s": 10.0}))
    assert time.monotonic() - t0 < 1.0  # the backoff is scaled into carla.timeout_s (0.5 s), not added
    assert DOCKER_COMMAND in str(err.value) and "localhost:2000" in str(err.value)


def test_first_connect_retries_a_server_that_refuses_at_first():
    """Against the in-process stand-in (no CARLA server can run here), on a fake clock: a server that
    times out the first two connection attempts (still starting) is retried with backoff, and the
    constructor succeeds within ``carla.timeout_s``; later calls get the full time-out again."""
    server, clock = StandinServer(), FakeClock()
    server.timeout_wait = clock.block  # each refused attempt costs its whole time-out, like the real client
    server.refuse_next = 2
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"timeout_s": 10.0, "retries": 3, "backoff_s": 1.0}),
                   sleep=clock.sleep)
    scale = 10.0 / (4 * 10.0 + 1.0 * (1 + 2 + 4))  # the reconnect schedule, scaled to fit in 10 s
    assert [t for _, _, t in server.factory_calls] == pytest.approx([10.0 * scale] * 3)
    assert clock.blocked == pytest.approx([10.0 * scale] * 2)
    assert clock.sleeps == pytest.approx([1.0 * scale, 2.0 * scale])  # exponential backoff, scaled
    assert clock.now < 10.0
    assert server.connections == 1 and server.loads[-1][0] == "Town01"
    assert server.rpc_timeout_s == 10.0  # the connected client's time-out is carla.timeout_s again
    env.reset(seed=0)
    assert len(server.actors) == 25
    env.close()


@pytest.mark.parametrize("timeout_s, retries, backoff_s, attempts", [
    (10.0, 3, 1.0, 4),    # the defaults: 4 attempts of 2.13 s, waits 0.21, 0.43, 0.85 s
    (10.0, 0, 1.0, 1),    # no retries: one attempt of the whole time-out, as before
    (10.0, 5, 0.0, 6),    # no backoff: the time-out split evenly
    (10.0, 3, 10.0, 3),   # long backoff: fewer retries, so that attempts stay >= MIN_ATTEMPT_S
    (10.0, 100, 1.0, 6),  # as many retries as fit
    (0.5, 2, 0.0, 1),     # a time-out under MIN_ATTEMPT_S: one attempt
])
def test_first_connect_without_server_fails_within_the_time_out(timeout_s, retries, backoff_s, attempts):
    """Against the in-process stand-in (no CARLA server can run here), on a fake clock: with no server
    answering, the first connection's attempts (each blocking for its time-out, like the real client)
    and backoff waits add up to ``carla.timeout_s``, never more, and the error says how many were made."""
    server, clock = StandinServer(), FakeClock()
    server.crash()
    server.timeout_wait = clock.block
    cfg = make_cfg(carla={"timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s})
    with pytest.raises(CarlaConnectionError) as err:
        CarlaEnv(client_factory=server, config=cfg, sleep=clock.sleep)
    assert len(server.factory_calls) == len(clock.blocked) == attempts and len(clock.sleeps) == attempts - 1
    assert clock.now == pytest.approx(timeout_s) and clock.now <= timeout_s * (1 + 1e-9)
    assert min(clock.blocked) >= min(MIN_ATTEMPT_S, timeout_s) * (1 - 1e-9)
    assert all(b == pytest.approx(2 * a) for a, b in zip(clock.sleeps, clock.sleeps[1:]))  # exponential
    msg = str(err.value)
    assert f"within {timeout_s:g} s ({attempts} attempt" in msg
    assert DOCKER_COMMAND in msg and "localhost:2000" in msg and "time-out" in msg
    assert first_connect_schedule(timeout_s, retries, backoff_s)[0] == attempts - 1


def test_reconnect_attempts_keep_the_full_time_out():
    """Against the in-process stand-in (no CARLA server can run here): only the FIRST connection is
    squeezed into ``carla.timeout_s``; reconnects in reset() give each attempt the whole time-out."""
    server, clock = StandinServer(), FakeClock()
    server.timeout_wait = clock.block
    env = CarlaEnv(client_factory=server, config=make_cfg(carla={"timeout_s": 4.0, "retries": 2, "backoff_s": 0.5}),
                   sleep=clock.sleep)
    env.reset(seed=0)
    server.crash()
    env.step(np.zeros(2, np.float32))
    clock.sleeps.clear()
    server.factory_calls.clear()
    with pytest.raises(CarlaConnectionError):
        env.reset()
    assert [t for _, _, t in server.factory_calls] == [4.0, 4.0, 4.0] and clock.sleeps == [0.5, 1.0]
    env.close()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_client_against_no_server_gives_the_helpful_error():
    pytest.importorskip("carla")
    port = unused_port()
    t0 = time.monotonic()
    with pytest.raises(CarlaConnectionError) as err:
        CarlaEnv(host="127.0.0.1", port=port, config=make_cfg(carla={"timeout_s": 1.0}))
    assert time.monotonic() - t0 < 5.0
    msg = str(err.value)
    assert DOCKER_COMMAND in msg and f"127.0.0.1:{port}" in msg and "time-out" in msg


def test_real_client_first_connect_retries_within_the_time_out():
    """The REAL ``carla.Client`` (no server: an unused port): two attempts whose client-side time-outs
    (set_timeout) plus the backoff wait fit in ``carla.timeout_s`` of wall time."""
    pytest.importorskip("carla")
    port = unused_port()
    t0 = time.monotonic()
    with pytest.raises(CarlaConnectionError) as err:
        CarlaEnv(host="127.0.0.1", port=port, config=make_cfg(carla={"timeout_s": 2.4, "retries": 1, "backoff_s": 0.2}))
    elapsed = time.monotonic() - t0
    assert 2.0 < elapsed < 2.4 + 0.6
    msg = str(err.value)
    assert "within 2.4 s (2 attempts" in msg and "time-out of 1152ms" in msg and DOCKER_COMMAND in msg


def test_missing_carla_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", None)  # makes `import carla` raise ImportError
    with pytest.raises(CarlaNotInstalledError, match=INSTALL_COMMAND.replace("[", r"\[").replace("]", r"\]")):
        connection.import_carla()
    with pytest.raises(CarlaNotInstalledError):
        CarlaEnv(config=make_cfg())


def test_cli_train_without_server_exits_2_with_the_docker_command(tmp_path, monkeypatch, capsys):
    pytest.importorskip("carla")
    from av_td3.cli import main

    monkeypatch.chdir(tmp_path)
    port = unused_port()
    rc = main(["train", "--env", "carla", "--scenario", "0", "--set", "carla.timeout_s=1", "--set", f"carla.port={port}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert DOCKER_COMMAND in err and "Traceback" not in err


def test_cli_train_without_carla_package_says_how_to_install(tmp_path, monkeypatch, capsys):
    from av_td3.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "carla", None)
    assert main(["train", "--env", "carla"]) == 2
    assert INSTALL_COMMAND in capsys.readouterr().err


def test_with_retries_backs_off_exponentially():
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("time-out")
        return "ok"

    assert with_retries(flaky, retries=3, backoff_s=0.5, what="t", sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0]
    with pytest.raises(RuntimeError):
        with_retries(lambda: (_ for _ in ()).throw(RuntimeError("down")), retries=2, backoff_s=1.0, what="t",
                     sleep=sleeps.append)


# ------------------------------------------------------------------------------------------------
# image conversion
# ------------------------------------------------------------------------------------------------
def test_grayscale_resize_is_luma_and_area_preserving():
    resize = GrayscaleResizer((144, 256), (84, 84))
    bgra = np.zeros((144, 256, 4), np.uint8)
    bgra[..., 1] = 200  # pure green
    assert (resize(bgra) == round(0.587 * 200)).all()
    ramp = np.zeros((144, 256, 4), np.uint8)
    ramp[..., :3] = np.linspace(0, 255, 256, dtype=np.float32).astype(np.uint8)[None, :, None]
    out = resize(ramp)
    assert abs(out.mean() - ramp[..., 0].mean()) < 1.0
    assert (np.diff(out[0].astype(int)) >= 0).all()  # monotone left to right

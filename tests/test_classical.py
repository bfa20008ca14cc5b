"""Classical PID + pure-pursuit baseline: route completion, bends, vehicles ahead, config, backends."""

import inspect
import math
import os
import sys

import gymnasium
import numpy as np
import pytest

from av_td3.baselines import classical
from av_td3.baselines.classical import ClassicalController, SpeedPID, make_classical_policy
from av_td3.baselines.config import ClassicalConfig
from av_td3.config import ConfigError, load_config
from av_td3.envs.contract import build_vector
from av_td3.envs.registry import TOWN_ID, register_envs
from av_td3.training.evaluation import evaluate

NO_OBSTACLE = {"obstacle_distance_m": 1e3, "ttc_s": 1e3}


def vector(speed_mps=0.0, waypoints=None, lateral_m=0.0):
    """A contract vector with the default 10 waypoints, 2 m apart (straight ahead unless given)."""
    if waypoints is None:
        waypoints = np.stack([2.0 * np.arange(1, 11), np.zeros(10)], axis=1)
    return build_vector(speed_mps, lateral_m, 0.0, waypoints, lookahead_m=20.0)


def arc(radius_m, start_m, right=True, n=10, spacing=2.0):
    """Waypoints straight ahead for ``start_m``, then a circular bend of ``radius_m`` (vehicle frame, y right)."""
    pts, sign = [], 1.0 if right else -1.0
    for i in range(1, n + 1):
        s = i * spacing
        if s <= start_m:
            pts.append((s, 0.0))
        else:
            phi = (s - start_m) / radius_m
            pts.append((start_m + radius_m * math.sin(phi), sign * radius_m * (1 - math.cos(phi))))
    return np.array(pts)


def controller(**cfg):
    policy = make_classical_policy({"classical": cfg})
    policy.reset(None)
    return policy


# --------------------------------------------------------------------------------------------------
# The check of issue 6: the default route with no NPCs, every seeded episode
# --------------------------------------------------------------------------------------------------
def test_completes_the_default_route_without_npcs_in_every_seeded_episode():
    register_envs()
    cfg = load_config(None, ["env.npc_count=0", "env.route=default"])
    env = gymnasium.make(TOWN_ID, scenario=0, config=cfg, disable_env_checker=True)
    policy = make_classical_policy(cfg)
    result = evaluate(env, policy, episodes=3, seed=cfg.evaluation.seed)
    env.close()
    for ep in result.episodes:
        assert ep.success and ep.termination_reason == "goal_reached", ep
        assert ep.route_completion >= 0.99 and ep.collisions == 0 and ep.lane_invasions == 0
        assert ep.mean_speed_kmh > 20.0  # cruises near 30 km/h, slows only for the two turns
        assert ep.mean_abs_jerk_mps3 < 5.0  # the pedal rate limit keeps it smooth
    assert policy.wheelbase_m == pytest.approx(env.unwrapped.wheelbase_m)


def test_stops_behind_a_parked_car_on_the_route():
    """The vehicle-ahead limit, end to end on the town: a parked car 45 m along the route."""
    from av_td3.envs.town.env import TownEnv

    env = TownEnv(npc_count=0, route="default", stall_steps=40)
    policy = make_classical_policy(load_config())
    obs, info = env.reset(seed=0)
    lanes, start_s, _ = env.map.default_route()
    env.traffic.add_vehicle(lanes[0], start_s + 45.0, parked=True)
    policy.reset(env)
    infos = []
    for _ in range(600):
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
        infos.append(info)
        if terminated or truncated:
            break
    assert info["termination_reason"] == "stalled" and not any(i["collision"] for i in infos)
    assert max(i["speed_kmh"] for i in infos) > 20.0  # it drove up first, then stopped
    assert 2.0 <= info["obstacle_distance_m"] <= 6.0  # near min_gap_m (4 m) behind it


def test_runs_unchanged_on_the_carla_backend():
    """The CARLA env against the in-process server stand-in (tests/carla_standin.py), no NPCs."""
    sys.path.insert(0, os.path.dirname(__file__))
    from carla_standin import StandinServer

    from av_td3.config import Config
    from av_td3.envs.carla.env import CarlaEnv

    cfg = Config.from_any({"carla": {"timeout_s": 0.5, "backoff_s": 0.0, "retries": 2, "route_length_m": 150.0},
                           "env": {"npc_count": 0, "route": "default"}})
    env = CarlaEnv(client_factory=StandinServer(), config=cfg)
    try:
        result = evaluate(env, make_classical_policy(cfg), episodes=1, seed=0)
    finally:
        env.close()
    assert result.episodes[0].success and result.episodes[0].collisions == 0
    assert env.wheelbase_m == pytest.approx(2.9, abs=1e-3)  # read from the stand-in vehicle's physics control


# --------------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------------
def test_never_reads_the_image():
    policy = controller()
    vec = vector(5.0, arc(10.0, 4.0))

    class NoImage(dict):
        def __getitem__(self, key):
            if key == "image":
                raise AssertionError("the classical controller read the image")
            return super().__getitem__(key)

    a = policy(NoImage(vector=vec, image=None), NO_OBSTACLE)
    policy.reset(None)
    np.testing.assert_array_equal(a, policy(vec, NO_OBSTACLE))  # a bare vector works too


def test_pure_pursuit_steers_toward_the_route():
    policy = controller()
    assert policy(vector(8.0))[0] == pytest.approx(0.0, abs=1e-6)
    right, left = policy(vector(5.0, arc(8.0, 0.0, right=True)))[0], policy(vector(5.0, arc(8.0, 0.0, right=False)))[0]
    assert right > 0.1 and left == pytest.approx(-right, abs=1e-5)  # CARLA sign: positive = right
    # Offset to the left of a straight route -> steer right, back toward it.
    assert policy(vector(8.0, np.stack([2.0 * np.arange(1, 11), np.full(10, 1.0)], 1), lateral_m=-1.0))[0] > 0


def test_lookahead_grows_with_speed_and_uses_the_wheelbase():
    policy = controller(lookahead_gain_s=0.5, min_lookahead_m=3.0, max_lookahead_m=8.0)
    bend = arc(15.0, 2.0)
    slow, fast = (abs(policy.steer(bend, v)) for v in (0.0, 20.0))
    assert fast > slow  # a farther lookahead point on a bend is farther off the heading line
    long_car = controller()

    class Env:
        wheelbase_m = 4.0

    long_car.reset(Env())
    bend = arc(15.0, 0.0)
    assert long_car.wheelbase_m == 4.0 and long_car.steer(bend, 5.0) > controller().steer(bend, 5.0) > 0


def test_target_speed_drops_before_turns():
    policy = controller(target_speed_kmh=30.0, max_lateral_accel_mps2=2.0, comfort_decel_mps2=3.0)
    cruise = 30.0 / 3.6

    def target(waypoints):
        kappa, along = policy.route_curvature(waypoints, 0.0)
        return min(cruise, policy.bend_speed(kappa, along))

    assert target(arc(1e6, 0.0)) == pytest.approx(cruise)
    far, near, inside = target(arc(8.0, 8.0)), target(arc(8.0, 4.0)), target(arc(8.0, 0.0))
    assert cruise > far > near > inside  # slower the closer the bend
    assert inside == pytest.approx(math.sqrt(2.0 * 8.0), rel=0.02)  # sqrt(a_lat * R) in the bend
    assert target(arc(4.0, 0.0)) < target(arc(12.0, 0.0))  # tighter bend, lower speed


def test_brakes_for_a_vehicle_ahead_and_harder_when_the_ttc_is_short():
    speed = 8.0
    free = controller()(vector(speed), NO_OBSTACLE)[1]
    following = controller()(vector(speed), {"obstacle_distance_m": 12.0, "ttc_s": 4.0})[1]
    emergency = controller()(vector(speed), {"obstacle_distance_m": 6.0, "ttc_s": 1.0})[1]
    assert free >= 0.0 and following < 0.0 and emergency == -1.0
    policy = controller()
    policy(vector(speed), {"obstacle_distance_m": 12.0, "ttc_s": 4.0})
    assert policy.last["obstacle_mps"] < speed
    # A lead as fast as the car (no TTC) far enough ahead for the headway: no braking.
    policy = controller()
    policy(vector(speed), {"obstacle_distance_m": 4.0 + 1.0 * speed + 1.0, "ttc_s": 1e3})
    assert policy.last["obstacle_mps"] > speed


def test_a_vehicle_straight_ahead_off_a_turning_route_is_ignored():
    turn = arc(6.0, 0.0)  # a tight right turn: the route leaves the straight-ahead corridor at once
    policy = controller()
    policy(vector(4.0, turn), {"obstacle_distance_m": 8.0, "ttc_s": 4.0})
    assert policy.last["obstacle_mps"] == math.inf
    policy(vector(4.0), {"obstacle_distance_m": 8.0, "ttc_s": 4.0})  # same car, straight route
    assert policy.last["obstacle_mps"] < 4.0


def test_speed_pid_tracks_without_windup():
    pid = SpeedPID(kp=0.5, ki=0.1, kd=0.0, integral_limit_m=2.0, dt=0.05)
    v = 0.0
    for _ in range(400):  # town longitudinal model: 5 m/s^2 throttle, 8 m/s^2 brake, 0.3 m/s^2 rolling
        u = pid(8.0, v)
        v = max(v + (5.0 * max(u, 0) - 8.0 * max(-u, 0) - (0.3 if v > 0 else 0.0)) * 0.05, 0.0)
    assert v == pytest.approx(8.0, abs=0.05)
    pid.reset()
    for _ in range(200):
        assert pid(30.0, 0.0) == 1.0  # saturated: the integral must not grow
    assert pid.integral == 0.0


def test_pedal_rate_is_limited_except_for_vehicles_ahead():
    policy = controller(pedal_rate_per_s=2.0)
    pedals = [policy(vector(0.0), NO_OBSTACLE)[1] for _ in range(5)]
    np.testing.assert_allclose(pedals, [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-6)
    assert policy(vector(8.0), {"obstacle_distance_m": 3.0, "ttc_s": 5.0})[1] < -0.5  # at once


def test_holds_the_brake_at_a_standstill_behind_a_vehicle():
    policy = controller()
    for _ in range(50):
        pedal = policy(vector(0.0), {"obstacle_distance_m": 2.0, "ttc_s": 1e3})[1]
    assert pedal < 0.0 and policy.pid.integral == 0.0


def test_route_end_with_repeated_goal_waypoints():
    goal = np.array([[2.0, 0.0], [3.0, 0.0]] + [[3.0, 0.0]] * 8)
    action = controller()(vector(3.0, goal), NO_OBSTACLE)
    assert np.all(np.isfinite(action)) and abs(action[0]) < 1e-6


def test_vector_size_follows_the_env_config_and_is_checked():
    policy = make_classical_policy({"env": {"num_waypoints": 5, "waypoint_spacing_m": 3.0}})
    assert isinstance(policy, ClassicalController) and policy.wants_info and policy.n == 5 and policy.scale == 15.0
    with pytest.raises(ValueError, match=r"shape \(13,\)"):
        policy(vector(5.0))


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------
def test_config_is_strict_with_ranges():
    with pytest.raises(ConfigError, match=r"classical\.speed_kpp.*classical\.speed_kp"):
        load_config(None, ["classical.speed_kpp=1"])
    with pytest.raises(ConfigError, match=r"classical\.target_speed_kmh.*allowed"):
        load_config(None, ["classical.target_speed_kmh=0"])
    with pytest.raises(ConfigError, match="max_lookahead_m"):
        load_config(None, ["classical.min_lookahead_m=9", "classical.max_lookahead_m=5"])


def test_every_classical_key_is_read_by_the_controller():
    source = inspect.getsource(classical)
    for key in ClassicalConfig.model_fields:
        assert f".{key}" in source, f"classical.{key} is never read"


def test_av_td3_baseline_command(tmp_path, capsys):
    import json

    from av_td3.cli import main

    assert main(["baseline", "--episodes", "1", "--output", str(tmp_path), "--set", "env.npc_count=0"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["aggregate"]["success_rate"]["mean"] == 1.0
    assert "Classical PID + pure pursuit" in capsys.readouterr().out

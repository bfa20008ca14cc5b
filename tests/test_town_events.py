"""Scripted situations in the town: collision, lane invasion, off-road, goal, obstacle/TTC, traffic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.envs.town.env import TownEnv
from av_td3.envs.town.events import EgoEvents, boxes_overlap
from av_td3.envs.town.map import CENTRE_LINE, get_town_map
from av_td3.envs.town.vehicle import VehicleParams


def _drive(env: TownEnv, action, max_steps: int = 1000):
    """Repeat ``action`` (or call it on obs) until the episode ends; returns the list of infos."""
    obs, info = env.reset(seed=0)
    infos = [info]
    for _ in range(max_steps):
        a = action(obs) if callable(action) else np.asarray(action, dtype=np.float32)
        obs, _, term, trunc, info = env.step(a)
        infos.append(info | {"terminated": term, "truncated": trunc})
        if term or trunc:
            break
    return infos


def _parked_ahead(env: TownEnv, metres: float) -> int:
    """Reset, then park an NPC ``metres`` ahead of the ego on its lane (default route's first lane)."""
    lanes, s0, _ = env.map.default_route()
    return env.traffic.add_vehicle(lanes[0], s0 + metres, parked=True)


def test_driving_into_an_npc_is_a_collision():
    env = TownEnv(npc_count=0, route="default")
    env.reset(seed=0)
    _parked_ahead(env, 25.0)
    for _ in range(300):
        _, r, term, trunc, info = env.step(np.array([0.0, 0.6], dtype=np.float32))
        if term or trunc:
            break
    assert term and info["collision"] and info["termination_reason"] == "collision"
    assert not info["success"]
    assert info["reward_components"]["safety"] <= -env.reward_cfg.infraction_penalty


def test_obstacle_distance_and_ttc_ahead():
    env = TownEnv(npc_count=0, route="default")
    _, info = env.reset(seed=0)
    assert info["obstacle_distance_m"] == 1e3 and info["ttc_s"] == 1e3
    _parked_ahead(env, 30.0)
    for _ in range(20):
        _, _, _, _, info = env.step(np.array([0.0, 0.8], dtype=np.float32))
    gap = 30.0 - info["distance_m"] - 0.5 * (4.69 + 4.6)
    assert info["obstacle_distance_m"] == pytest.approx(gap, abs=0.2)
    assert info["ttc_s"] == pytest.approx(gap / (info["speed_kmh"] / 3.6), rel=0.05)


def test_crossing_the_centre_line_is_a_lane_invasion():
    env = TownEnv(npc_count=0, route="default")
    infos = _drive(env, [-0.08, 0.4], max_steps=400)  # drift left, toward the opposite lane
    hits = [i for i in infos if i["lane_invasion"]]
    assert hits, "drifting across the centre line must report a lane invasion"
    assert hits[0]["lateral_deviation_m"] < -0.3  # it happened on the LEFT (centre-line) side
    assert hits[0]["reward_components"]["lane_keeping"] < 0  # reward v2: a line between the wheels earns nothing
    assert not infos[1]["lane_invasion"]  # the start, centred in the lane, is clean


def test_wheels_straddling_the_broken_centre_line_always_report_a_lane_invasion():
    """Scan the ego along the straight, dashed centre line of the south road (y = 0, x = 20..70 m) in
    5 cm steps at several lateral offsets and headings: wherever the space between its wheels (track
    1.58 m) straddles the line, it is a lane invasion, whatever the dash phase. Both axles fit in a 3 m
    dash gap (wheelbase 2.875 m), so a test against the painted dashes alone misses some positions."""
    town, params = get_town_map(), VehicleParams()
    events = EgoEvents(town.raster, params)
    xs = np.arange(20.0, 70.0, 0.05)
    line = town.raster.material_at(xs, np.zeros_like(xs))
    assert (line == CENTRE_LINE).any() and (line != CENTRE_LINE).any()  # broken: dashes and gaps
    missed = []
    for yaw in (0.0, math.pi, 0.03, -0.03):
        for offset in (0.0, 0.1, -0.1, 0.3, -0.3, 0.6, -0.6):  # wheels 0.79 m either side of the centre
            missed += [(x, offset, yaw) for x in xs if not events.surface(x, offset, yaw)[0]]
    assert not missed, f"{len(missed)} straddling positions without a lane invasion, e.g. {missed[:3]}"
    # Centred in either lane, the wheels touch no boundary.
    assert not any(events.surface(x, o, yaw)[0] for x in xs[::10] for o in (1.75, -1.75) for yaw in (0.0, math.pi))


def test_leaving_the_road_terminates_off_road():
    env = TownEnv(npc_count=0, route="default")
    infos = _drive(env, [0.3, 0.5], max_steps=400)  # veer right, over the kerb
    last = infos[-1]
    assert last["terminated"] and last["off_road"] and last["termination_reason"] == "off_road"
    assert last["lateral_deviation_m"] > 0  # right of the lane centre
    assert last["reward_components"]["safety"] <= -env.reward_cfg.infraction_penalty


def test_lateral_limit_alone_terminates_off_road():
    env = TownEnv(npc_count=0, route="default", off_road_lateral_m=0.5)
    last = _drive(env, [-0.05, 0.4], max_steps=400)[-1]
    assert last["termination_reason"] == "off_road"
    assert abs(last["lateral_deviation_m"]) > 0.5


def test_pure_pursuit_completes_the_default_route():
    env = TownEnv(npc_count=0, route="default")
    pp = PurePursuit(wheelbase_m=env.wheelbase_m, target_speed_kmh=env.cfg.target_speed_kmh)
    infos = _drive(env, pp)
    last = infos[-1]
    assert last["success"] and last["termination_reason"] == "goal_reached"
    assert last["route_completion"] >= 0.99
    assert max(abs(i["lateral_deviation_m"]) for i in infos) < 1.0
    assert 250.0 <= last["route_length_m"] <= 300.0


def test_stall_truncates():
    env = TownEnv(npc_count=0, route="default", stall_steps=30)
    last = _drive(env, [0.0, -1.0], max_steps=100)[-1]
    assert last["truncated"] and not last["terminated"] and last["termination_reason"] == "stalled"
    assert last["steps"] == 30


def test_step_limit_truncates():
    env = TownEnv(npc_count=0, route="default", max_episode_steps=40)
    last = _drive(env, [0.0, 0.3], max_steps=100)[-1]
    assert last["truncated"] and last["termination_reason"] == "time_limit" and last["steps"] == 40


def test_default_route_has_turns_and_random_routes_are_seeded():
    town = get_town_map()
    lanes, _, _ = town.default_route()
    assert sum(town.graph.lanes[i].turn != "straight" for i in lanes) >= 2
    env = TownEnv(npc_count=0, route="random")
    lengths = []
    for seed in (1, 1, 2):
        env.reset(seed=seed)
        lengths.append((env.route.length_m, env.route.waypoints[0].tobytes()))
    assert lengths[0] == lengths[1] and lengths[0] != lengths[2]
    assert 100.0 <= lengths[0][0] <= 300.0


def test_npcs_spawn_away_from_the_ego_and_keep_moving_without_overlaps():
    env = TownEnv(scenario=2, route="default", stall_steps=10_000)
    for seed in range(3):
        env.reset(seed=seed)
        t, v = env.traffic, env.vehicle
        assert t.n == 100
        assert np.hypot(t.x - v.x, t.y - v.y).min() >= 20.0
    start = np.stack([t.x, t.y], 1).copy()
    for step in range(301):
        if step:
            env.step(np.array([0.0, -1.0], dtype=np.float32))  # ego waits at the start
        # NPCs never drive into each other: no two footprints overlap (the ego's box test, all pairs).
        overlap = boxes_overlap(t.x[:, None], t.y[:, None], t.cos[:, None], t.sin[:, None], t.length[:, None],
                                t.width[:, None], t.x, t.y, t.cos, t.sin, t.length, t.width)
        np.fill_diagonal(overlap, False)
        assert not overlap.any(), f"step {step}: NPC pairs {np.argwhere(overlap)[:3].tolist()} overlap"
    moved = np.hypot(*(np.stack([t.x, t.y], 1) - start).T)
    assert np.median(moved) > 30.0  # traffic flows (15 s of driving)


def test_vehicle_follows_carla_steer_sign():
    env = TownEnv(npc_count=0, route="default")
    env.reset(seed=0)
    yaw0 = env.vehicle.yaw
    for _ in range(20):
        env.step(np.array([0.5, 0.5], dtype=np.float32))
    assert env.vehicle.yaw < yaw0  # positive steer turns right (clockwise)
    assert math.isclose(env.vehicle.params.length_m, 4.69) and math.isclose(env.vehicle.params.width_m, 1.85)


@pytest.mark.parametrize("ego_pose", [(91.6, 5.9, 1.3), (90.5, 4.0, 0.8)], ids=["near_the_exit", "mid_turn"])
def test_an_npc_turning_through_a_junction_stops_short_of_an_ego_standing_in_its_path(ego_pose):
    """The ego stands inside the T junction at (90, 0), in the left turn west -> north (the first pose is
    where the audit's stopped ego was hit). An NPC that was granted the turn comes up the west approach
    at 8 m/s. Its straight corridor ahead misses the ego round the bend; the lane-path check makes it
    stop short instead of driving into the ego."""
    env = TownEnv(npc_count=0, route="default")
    env.reset(seed=0)
    town, t, p = env.map, env.traffic, env.params
    lanes, _, _ = town.default_route()
    approach, conn = lanes[0], lanes[1]  # the default route's left turn at the T junction
    assert town.graph.lanes[conn].kind == "junction" and town.graph.lanes[conn].turn == "left"
    ex, ey, eyaw = ego_pose
    assert math.hypot(ex - 90.0, ey) < 8.0  # inside the junction
    npc = t.add_vehicle(approach, town.graph.lane_length[approach] - 20.0, speed=8.0, parked=False)
    t.v0[npc], t.next_lane[npc], t.granted[npc] = 8.0, conn, True
    for _ in range(300):  # 15 s; the ego stands still
        t.step(0.05, ex, ey, eyaw, 0.0, p.length_m, p.width_m)
        assert not env.events.collision(ex, ey, eyaw, env._npcs())
    assert t.v[npc] < 0.05  # it has stopped short ...
    assert t.lane[npc] == conn  # ... inside the junction, having moved up behind the ego

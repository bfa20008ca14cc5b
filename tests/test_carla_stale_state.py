"""Stale state on a CARLA server: the Traffic Manager, settings and actors a crashed process left.

No CARLA server can run here: these tests use the in-process stand-in (``tests/carla_standin.py``).
Its Traffic Manager behaves like the real client's in the ways that matter here: one TM per port per
client process, handed out again by ``get_trafficmanager`` until ``shut_down()``, and bound to the
server life it was created in (after a server restart its calls fail with CARLA's bind error).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from carla_standin import Location, Rotation, StandinServer, Transform, settings_tuple  # noqa: E402
from test_carla_env import make_cfg  # noqa: E402

from av_td3.envs.carla.actors import RoleNames  # noqa: E402
from av_td3.envs.carla.env import CarlaEnv  # noqa: E402


def test_close_shuts_the_traffic_manager_down():
    server = StandinServer()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 2}))
    env.reset(seed=0)
    tm = server.tms[env.tm_port]
    env.close()
    assert tm.is_shut_down and server.tm_shutdowns == 1 and env.tm_port not in server.client_tms
    # the next env of this process on that port gets a fresh TM, synchronous and seeded
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 2}, carla={"tm_seed": 3}))
    env.reset(seed=4)
    fresh = server.tms[env.tm_port]
    assert fresh is not tm and fresh.synchronous and fresh.seed == 4
    env.close()


def test_reconnect_after_a_server_restart_gets_a_fresh_traffic_manager():
    """The server restarts (crash, supervisor) while the training process lives on: the reconnect must
    not get the process's old TM for that port back (bound to the dead server: bind error)."""
    server = StandinServer()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 3}), sleep=lambda s: None)
    env.reset(seed=0)
    old = server.tms[env.tm_port]
    server.crash()
    *_, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and info["termination_reason"] == "error"
    server.restart()
    obs, info = env.reset()
    tm = server.tms[env.tm_port]
    assert tm is not old and old.is_shut_down and tm.synchronous
    assert len([v for v in server.vehicles() if v.autopilot_port == env.tm_port]) == 3
    for _ in range(3):
        *_, truncated, info = env.step(np.array([0.0, 0.5], np.float32))
        assert not truncated
    assert server.tm_async_ticks == 0
    env.close()


def test_a_synchronous_world_is_never_the_original_restored_on_close():
    """A crashed process left the world synchronous with its fixed step: close() restores asynchronous
    mode (a synchronous world nobody ticks freezes the server for every other client)."""
    server = StandinServer(initial_map="Town01")  # no map load: the settings stay as left
    server.settings.synchronous_mode, server.settings.fixed_delta_seconds = True, 0.05
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    env.close()
    assert settings_tuple(server.settings) == (False, False, 0.05)


def _spawn(server, blueprint_id, role_name, x, parent=None):
    bp = server.library.find(blueprint_id)
    bp.set_attribute("role_name", role_name)
    return server.world.spawn_actor(bp, Transform(Location(x=x, y=500.0, z=0.3), Rotation()), attach_to=parent)


def test_leftover_actors_of_this_env_are_removed_on_connect_then_the_world_ticks():
    """Actors of an earlier process of this env (its TM port, another process token) are destroyed
    before anything spawns, with one tick in between; other clients' actors (other role names) stay."""
    server = StandinServer(initial_map="Town01")
    roles = RoleNames(8000, token="0dead0")  # a crashed process with the same config
    ego = _spawn(server, "vehicle.tesla.model3", roles.ego, 0.0)
    ours = [ego.id, _spawn(server, "sensor.other.collision", roles.sensor, 0.0, parent=ego).id,
            _spawn(server, "vehicle.audi.a2", roles.npc, 30.0).id]
    theirs = [_spawn(server, "vehicle.audi.a2", "hero", 60.0).id,
              _spawn(server, "vehicle.audi.a2", RoleNames(8001, token="0dead0").npc, 90.0).id,
              _spawn(server, "vehicle.audi.a2", "autopilot", 120.0).id]
    server.log.clear()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 2}))
    env.reset(seed=0)
    assert not set(ours) & set(server.actors) and set(theirs) <= set(server.actors)
    destroyed_at = max(i for i, (what, actor) in enumerate(server.log) if what == "destroy" and actor in ours)
    first_spawn = next(i for i, (what, _) in enumerate(server.log) if what == "spawn")
    assert any(what == "tick" for what, _ in server.log[destroyed_at:first_spawn])
    # everything the env spawned carries its role names, so a later crash is cleaned up the same way
    mine = [a for a in server.actors.values() if a.id not in theirs]
    live = RoleNames(8000)  # this process's
    assert {a.attributes["role_name"] for a in mine} == {live.ego, live.npc, live.sensor}
    env.close()
    assert set(server.actors) == set(theirs)


def test_two_envs_of_one_process_on_one_server_and_tm_port():
    """The trainer's training and evaluation envs share a server and TM port: connecting the second does
    not take the first's actors for leftovers, and closing it keeps the settings and the TM the first
    still uses; the last to close restores the settings and shuts the TM down."""
    server = StandinServer()
    train = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 2}))
    train.reset(seed=0)
    train_actors = set(train.actors.ids)
    evaluation = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 2}))
    evaluation.reset(seed=1)
    assert train_actors <= set(server.actors)
    evaluation.close()
    assert settings_tuple(server.settings) == (True, False, 0.05) and server.tm_shutdowns == 0
    for _ in range(3):
        *_, truncated, info = train.step(np.array([0.0, 0.3], np.float32))
        assert not truncated and info["termination_reason"] == "none"
    assert server.tm_async_ticks == 0
    train.close()
    assert settings_tuple(server.settings) == (False, False, 0.0) and server.tm_shutdowns == 1
    assert server.actors == {}

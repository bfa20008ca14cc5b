"""Spawning and destroying the env's vehicles (the NPC handler), with an account of every actor.

Rule: whatever the env spawns (ego, sensors, NPCs) is recorded in an ``ActorBook`` the moment the
server returns its id, and is destroyed with one batch of ``carla.command.DestroyActor`` on reset and
close, so that repeated resets, faults and crashes of the training loop do not leave actors that slow
the server down. Sensors go into the same batch, after the env has ``stop()``ped them (see
``sensors.py``), and ahead of the vehicles they are attached to.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


#: Tells this process's actors from those of earlier processes (a fresh random token per process: pids
#: repeat, e.g. in containers).
PROCESS_TOKEN = secrets.token_hex(3)

_KINDS = ("ego", "npc", "sensor")


@dataclass(frozen=True)
class RoleNames:
    """The ``role_name`` attributes of one env's actors: ``av_td3_<kind>_<TM port>_<process token>``.

    The TM port tells apart the envs that share a server (each needs its own TM port). The process
    token tells this process's actors from those a crashed earlier process left behind with the same
    config (``leftover_actors``), and keeps the envs of ONE process that share a server and TM port
    (training and evaluation envs) from taking each other's actors for leftovers. Nobody else's actors
    match. (The ego is not called CARLA's conventional ``hero`` for that reason; only large maps' tile
    streaming and the TM's hybrid physics look for a ``hero``, and this env uses neither.)
    """

    tm_port: int
    token: str = PROCESS_TOKEN

    def _name(self, kind: str) -> str:
        return f"av_td3_{kind}_{self.tm_port}_{self.token}"

    @property
    def ego(self) -> str:
        return self._name("ego")

    @property
    def npc(self) -> str:
        return self._name("npc")

    @property
    def sensor(self) -> str:
        return self._name("sensor")

    def is_leftover(self, role_name: object) -> bool:
        """An actor of this env's TM port spawned by ANOTHER process (crashed, or it would not be here)."""
        if not isinstance(role_name, str):
            return False
        for kind in _KINDS:
            prefix = f"av_td3_{kind}_{self.tm_port}_"
            if role_name.startswith(prefix):
                return role_name[len(prefix):] != self.token
        return False


def set_role_name(blueprint: Any, role_name: str) -> Any:
    if blueprint.has_attribute("role_name"):
        blueprint.set_attribute("role_name", role_name)
    return blueprint


def leftover_actors(world: Any, roles: RoleNames) -> list[tuple[int, str]]:
    """``(id, type_id)`` of the actors in ``world`` that an earlier process of this env left behind
    (``RoleNames.is_leftover``)."""
    out = []
    for actor in world.get_actors():
        role = dict(getattr(actor, "attributes", {}) or {}).get("role_name")
        if roles.is_leftover(role):
            out.append((int(actor.id), str(actor.type_id)))
    return out


def destroy_ids(client: Any, api: Any, items: Sequence[tuple[int, str]]) -> int:
    """Destroy ``(id, type_id)`` actors in one batch, sensors first; returns how many the server destroyed."""
    if not items:
        return 0
    ordered = sorted(items, key=lambda item: not item[1].startswith("sensor."))
    responses = client.apply_batch_sync([api.command.DestroyActor(i) for i, _ in ordered], False)
    return sum(1 for r in responses if not r.has_error())


class ActorBook:
    """Ids and blueprint ids of every actor this env spawned and has not destroyed yet."""

    def __init__(self) -> None:
        self._actors: dict[int, str] = {}
        self.spawned_total = 0
        self.destroyed_total = 0

    def add(self, actor_id: int, type_id: str) -> None:
        self._actors[int(actor_id)] = str(type_id)
        self.spawned_total += 1

    def discard(self, actor_id: int) -> None:
        if self._actors.pop(int(actor_id), None) is not None:
            self.destroyed_total += 1

    @property
    def ids(self) -> list[int]:
        return list(self._actors)

    def items(self) -> list[tuple[int, str]]:
        return list(self._actors.items())

    def __len__(self) -> int:
        return len(self._actors)

    def destroy_all(self, client: Any, api: Any, world: Any = None) -> int:
        """Destroy every recorded actor in one ``apply_batch_sync``; returns how many the server destroyed.

        Sensors (``sensor.*``) come first in the batch, before the vehicles they are attached to; the
        caller must have ``stop()``ped them.

        ``world``: pass it after a *re*connection. Only ids that still exist with the recorded
        blueprint are destroyed then, so that a restarted server's unrelated actors (whose ids may
        coincide) are never touched.
        """
        items = self.items()
        if not items:
            return 0
        if world is not None:
            alive = {int(a.id): str(a.type_id) for a in world.get_actors([i for i, _ in items])}
            items = [(i, t) for i, t in items if alive.get(i) == t]
        # sensors first (stable: else spawn order); "not found" means already gone (e.g. with its parent)
        destroyed = destroy_ids(client, api, items)
        for actor_id in list(self._actors):
            self.discard(actor_id)
        return destroyed


def pick_blueprint(library: Any, blueprint_id: str, role_name: str) -> Any:
    return set_role_name(library.find(blueprint_id), role_name)


def spawn_ego(world: Any, book: ActorBook, blueprint: Any, candidates: Sequence[Any]) -> tuple[Any, Any]:
    """Spawn the ego at the first free transform of ``candidates`` (the route start, then a little further on).

    Returns ``(actor, transform used)``; the transform matters because in synchronous mode a new
    actor reports its location only after the next tick.

    Raises:
        RuntimeError: every candidate was occupied.
    """
    for transform in candidates:
        actor = world.try_spawn_actor(blueprint, transform)
        if actor is not None:
            book.add(actor.id, actor.type_id)
            return actor, transform
    raise RuntimeError(f"could not spawn the ego ({blueprint.id}): all {len(candidates)} route-start positions occupied")


def npc_blueprints(library: Any, pattern: str) -> list[Any]:
    """Four-wheeled vehicle blueprints matching ``pattern`` (bikes wobble and block lanes)."""
    out = []
    for bp in library.filter(pattern):
        if bp.has_attribute("number_of_wheels") and bp.get_attribute("number_of_wheels").as_int() != 4:
            continue
        out.append(bp)
    if not out:
        raise RuntimeError(f"no 4-wheeled vehicle blueprint matches carla.npc_filter={pattern!r}")
    return out


def far_spawn_points(spawn_points: Iterable[Any], ego_location: Any, min_distance_m: float) -> list[Any]:
    """Spawn points at least ``min_distance_m`` (planar, m) from the ego, so no NPC starts on top of it."""
    ex, ey = float(ego_location.x), float(ego_location.y)
    return [
        t for t in spawn_points
        if math.hypot(float(t.location.x) - ex, float(t.location.y) - ey) >= min_distance_m
    ]


def spawn_npcs(
    client: Any,
    api: Any,
    book: ActorBook,
    blueprints: Sequence[Any],
    spawn_points: Sequence[Any],
    count: int,
    rng: np.random.Generator,
    tm_port: int,
    rounds: int = 3,
    role_name: str = "autopilot",
) -> list[int]:
    """Spawn up to ``count`` NPCs on autopilot (Traffic Manager on ``tm_port``), in batches.

    Spawn points are drawn without replacement; points where a spawn fails (occupied) are replaced
    by fresh ones for up to ``rounds`` batches. Returns the ids spawned: fewer than ``count`` only
    when the town runs out of free spawn points.
    """
    order = [int(k) for k in rng.permutation(len(spawn_points))]
    ids: list[int] = []
    for _ in range(rounds):
        want = count - len(ids)
        if want <= 0 or not order or not blueprints:
            break
        chosen, order = order[:want], order[want:]
        batch, types = [], []
        for k in chosen:
            bp = blueprints[int(rng.integers(len(blueprints)))]
            set_role_name(bp, role_name)
            batch.append(
                api.command.SpawnActor(bp, spawn_points[k]).then(
                    api.command.SetAutopilot(api.command.FutureActor, True, tm_port)
                )
            )
            types.append(bp.id)
        for response, type_id in zip(client.apply_batch_sync(batch, False), types):
            if response.has_error():
                logger.debug("CARLA: NPC spawn failed: %s", response.error)
                continue
            book.add(response.actor_id, type_id)
            ids.append(int(response.actor_id))
    if len(ids) < count:
        logger.warning("CARLA: %d of %d NPCs spawned (free spawn points ran out)", len(ids), count)
    return ids

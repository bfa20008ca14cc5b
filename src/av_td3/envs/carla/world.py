"""The simulated world of one connection: town, synchronous settings, Traffic Manager, restore on close.

The env drives the server in synchronous mode with a fixed step of ``contract.STEP_SECONDS`` (0.05 s,
20 Hz): the server advances exactly one step per ``tick()``, so one env step is one simulated step
whatever the machine's speed. The Traffic Manager must run synchronously too (else NPCs are
computed against stale frames) and is seeded for repeatable traffic.

Stale state (CARLA issues #2789, #3581, #5111): the client keeps one Traffic Manager per port for the
whole process, so a reconnect that asks for the same port again gets the old one, still bound to the
dead connection (hangs, "bind error"). The TM is therefore ``shut_down()`` on close and whenever its
connection is dropped. And a world found synchronous was left so by a client that crashed (nobody
ticks it): those settings are never taken as the "original" ones restored on close.

Sharing: envs of ONE process may use the same server and TM port (the trainer's training and
evaluation envs). They share the world's settings and the process's TM of that port, so the settings
found by the first are the originals of all (``shared_originals``), and only the LAST one to close
restores them and shuts the TM down (``hold`` / ``release``).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Hashable

from av_td3.envs.contract import STEP_SECONDS

logger = logging.getLogger(__name__)


#: Per (host, port, TM port): (the envs of this process holding a session there, their original
#: settings). Weak: an env dropped without close() stops counting once it is garbage.
_shared: dict[Hashable, tuple[weakref.WeakSet, Any]] = {}


def _holders(key: Hashable) -> weakref.WeakSet | None:
    entry = _shared.get(key)
    if entry is not None and not len(entry[0]):
        del _shared[key]
        return None
    return entry[0] if entry else None


def shared_originals(key: Hashable) -> Any:
    """The original settings found by the first env of this process still holding ``key``, or None."""
    return _shared[key][1] if _holders(key) is not None else None


def hold(key: Hashable, env: Any, original_settings: Any) -> None:
    """``env`` (of this process) opened a session on ``key`` = (host, port, TM port)."""
    if _holders(key) is None:
        _shared[key] = (weakref.WeakSet(), original_settings)
    _shared[key][0].add(env)


def release(key: Hashable, env: Any) -> bool:
    """``env``'s session on ``key`` ended; True when no other env of this process holds one there (then
    the settings are restored and the TM shut down)."""
    holders = _holders(key)
    if holders is None:
        return True
    holders.discard(env)
    return _holders(key) is None


def map_basename(name: str) -> str:
    """``'Carla/Maps/Town01'`` -> ``'Town01'`` (the server reports map names as paths)."""
    return str(name).rstrip("/").split("/")[-1]


def tm_port_for(server_port: int, env_index: int, tm_port: int | None) -> int:
    """Traffic Manager port of env ``env_index``: ``(tm_port or server_port + 6000) + env_index``.

    Every TM needs its own port; deriving it from the (already per-env) server port keeps parallel
    envs apart, and adding the index keeps them apart even when ``tm_port`` is given explicitly.
    """
    return (tm_port if tm_port is not None else server_port + 6000) + env_index


@dataclass
class SyncWorld:
    """A world in synchronous mode and its Traffic Manager.

    Attributes:
        client: the connected client.
        world: ``carla.World`` (or stand-in) in synchronous mode.
        map: the town's ``carla.Map``.
        tm: ``carla.TrafficManager`` on ``tm_port``.
        original_settings: the ``WorldSettings`` found when this env first connected (restored on close).
        timeout_s: tick time-out, seconds.
    """

    client: Any
    world: Any
    map: Any
    tm: Any
    tm_port: int
    original_settings: Any
    timeout_s: float
    frame: int = field(default=0)

    @classmethod
    def open(
        cls,
        client: Any,
        *,
        town: str,
        tm_port: int,
        seed: int,
        no_rendering: bool,
        timeout_s: float,
        load_timeout_s: float,
        original_settings: Any = None,
    ) -> "SyncWorld":
        """Load ``town`` if needed, switch to synchronous fixed-step settings, start a synchronous TM.

        ``original_settings``: settings captured by an earlier connection of the same env (after a
        fault the server may still carry *our* synchronous settings, which must not become the ones
        restored on close).
        """
        world = client.get_world()
        if original_settings is None:
            original_settings = world.get_settings()
            if original_settings.synchronous_mode:
                # left synchronous by a client that is gone: restoring that would freeze the server
                logger.warning("CARLA: the world was left in synchronous mode by another client; close() will "
                               "restore asynchronous mode")
                original_settings.synchronous_mode = False
        cmap = world.get_map()  # the client downloads the whole OpenDRIVE map: fetch it once
        if map_basename(cmap.name) != town:
            current = world.get_settings()
            if current.synchronous_mode:
                # a world left synchronous by another (crashed) client waits for ticks; loading a map in
                # that state has hung in several CARLA releases, so release it first
                current.synchronous_mode = False
                world.apply_settings(current)
            logger.info("CARLA: loading %s (up to %.0f s)", town, load_timeout_s)
            client.set_timeout(load_timeout_s)  # loading a town takes far longer than one RPC
            try:
                world = client.load_world(town)
            finally:
                client.set_timeout(timeout_s)
            cmap = world.get_map()
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = STEP_SECONDS
        settings.no_rendering_mode = bool(no_rendering)
        world.apply_settings(settings)
        tm = client.get_trafficmanager(tm_port)
        tm.set_synchronous_mode(True)  # in the same client that ticks, right after the world (CARLA docs)
        tm.set_random_device_seed(int(seed))
        return cls(client, world, cmap, tm, tm_port, original_settings, timeout_s)

    def tick(self) -> int:
        """Advance one fixed step; returns the new frame id. Raises ``RuntimeError`` on time-out."""
        self.frame = int(self.world.tick(self.timeout_s))
        return self.frame

    def reseed(self, seed: int) -> None:
        self.tm.set_random_device_seed(int(seed))

    def restore(self) -> None:
        """Put the TM back to asynchronous mode and the world back to its original settings, then shut the
        TM down (best effort, ``restore_settings``)."""
        restore_settings(self.world, self.tm, self.original_settings)


def shut_down_tm(tm: Any) -> None:
    """Release the process's Traffic Manager on its port, so that the next ``get_trafficmanager`` of that
    port builds a fresh one (best effort: failures are logged)."""
    if tm is None:
        return
    try:
        tm.shut_down()
    except RuntimeError as exc:
        logger.warning("CARLA: could not shut the traffic manager down: %s", exc)


def restore_settings(world: Any, tm: Any, original_settings: Any) -> None:
    """TM asynchronous, then the world's original settings, then the TM shut down; failures are logged,
    not raised (the server may be gone, and then there is nothing left to restore)."""
    for what, fn in (
        ("traffic manager", lambda: tm.set_synchronous_mode(False)),
        ("world settings", lambda: world.apply_settings(original_settings)),
    ):
        try:
            fn()
        except RuntimeError as exc:
            logger.warning("CARLA: could not restore the %s: %s", what, exc)
    shut_down_tm(tm)

"""CARLA servers for concurrent trials: each running trial holds one server, never two trials per server.

The pool is a list of ``(host, port)``; ``pool_addresses`` builds it from a sweep's ``carla_servers``
(a count → ``carla.port + i * carla.port_step`` on ``carla.host``, or an explicit list of ports /
``host:port``). ``ServerPool`` is the bookkeeping (which trial holds which server); under Ray it lives in
one named actor so every trial, on any node, asks the same pool.
"""

from __future__ import annotations

from typing import Sequence

from av_td3.sweep.spec import SweepError


def pool_addresses(servers: int | Sequence[int | str], host: str, port: int, port_step: int) -> list[tuple[str, int]]:
    """The pool's ``(host, port)`` list; duplicates are an error (two trials would share a server)."""
    if isinstance(servers, int):
        if servers < 1:
            raise SweepError(f"carla_servers must be >= 1, got {servers}")
        addresses = [(host, port + i * port_step) for i in range(servers)]
    else:
        addresses = [_parse(item, host) for item in servers]
        if not addresses:
            raise SweepError("carla_servers is an empty list; give ports (e.g. [2000, 2003]) or a count")
    if len(set(addresses)) != len(addresses):
        raise SweepError(f"carla_servers lists the same server twice: {servers}; each concurrent trial needs its own")
    return addresses


def _parse(item: int | str, default_host: str) -> tuple[str, int]:
    if isinstance(item, int):
        host, port = default_host, item
    else:
        host, sep, port_text = str(item).rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise SweepError(f"carla_servers entry {item!r} must be a port (2000) or host:port (gpu-node-2:2000)")
        port = int(port_text)
    if not 1 <= port <= 65535:
        raise SweepError(f"carla_servers port {port} is out of range 1..65535")
    return host, port


class ServerPool:
    """Hands each trial a free server and takes it back; a trial that asks twice gets the same one."""

    def __init__(self, addresses: Sequence[tuple[str, int]]):
        self.free = list(addresses)
        self.held: dict[str, tuple[str, int]] = {}

    def acquire(self, trial: str) -> tuple[str, int] | None:
        """The server for ``trial``, or None when all are held (the caller waits and asks again)."""
        if trial in self.held:
            return self.held[trial]
        if not self.free:
            return None
        self.held[trial] = self.free.pop(0)
        return self.held[trial]

    def release(self, trial: str) -> None:
        address = self.held.pop(trial, None)
        if address is not None:
            self.free.append(address)

    def holders(self) -> dict[str, tuple[str, int]]:
        return dict(self.held)

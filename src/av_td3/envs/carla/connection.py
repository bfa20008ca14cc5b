"""Connecting to a CARLA 0.9.16 server: import the client, a time-out per attempt, retries with
exponential backoff, and errors that tell the user what to do.

A *client factory* is any callable ``(host, port, timeout_s) -> client`` where ``client`` offers the
subset of ``carla.Client`` the env uses. The default builds a real ``carla.Client``; tests inject an
in-process stand-in (no server can run on CI machines).
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any, Callable, TypeVar

from av_td3.envs.carla.errors import CarlaConnectionError, CarlaNotInstalledError, CarlaUnavailableError

logger = logging.getLogger(__name__)

#: How a user starts a server (printed in every connection error).
DOCKER_COMMAND = (
    "docker run --gpus all --net=host carlasim/carla:0.9.16 ./CarlaUE4.sh -RenderOffScreen -nosound"
)
INSTALL_COMMAND = "pip install -e .[carla]"

ClientFactory = Callable[[str, int, float], Any]

__all__ = [
    "CarlaConnectionError", "CarlaNotInstalledError", "CarlaUnavailableError", "ClientFactory", "DOCKER_COMMAND",
    "INSTALL_COMMAND", "connect", "connection_error_message", "import_carla", "real_client_factory", "with_retries",
]


def import_carla() -> ModuleType:
    """Import the real ``carla`` client package, or raise ``CarlaNotInstalledError`` with the fix."""
    try:
        import carla  # noqa: PLC0415  (optional dependency, imported only when the backend is used)
    except ImportError as exc:
        raise CarlaNotInstalledError(
            f"the CARLA backend needs the 'carla' client package (0.9.16), which could not be imported "
            f"({exc}). Install the extra with: {INSTALL_COMMAND}"
        ) from None
    return carla


def real_client_factory(host: str, port: int, timeout_s: float) -> Any:
    """Build a real ``carla.Client``; every RPC (including ``World.tick``) then times out after ``timeout_s``."""
    carla = import_carla()
    client = carla.Client(host, port)
    client.set_timeout(timeout_s)
    return client


def connection_error_message(host: str, port: int, timeout_s: float, attempts: int, cause: BaseException) -> str:
    return (
        f"no CARLA server answered at {host}:{port} within {timeout_s:g} s "
        f"({attempts} attempt{'s' if attempts != 1 else ''}; last error: {cause}).\n"
        f"Start one first, e.g.:\n    {DOCKER_COMMAND}\n"
        f"(several parallel envs need one server each: add -carla-rpc-port=PORT; see docs/carla.md), "
        f"or point the env at yours with carla.host / carla.port."
    )


def connect(factory: ClientFactory, host: str, port: int, timeout_s: float) -> Any:
    """One connection attempt: a client whose server answered a version request within ``timeout_s``.

    ``carla.Client`` waits the whole time-out even when nothing listens on the port, so a missing
    server costs exactly ``timeout_s`` seconds.

    Raises:
        CarlaConnectionError: nothing answered; the message says how to start a server.
        CarlaNotInstalledError: from the default factory when ``carla`` is missing.
    """
    try:
        client = factory(host, port, timeout_s)
        server_version = client.get_server_version()  # the first round trip: raises on time-out
    except CarlaUnavailableError:
        raise
    except RuntimeError as exc:  # what carla.Client raises on time-out / refused connection
        raise CarlaConnectionError(connection_error_message(host, port, timeout_s, 1, exc)) from exc
    client_version = client.get_client_version()
    if str(server_version) != str(client_version):
        logger.warning(
            "CARLA client %s and server %s differ; the backend is tested against 0.9.16", client_version, server_version
        )
    return client


T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    retries: int,
    backoff_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it returns, at most ``retries + 1`` times; attempt k+1 waits ``backoff_s * 2**k`` s.

    Only ``RuntimeError`` (CARLA's time-outs and server errors, ``CarlaConnectionError``) is retried;
    a missing ``carla`` package is not. The last error is re-raised.
    """
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff_s * 2 ** (attempt - 1)
            logger.warning("CARLA: %s: retry %d/%d in %.1f s", what, attempt, retries, wait)
            sleep(wait)
        try:
            return fn()
        except CarlaNotInstalledError:
            raise
        except RuntimeError as exc:
            logger.warning("CARLA: %s failed: %s", what, exc)
            if attempt == retries:
                raise
    raise AssertionError("unreachable")

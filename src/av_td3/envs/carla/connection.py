"""Connecting to a CARLA 0.9.16 server: import the client, a time-out per attempt, retries with
exponential backoff, and errors that tell the user what to do.

Two schedules share one retry loop (``with_retries``):

* the FIRST connection (``connect_with_retries``, from the env constructor) gets ``carla.timeout_s``
  in total: its ``carla.retries + 1`` attempts and the backoff waits between them are the reconnect
  schedule scaled down by one factor (``first_connect_schedule``), so a server that is still starting
  or refused one attempt is retried, and a missing server is still reported after ``timeout_s``;
* a RECONNECT after a fault (``CarlaEnv.reset``) gives every attempt the full ``timeout_s`` and waits
  ``backoff_s * 2**k`` before retry k+1.

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

#: The first connection's attempts get at least this time-out, s (or all of ``carla.timeout_s`` when
#: that is shorter): a live server answers the version request in milliseconds, but a loaded machine
#: or a network hop needs headroom. Retries that would cut attempts shorter are not made.
MIN_ATTEMPT_S = 1.0

__all__ = [
    "CarlaConnectionError", "CarlaNotInstalledError", "CarlaUnavailableError", "ClientFactory", "DOCKER_COMMAND",
    "INSTALL_COMMAND", "MIN_ATTEMPT_S", "connect", "connect_with_retries", "connection_error_message",
    "first_connect_schedule", "import_carla", "real_client_factory", "with_retries",
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


def first_connect_schedule(timeout_s: float, retries: int, backoff_s: float) -> tuple[int, float, float]:
    """``(retries, attempt time-out s, backoff base s)`` of the first connection, all within ``timeout_s``.

    The reconnect schedule (``retries + 1`` attempts of ``timeout_s``, waits ``backoff_s * 2**k``
    between them) is scaled by one factor so that attempts plus waits add up to ``timeout_s``. When
    that would give attempts shorter than ``min(MIN_ATTEMPT_S, timeout_s)``, fewer retries are made
    (down to a single attempt of the whole ``timeout_s``, as with ``retries = 0``).
    """
    floor = min(MIN_ATTEMPT_S, timeout_s)
    for r in range(retries, -1, -1):
        scale = timeout_s / ((r + 1) * timeout_s + backoff_s * (2**r - 1))
        if timeout_s * scale >= floor * (1 - 1e-9) or r == 0:
            return r, timeout_s * scale, backoff_s * scale
    raise AssertionError("unreachable")


def connect_with_retries(
    factory: ClientFactory,
    host: str,
    port: int,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The first connection: ``connect`` retried with backoff (``with_retries``) on the schedule of
    ``first_connect_schedule``, so that a missing server is reported within ``timeout_s`` in total.

    The client returned has its time-out set back to ``timeout_s`` for every later call.

    Raises:
        CarlaConnectionError: no attempt got an answer; the message gives the total time-out, the
            number of attempts and the command that starts a server.
        CarlaNotInstalledError: from the default factory when ``carla`` is missing (not retried).
    """
    n_retries, attempt_s, base_s = first_connect_schedule(timeout_s, retries, backoff_s)
    attempts = 0

    def attempt() -> Any:
        nonlocal attempts
        attempts += 1
        try:
            return connect(factory, host, port, attempt_s)
        except CarlaConnectionError as exc:  # retried and logged as the client's own one-line error;
            cause = exc.__cause__  # the help text comes once, with the final error
            raise cause if isinstance(cause, RuntimeError) else RuntimeError(str(exc)) from None

    try:
        client = with_retries(attempt, n_retries, base_s, f"connect to {host}:{port}", sleep)
    except CarlaUnavailableError:  # the carla package is missing: not a connection problem
        raise
    except RuntimeError as exc:
        raise CarlaConnectionError(connection_error_message(host, port, timeout_s, attempts, exc)) from exc
    client.set_timeout(timeout_s)
    return client

"""Supervisor of CARLA servers: launch N, check each answers, restart one that died or hangs.

A long training run outlives CARLA servers: they crash (segfaults, GPU resets) or hang (the RPC port
stays open but nothing answers). The env already survives a fault (the episode is truncated and the
next ``reset()`` reconnects with backoff); the supervisor makes the server come back:

* launch: server i listens on ``port + i * port_step`` (a server also holds port+1 and port+2, hence
  the default step 3), either in docker (``carlasim/carla:0.9.16``) or from a local install
  (``$CARLA_ROOT/CarlaUE4.sh``), each in its OWN process group with its output appended to its log;
* health: every ``check_interval_s`` the client's ``get_server_version()`` must answer within
  ``probe_timeout_s``. A fresh server gets ``startup_grace_s`` to answer the first time; a server that
  answered and then misses ``hang_checks`` probes in a row is hung;
* restart: a server that exited or hung has its whole process group killed (SIGTERM, then SIGKILL
  after ``stop_grace_s``: CarlaUE4.sh starts the real binary as a child, which must not be orphaned),
  and is relaunched after a backoff of ``backoff_s * 2**(k-1)`` for its k-th restart within
  ``restart_window_s`` (at most ``max_backoff_s``). After ``max_restarts`` restarts in that window it
  is given up (status ``failed``) rather than crash-looping for ever. Logs are appended, never
  truncated, with a line per launch and per exit, so the log of the run that crashed is kept;
* stop: every process group killed, docker containers removed, nothing left running.

Use it from the command line (``av-td3 carla-servers start|status|stop``: a detached supervisor process,
``supervisor_daemon.py``, that keeps ``state.json`` in its state directory), around a training run
(``av-td3 train --env carla --carla-servers N``), or from Python::

    with Supervisor.for_servers(count=2, port=2000, port_step=3, docker=True, log_dir=Path("logs")) as sup:
        sup.wait_ready(timeout_s=180)
        ...  # envs on ports 2000 and 2003
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from av_td3.envs.carla.errors import CarlaUnavailableError

logger = logging.getLogger(__name__)

DOCKER_IMAGE = "carlasim/carla:0.9.16"
SERVER_FLAGS = ("-RenderOffScreen", "-nosound")

Probe = Callable[[str, int, float], bool]


class SupervisorError(CarlaUnavailableError):
    """The servers cannot be launched or did not come up; the message says which and where the log is."""


# ------------------------------------------------------------------------------------------------
# launch commands and port layout
# ------------------------------------------------------------------------------------------------
def server_ports(count: int, port: int, port_step: int) -> list[int]:
    """RPC ports of ``count`` servers: ``port + i * port_step`` (the env of index i uses the same rule)."""
    if count < 1:
        raise SupervisorError(f"--count must be >= 1, got {count}")
    if port_step < 3:
        raise SupervisorError(f"--port-step must be >= 3 (a CARLA server also holds port+1 and port+2), got {port_step}")
    ports = [port + i * port_step for i in range(count)]
    if ports[-1] + 2 > 65535:
        raise SupervisorError(f"ports {ports[0]}..{ports[-1] + 2} do not fit below 65536; lower --port or --count")
    return ports


def container_name(port: int) -> str:
    return f"av-td3-carla-{port}"


def launch_command(port: int, *, docker: bool, carla_root: Path | None = None, image: str = DOCKER_IMAGE) -> list[str]:
    """The command line of one server on RPC port ``port``: docker, or ``carla_root/CarlaUE4.sh``.

    Raises:
        SupervisorError: neither docker nor a CARLA install with ``CarlaUE4.sh`` was given.
    """
    flags = [*SERVER_FLAGS, f"-carla-rpc-port={port}"]
    if docker:
        return ["docker", "run", "--rm", "--name", container_name(port), "--gpus", "all", "--net=host",
                image, "./CarlaUE4.sh", *flags]
    if carla_root is None:
        raise SupervisorError("say where the servers come from: --docker (image carlasim/carla:0.9.16) or "
                              "--carla-root DIR (a CARLA 0.9.16 install with CarlaUE4.sh), or set CARLA_ROOT")
    script = Path(carla_root) / "CarlaUE4.sh"
    if not script.is_file():
        raise SupervisorError(f"{script} does not exist: --carla-root must be a CARLA 0.9.16 install "
                              f"(the folder with CarlaUE4.sh), or use --docker")
    return [str(script), *flags]


def docker_cleanup_command(port: int) -> list[str]:
    """Removes the server's container: killing the ``docker run`` client alone may leave it running."""
    return ["docker", "rm", "-f", container_name(port)]


def carla_probe(host: str, port: int, timeout_s: float) -> bool:
    """True when the server at host:port answers ``get_server_version()`` within ``timeout_s``."""
    from av_td3.envs.carla.connection import real_client_factory
    from av_td3.envs.carla.errors import CarlaNotInstalledError

    try:
        real_client_factory(host, port, timeout_s).get_server_version()
    except CarlaNotInstalledError:
        raise  # a missing client is the user's to fix, not a server that does not answer
    except RuntimeError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# supervision
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """Timings and limits of the supervision, seconds (see the module docstring)."""

    check_interval_s: float = 2.0
    probe_timeout_s: float = 5.0
    startup_grace_s: float = 120.0
    hang_checks: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    max_restarts: int = 5
    restart_window_s: float = 600.0
    stop_grace_s: float = 10.0


@dataclass
class ServerState:
    """One supervised server. ``status``: starting (launched, not answered yet), up, restarting
    (waiting out its backoff), failed (restart limit reached), stopped."""

    port: int
    command: list[str]
    log: str
    status: str = "stopped"
    pid: int | None = None
    launches: int = 0
    restarts: int = 0
    last_exit: str = ""
    restart_delays: list[float] = field(default_factory=list)
    cleanup: list[str] | None = None  # a command run after killing the group (docker: remove the container)


class Supervisor:
    """Launches, watches and restarts servers (one ``ServerState`` each).

    Args:
        servers: one ``ServerState`` per server (port, command line, log path).
        policy: timings and limits.
        probe: ``(host, port, timeout_s) -> answered``; default the real client's ``get_server_version``.
        host: where the servers answer.
        clock, sleep: injectable time (monotonic seconds) and wait.
    """

    def __init__(self, servers: Sequence[ServerState], policy: Policy = Policy(), probe: Probe | None = None,
                 host: str = "localhost", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.servers = list(servers)
        self.policy, self.host = policy, host
        self.probe = probe or carla_probe
        self._clock, self._sleep = clock, sleep
        self._procs: dict[int, subprocess.Popen] = {}
        self._started_at: dict[int, float] = {}
        self._answered: dict[int, bool] = {}
        self._missed: dict[int, int] = {}
        self._next_start: dict[int, float] = {}
        self._restart_times: dict[int, list[float]] = {s.port: [] for s in self.servers}
        self._last_probe: dict[int, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @classmethod
    def for_servers(cls, count: int, port: int, port_step: int, log_dir: Path, docker: bool,
                    carla_root: Path | None = None, **kwargs) -> "Supervisor":
        """``count`` CARLA servers on the port layout of the envs, logs ``log_dir/carla-<port>.log``."""
        log_dir = Path(log_dir)
        servers = []
        for p in server_ports(count, port, port_step):
            servers.append(ServerState(p, launch_command(p, docker=docker, carla_root=carla_root),
                                       str(log_dir / f"carla-{p}.log"),
                                       cleanup=docker_cleanup_command(p) if docker else None))
        return cls(servers, **kwargs)

    # --- life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch every server (returns at once; see ``wait_ready``)."""
        for s in self.servers:
            self._launch(s)

    def wait_ready(self, timeout_s: float) -> None:
        """Supervise until every server answers.

        Raises:
            SupervisorError: a server failed for good, or not all answered within ``timeout_s``.
        """
        deadline = self._clock() + timeout_s
        while True:
            if self._thread is None:
                self.poll()
            with self._lock:
                failed = [s for s in self.servers if s.status == "failed"]
                waiting = [s for s in self.servers if s.status != "up"]
            if failed:
                raise SupervisorError("CARLA server(s) gave up after repeated crashes: " + self._describe(failed))
            if not waiting:
                return
            if self._clock() >= deadline:
                raise SupervisorError(f"CARLA server(s) did not answer within {timeout_s:g} s: " + self._describe(waiting))
            self._sleep(self.policy.check_interval_s)

    def run_in_background(self) -> None:
        """Supervise from a daemon thread until ``stop()``."""
        self._thread = threading.Thread(target=self._loop, name="carla-supervisor", daemon=True)
        self._thread.start()

    def run_forever(self, on_poll: Callable[[], None] = lambda: None) -> None:
        """Supervise in this thread until ``stop()`` is called (e.g. from a signal handler)."""
        self._loop(on_poll)

    def _loop(self, on_poll: Callable[[], None] = lambda: None) -> None:
        while not self._stop_event.is_set():
            self.poll()
            on_poll()
            self._stop_event.wait(self.policy.check_interval_s)

    def stop(self) -> None:
        """Kill every server's process group (and container); nothing is restarted afterwards."""
        self._stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.policy.probe_timeout_s + self.policy.stop_grace_s + 5.0)
        with self._lock:
            for s in self.servers:
                self._kill(s, "stopped")
                s.status = "stopped"

    def __enter__(self) -> "Supervisor":
        try:
            self.start()
        except BaseException:
            self.stop()  # a later launch failed: the servers already launched must not outlive us
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- one round of checks -------------------------------------------------------------------------
    def poll(self) -> None:
        """Check every server once: relaunch after a backoff, notice exits and hangs."""
        for s in self.servers:
            with self._lock:
                if self._stop_event.is_set():
                    return
                self._check(s)

    def _check(self, s: ServerState) -> None:
        now = self._clock()
        if s.status in ("failed", "stopped"):
            return
        if s.status == "restarting":
            if now >= self._next_start[s.port]:
                self._launch(s)
            return
        proc = self._procs[s.port]
        rc = proc.poll()
        if rc is not None:
            self._restart(s, f"exited with code {rc}")
            return
        if now - self._last_probe.get(s.port, -1e18) < self.policy.check_interval_s * 0.999:
            return
        self._last_probe[s.port] = now
        if self.probe(self.host, s.port, self.policy.probe_timeout_s):
            self._answered[s.port], self._missed[s.port] = True, 0
            s.status = "up"
            return
        self._missed[s.port] += 1
        if self._answered[s.port] and self._missed[s.port] >= self.policy.hang_checks:
            self._restart(s, f"hung: {self._missed[s.port]} health checks in a row unanswered")
        elif not self._answered[s.port] and self._clock() - self._started_at[s.port] > self.policy.startup_grace_s:
            self._restart(s, f"did not answer within {self.policy.startup_grace_s:g} s of its launch")

    # --- actions ---------------------------------------------------------------------------------------
    def _launch(self, s: ServerState) -> None:
        Path(s.log).parent.mkdir(parents=True, exist_ok=True)
        s.launches += 1
        with open(s.log, "ab") as log:
            log.write(f"\n=== av-td3 supervisor: launch {s.launches} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(s.command)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(s.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # its own process group: killed as a whole
            except OSError as exc:
                s.status = "failed"
                s.last_exit = f"could not launch: {exc}"
                raise SupervisorError(f"could not launch the CARLA server on port {s.port} ({' '.join(s.command)}): "
                                      f"{exc}") from exc
        self._procs[s.port] = proc
        s.pid, s.status = proc.pid, "starting"
        self._started_at[s.port] = self._clock()
        self._answered[s.port], self._missed[s.port] = False, 0
        self._last_probe.pop(s.port, None)
        logger.info("CARLA server on port %d launched (pid %d, log %s)", s.port, proc.pid, s.log)

    def _restart(self, s: ServerState, reason: str) -> None:
        now = self._clock()
        self._kill(s, reason)
        times = [t for t in self._restart_times[s.port] if now - t <= self.policy.restart_window_s]
        times.append(now)
        self._restart_times[s.port] = times
        if len(times) > self.policy.max_restarts:
            s.status = "failed"
            self._note(s, f"given up: {len(times) - 1} restarts within {self.policy.restart_window_s:g} s")
            logger.error("CARLA server on port %d %s; giving up after %d restarts (log %s)", s.port, reason,
                         len(times) - 1, s.log)
            return
        delay = min(self.policy.backoff_s * 2 ** (len(times) - 1), self.policy.max_backoff_s)
        s.restarts += 1
        s.restart_delays.append(delay)
        s.status = "restarting"
        self._next_start[s.port] = now + delay
        self._note(s, f"restart {s.restarts} in {delay:g} s")
        logger.warning("CARLA server on port %d %s; restarting in %.3g s (log %s)", s.port, reason, delay, s.log)

    def _kill(self, s: ServerState, reason: str) -> None:
        """Kill the server's whole process group: SIGTERM, then SIGKILL after ``stop_grace_s``."""
        proc = self._procs.pop(s.port, None)
        if proc is not None:
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.policy.stop_grace_s
            while time.monotonic() < deadline and group_alive(pgid):
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)
            if group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)
                while group_alive(pgid) and time.monotonic() < deadline + 5.0:
                    time.sleep(0.02)
            rc = proc.wait()
            s.last_exit = f"{reason} (exit code {rc})" if "exited" not in reason else reason
            self._note(s, s.last_exit)
            s.pid = None
        if s.cleanup:
            subprocess.run(s.cleanup, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def _note(self, s: ServerState, line: str) -> None:
        with open(s.log, "ab") as log:
            log.write(f"=== av-td3 supervisor: {time.strftime('%H:%M:%S')} {line}\n".encode())

    def _describe(self, servers: Sequence[ServerState]) -> str:
        return "; ".join(f"port {s.port} ({s.status}{': ' + s.last_exit if s.last_exit else ''}; log {s.log})"
                         for s in servers)

    def state(self) -> dict:
        with self._lock:
            return {"supervisor_pid": os.getpid(), "host": self.host,
                    "servers": [asdict(s) for s in self.servers]}


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (zombies of our own child count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True

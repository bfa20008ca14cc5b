"""The detached supervisor behind ``av-td3 carla-servers start|status|stop``.

``start`` runs ``python -m av_td3.envs.carla.supervisor_daemon serve ...`` in its own session (closing
the terminal does not stop it); that process runs a ``Supervisor`` and keeps ``state.json`` (pids,
status, restarts, logs) current in its state directory. ``status`` reads that file; ``stop`` sends the
supervisor SIGTERM (it kills every server's process group on the way out) and, if the supervisor is
gone or does not stop, kills the recorded process groups itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from av_td3.io import atomic_write_text
from av_td3.envs.carla.supervisor import (
    Policy,
    ServerState,
    Supervisor,
    SupervisorError,
    group_alive,
    signal_group,
    pid_alive,
)

STATE_FILE = "state.json"


def _write_state(state_dir: Path, state: dict) -> None:
    atomic_write_text(state_dir / STATE_FILE, json.dumps(state, indent=1), "CARLA supervisor state")


def read_state(state_dir: Path) -> dict | None:
    path = Path(state_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def serve(state_dir: Path, supervisor: Supervisor) -> None:
    """Run ``supervisor`` in this process until SIGTERM/SIGINT, keeping ``state_dir/state.json`` current."""
    state_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, frame):
        supervisor._stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start()
        _write_state(state_dir, supervisor.state())
        supervisor.run_forever(on_poll=lambda: _write_state(state_dir, supervisor.state()))
    finally:
        supervisor.stop()
        _write_state(state_dir, {**supervisor.state(), "supervisor_pid": None})


def start_detached(state_dir: Path, argv: Sequence[str], ready_timeout_s: float,
                   poll_s: float = 0.5) -> dict:
    """Start ``python -m av_td3.envs.carla.supervisor_daemon serve ...`` in its own session and wait (up to
    ``ready_timeout_s``; 0 = no wait) until every server is up. Returns the state.

    Raises:
        SupervisorError: a supervisor already runs for ``state_dir``, or the servers did not come up.
    """
    state_dir = Path(state_dir)
    old = read_state(state_dir)
    if old is not None and pid_alive(old.get("supervisor_pid")):
        raise SupervisorError(f"a supervisor already runs for {state_dir} (pid {old['supervisor_pid']}); "
                              f"stop it first: av-td3 carla-servers stop --state-dir {state_dir}")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    with open(state_dir / "supervisor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "av_td3.envs.carla.supervisor_daemon", "serve",
                                 "--state-dir", str(state_dir), *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        state = read_state(state_dir)
        if proc.poll() is not None and (state is None or state.get("supervisor_pid") is None):
            raise SupervisorError(f"the supervisor exited (code {proc.returncode}); see {state_dir / 'supervisor.log'}")
        if state is not None:
            statuses = [s["status"] for s in state["servers"]]
            if "failed" in statuses:
                stop_detached(state_dir)
                raise SupervisorError("CARLA server(s) failed: " + describe_state(state))
            if ready_timeout_s <= 0 or all(st == "up" for st in statuses):
                return state
        if time.monotonic() >= deadline:
            stop_detached(state_dir)
            raise SupervisorError(f"CARLA server(s) did not answer within {ready_timeout_s:g} s, stopped again: "
                                  + describe_state(state or {"servers": []}))
        time.sleep(poll_s)


def stop_detached(state_dir: Path, timeout_s: float = 30.0) -> dict | None:
    """Stop the detached supervisor (it kills its servers); if it is gone or does not stop in time,
    kill the recorded servers' process groups directly. Returns the last state (None: nothing ran)."""
    state = read_state(state_dir)
    if state is None:
        return None
    pid = state.get("supervisor_pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    state = read_state(state_dir) or state
    for s in state["servers"]:  # whatever the supervisor could not stop
        if s.get("pid") and group_alive(s["pid"]):
            signal_group(s["pid"], signal.SIGKILL)
        if s.get("cleanup"):
            subprocess.run(s["cleanup"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    _write_state(Path(state_dir), {**state, "supervisor_pid": None,
                                   "servers": [{**s, "pid": None, "status": "stopped"} for s in state["servers"]]})
    return state


def describe_state(state: dict) -> str:
    return "; ".join(f"port {s['port']} {s['status']}" + (f" ({s['last_exit']})" if s.get("last_exit") else "")
                     + f", log {s['log']}" for s in state.get("servers", []))


def status_lines(state: dict | None) -> list[str]:
    if state is None:
        return ["no supervisor has run here (start one with: av-td3 carla-servers start)"]
    pid = state.get("supervisor_pid")
    lines = [f"supervisor: {'running, pid ' + str(pid) if pid_alive(pid) else 'not running'}"]
    for s in state["servers"]:
        lines.append(f"  port {s['port']}: {s['status']}, pid {s.get('pid') or '-'}, launches {s['launches']}, "
                     f"restarts {s['restarts']}, log {s['log']}" + (f", last: {s['last_exit']}" if s.get("last_exit") else ""))
    return lines


def policy_arguments(p: argparse.ArgumentParser) -> None:
    d = Policy()
    p.add_argument("--check-interval", type=float, default=d.check_interval_s, help="seconds between health checks")
    p.add_argument("--probe-timeout", type=float, default=d.probe_timeout_s, help="health check time-out, s")
    p.add_argument("--startup-grace", type=float, default=d.startup_grace_s, help="time a server has to answer first, s")
    p.add_argument("--hang-checks", type=int, default=d.hang_checks, help="missed checks in a row that mean hung")
    p.add_argument("--backoff", type=float, default=d.backoff_s, help="first restart delay, s (doubles)")
    p.add_argument("--max-restarts", type=int, default=d.max_restarts, help="restarts per window before giving up")
    p.add_argument("--restart-window", type=float, default=d.restart_window_s, help="s")


def policy_argv(policy: Policy) -> list[str]:
    """The flags of ``policy_arguments`` that give ``policy``."""
    return ["--check-interval", str(policy.check_interval_s), "--probe-timeout", str(policy.probe_timeout_s),
            "--startup-grace", str(policy.startup_grace_s), "--hang-checks", str(policy.hang_checks),
            "--backoff", str(policy.backoff_s), "--max-restarts", str(policy.max_restarts),
            "--restart-window", str(policy.restart_window_s)]


def policy_from(args: argparse.Namespace) -> Policy:
    return Policy(check_interval_s=args.check_interval, probe_timeout_s=args.probe_timeout,
                  startup_grace_s=args.startup_grace, hang_checks=args.hang_checks, backoff_s=args.backoff,
                  max_restarts=args.max_restarts, restart_window_s=args.restart_window)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m av_td3.envs.carla.supervisor_daemon serve ...``: the detached process (started by the CLI)."""
    p = argparse.ArgumentParser(prog="python -m av_td3.envs.carla.supervisor_daemon")
    p.add_argument("mode", choices=("serve",))
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--host", default="localhost")
    p.add_argument("--server", dest="servers", action="append", default=[], metavar="JSON",
                   help="one server: JSON with port, command, log, cleanup")
    policy_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    servers = [ServerState(**json.loads(text)) for text in args.servers]
    serve(args.state_dir, Supervisor(servers, policy_from(args), host=args.host))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

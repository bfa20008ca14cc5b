"""Command line of the CARLA server supervisor (``supervisor.py``):

* ``av-td3 carla-servers start|status|stop [--count N] [--port P] [--port-step S] [--docker | --carla-root DIR]``
  runs a detached supervisor process that keeps its state and the servers' logs in ``--state-dir``;
* ``av-td3 train --env carla --carla-servers N`` supervises N servers for the run, in the training
  process, and stops them when it ends.

``cli.py`` registers these (a parser, a handler and a flag); the logic lives here.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable

from av_td3.envs.carla.config import CarlaConfig
from av_td3.envs.carla.supervisor import (
    Policy,
    Supervisor,
    SupervisorError,
    docker_cleanup_command,
    launch_command,
    pid_alive,
    server_ports,
)
from av_td3.envs.carla.supervisor_daemon import (
    policy_arguments,
    policy_argv,
    policy_from,
    read_state,
    start_detached,
    status_lines,
    stop_detached,
)

DEFAULT_STATE_DIR = Path("runs") / "carla-servers"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``carla-servers`` subcommand."""
    defaults = CarlaConfig()
    p = sub.add_parser("carla-servers", help="start, check or stop supervised CARLA servers (restarted on crash/hang)")
    p.add_argument("action", choices=("start", "status", "stop"))
    p.add_argument("--count", type=int, default=1, help="number of servers (start)")
    p.add_argument("--port", type=int, default=defaults.port, help="RPC port of the first server (carla.port)")
    p.add_argument("--port-step", type=int, default=defaults.port_step,
                   help="server i listens on port + i * step (carla.port_step; a server also holds port+1, port+2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--docker", action="store_true", help="run carlasim/carla:0.9.16 in docker (needs --gpus)")
    where.add_argument("--carla-root", type=Path, default=None,
                       help="a local CARLA 0.9.16 install (the folder with CarlaUE4.sh); default $CARLA_ROOT")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="state file and server logs")
    p.add_argument("--ready-timeout", type=float, default=180.0,
                   help="start: wait this long for every server to answer, s (0: do not wait)")
    policy_arguments(p)


def _source(docker: bool, carla_root: Path | None) -> tuple[bool, Path | None]:
    if docker:
        return True, None
    root = carla_root or (Path(os.environ["CARLA_ROOT"]) if os.environ.get("CARLA_ROOT") else None)
    if root is None:
        raise SupervisorError("say where the servers come from: --docker (image carlasim/carla:0.9.16) or "
                              "--carla-root DIR (a CARLA 0.9.16 install with CarlaUE4.sh), or set CARLA_ROOT")
    return False, root


def cmd_carla_servers(args: argparse.Namespace) -> int:
    """start | status | stop; exit 0, or 1 when ``status`` finds servers not up."""
    if args.action == "status":
        state = read_state(args.state_dir)
        for line in status_lines(state):
            print(line)
        up = (state is not None and pid_alive(state.get("supervisor_pid"))
              and all(s["status"] == "up" for s in state["servers"]))
        return 0 if up else 1
    if args.action == "stop":
        state = stop_detached(args.state_dir)
        print("no supervisor state in " + str(args.state_dir) if state is None else
              f"stopped {len(state['servers'])} CARLA server(s) (logs kept in {args.state_dir})")
        return 0
    docker, root = _source(args.docker, args.carla_root)
    state_dir = Path(args.state_dir)
    argv = []
    for port in server_ports(args.count, args.port, args.port_step):
        server = {"port": port, "command": launch_command(port, docker=docker, carla_root=root),
                  "log": str(state_dir / f"carla-{port}.log"),
                  "cleanup": docker_cleanup_command(port) if docker else None}
        argv += ["--server", json.dumps(server)]
    argv += policy_argv(policy_from(args))
    state = start_detached(state_dir, argv, args.ready_timeout)
    for line in status_lines(state):
        print(line)
    print(f"stop them with: av-td3 carla-servers stop --state-dir {state_dir}")
    return 0


def add_train_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--carla-servers", type=int, default=None, metavar="N",
                   help="with --env carla: start N supervised CARLA servers for the run on carla.port + i * "
                        "carla.port_step ($CARLA_ROOT if set, else docker) and stop them at the end")


def train_with_servers(args: argparse.Namespace, cmd_train: Callable[[argparse.Namespace], int],
                       resolve_config: Callable[[argparse.Namespace], object],
                       policy: Policy = Policy()) -> int:
    """Run ``cmd_train(args)`` with ``args.carla_servers`` servers supervised in this process.

    Raises:
        SupervisorError: bad count, the env is not CARLA, a remote host, or the servers did not come up.
    """
    count = args.carla_servers
    cfg = resolve_config(args)
    if cfg.env.name != "carla":
        raise SupervisorError("--carla-servers needs --env carla (or env.name: carla)")
    if count < 1:
        raise SupervisorError(f"--carla-servers must be >= 1, got {count}")
    if cfg.carla.host not in LOCAL_HOSTS:
        raise SupervisorError(f"--carla-servers starts servers on this machine, but carla.host is {cfg.carla.host!r}; "
                              f"start them there (av-td3 carla-servers start) or drop --carla-servers")
    docker, root = _source(not os.environ.get("CARLA_ROOT"), None)
    log_dir = Path(cfg.logging.log_dir) / "carla-servers"
    sup = Supervisor.for_servers(count, cfg.carla.port, cfg.carla.port_step, log_dir, docker=docker,
                                 carla_root=root, policy=policy, host=cfg.carla.host)
    print(f"[CARLA] starting {count} supervised server(s) on port(s) "
          f"{', '.join(str(s.port) for s in sup.servers)} (logs in {log_dir})")
    try:
        sup.start()  # inside: if a later launch fails, the servers already started are stopped too
        sup.wait_ready(timeout_s=policy.startup_grace_s)
        sup.run_in_background()
        return cmd_train(args)
    finally:
        sup.stop()
        print(f"[CARLA] servers stopped; restarts: "
              + ", ".join(f"port {s.port}: {s.restarts}" for s in sup.servers))

"""The CARLA server supervisor: launch commands, port layout, restart on exit and on hang, backoff,
restart limit, logs kept, whole process groups killed (no orphans), the CLI and ``train --carla-servers``.

No CARLA server can run on these machines. The servers here are stand-in server PROCESSES
(``python tests/carla_standin.py -carla-rpc-port=P``, see ``carla_standin.serve_process``) started by a
stand-in ``CarlaUE4.sh`` that runs them as a child, as CARLA's launcher runs the engine. They answer
the REAL ``carla.Client.get_server_version()`` (the supervisor's health check), can be made to hang
(SIGUSR1) or exit (SIGUSR2), to start a child of their own, and to ignore SIGTERM. A real server is
used where one is installed (``CARLA_ROOT``), in ``test_a_real_server_comes_up_and_goes``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("carla")  # the health check is the real client's get_server_version()

from av_td3.cli import main  # noqa: E402
from av_td3.envs.carla.supervisor import (  # noqa: E402
    Policy,
    Supervisor,
    SupervisorError,
    carla_probe,
    docker_cleanup_command,
    launch_command,
    pid_alive,
    server_ports,
)
from av_td3.envs.carla.supervisor_daemon import read_state  # noqa: E402

STANDIN = Path(__file__).with_name("carla_standin.py")
FAST = Policy(check_interval_s=0.05, probe_timeout_s=0.5, startup_grace_s=20.0, hang_checks=2, backoff_s=0.05,
              max_backoff_s=1.0, max_restarts=3, restart_window_s=600.0, stop_grace_s=1.0)


@pytest.fixture
def carla_root(tmp_path, monkeypatch):
    """A folder with a stand-in ``CarlaUE4.sh`` that runs the stand-in server as its child."""
    root = tmp_path / "carla"
    root.mkdir()
    script = root / "CarlaUE4.sh"
    script.write_text(f'#!/bin/sh\n# stand-in: the server runs as a child of this script, like the engine\n'
                      f'"{sys.executable}" "{STANDIN}" "$@"\n')
    script.chmod(0o755)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("STANDIN_PID_DIR", str(pids))
    return root


def free_base_port(count: int, step: int = 3) -> int:
    """A port p such that p + i * step + {0, 1, 2} are free for i < count."""
    for base in range(31000 + os.getpid() % 500 * 20, 60000, 97):
        try:
            for port in (base + i * step + k for i in range(count) for k in range(3)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def server_pids(root: Path, port: int) -> set[int]:
    """Pids the stand-in server of ``port`` (and its child) wrote (every launch)."""
    return {int(p.name.split(".")[1]) for p in (root.parent / "pids").glob(f"{port}.*.pid")}


def processes_with(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                if pid_alive(int(proc.name)):
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_for(condition, sup: Supervisor | None = None, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time" + (f": {sup.state()}" if sup else ""))
        if sup is not None:
            sup.poll()
        time.sleep(0.02)


def make_supervisor(carla_root: Path, count: int, policy: Policy = FAST) -> Supervisor:
    return Supervisor.for_servers(count, free_base_port(count), 3, carla_root.parent / "logs", docker=False,
                                  carla_root=carla_root, policy=policy)


def test_port_layout_and_launch_commands(tmp_path):
    assert server_ports(3, 2000, 3) == [2000, 2003, 2006]
    with pytest.raises(SupervisorError, match="port-step"):
        server_ports(2, 2000, 2)  # a server also holds port+1 and port+2
    with pytest.raises(SupervisorError, match="count"):
        server_ports(0, 2000, 3)
    cmd = launch_command(2003, docker=True)
    assert cmd[:2] == ["docker", "run"] and "carlasim/carla:0.9.16" in cmd and "--rm" in cmd
    assert cmd[cmd.index("--name") + 1] == "av-td3-carla-2003" and "--net=host" in cmd
    assert cmd[-3:] == ["-RenderOffScreen", "-nosound", "-carla-rpc-port=2003"]
    assert docker_cleanup_command(2003) == ["docker", "rm", "-f", "av-td3-carla-2003"]
    (tmp_path / "CarlaUE4.sh").write_text("")
    assert launch_command(2000, docker=False, carla_root=tmp_path) == [
        str(tmp_path / "CarlaUE4.sh"), "-RenderOffScreen", "-nosound", "-carla-rpc-port=2000"]
    with pytest.raises(SupervisorError, match="CarlaUE4.sh"):
        launch_command(2000, docker=False, carla_root=tmp_path / "nowhere")
    with pytest.raises(SupervisorError, match="--docker"):
        launch_command(2000, docker=False, carla_root=None)


@pytest.mark.slow
def test_restart_on_exit_with_backoff_and_the_log_kept(carla_root):
    sup = make_supervisor(carla_root, 2)
    with sup:
        sup.wait_ready(timeout_s=30)
        first, other = sup.servers
        assert all(carla_probe("localhost", s.port, 1.0) for s in sup.servers)
        killed: set[int] = set()
        for k in (1, 2):
            (pid,) = server_pids(carla_root, first.port) - killed  # the running server
            os.kill(pid, signal.SIGUSR2)  # it exits with code 3
            killed.add(pid)
            wait_for(lambda: first.launches == k + 1 and first.status == "up", sup)
        assert first.restarts == 2 and first.restart_delays == [0.05, 0.1]  # backoff doubles
        assert "exited with code 3" in first.last_exit
        assert other.launches == 1 and other.restarts == 0 and other.status == "up"
        log = Path(first.log).read_text()
        assert log.count("launch ") == 3 and log.count(f"stand-in CARLA server on port {first.port}") == 3
        assert log.count("exited with code 3") == 2  # the crashed runs' output stays in the log
    assert all(s.status == "stopped" for s in sup.servers)


@pytest.mark.slow
def test_restart_on_hang_kills_the_hung_server(carla_root):
    sup = make_supervisor(carla_root, 1)
    with sup:
        sup.wait_ready(timeout_s=30)
        (s,) = sup.servers
        (hung,) = server_pids(carla_root, s.port)
        os.kill(hung, signal.SIGUSR1)  # the port stays open, nothing answers
        wait_for(lambda: s.launches == 2 and s.status == "up", sup)
        assert "hung" in s.last_exit and not pid_alive(hung)
        assert carla_probe("localhost", s.port, 1.0)  # the new one answers


@pytest.mark.slow
def test_restart_limit_gives_up_on_a_crash_loop(carla_root, monkeypatch):
    monkeypatch.setenv("STANDIN_EXIT_AFTER", "0.3")  # every launch dies after 0.3 s
    sup = make_supervisor(carla_root, 1)
    with sup:
        (s,) = sup.servers
        wait_for(lambda: s.status == "failed", sup)
        assert s.launches == 1 + FAST.max_restarts and s.restart_delays == [0.05, 0.1, 0.2]
        with pytest.raises(SupervisorError, match=f"port {s.port}.*log "):
            sup.wait_ready(timeout_s=1.0)
        assert "given up" in Path(s.log).read_text()


@pytest.mark.slow
def test_stop_kills_the_whole_process_group_no_orphans(carla_root, monkeypatch):
    """The server ignores SIGTERM and has a child of its own: stop() still leaves nothing running."""
    monkeypatch.setenv("STANDIN_CHILD", "1")
    monkeypatch.setenv("STANDIN_IGNORE_TERM", "1")
    sup = make_supervisor(carla_root, 2)
    sup.start()
    sup.wait_ready(timeout_s=30)
    launchers = [s.pid for s in sup.servers]
    pids = set().union(*(server_pids(carla_root, s.port) for s in sup.servers))
    assert len(pids) == 4 and all(pid_alive(p) for p in pids | set(launchers))  # 2 servers + their children
    sup.stop()
    wait_for(lambda: not any(pid_alive(p) for p in pids | set(launchers)), timeout_s=10)
    assert all(s.pid is None and s.status == "stopped" for s in sup.servers)
    assert all(processes_with(f"-carla-rpc-port={s.port}") == [] for s in sup.servers)


def test_a_failed_launch_stops_the_servers_already_launched(carla_root):
    sup = make_supervisor(carla_root, 2)
    sup.servers[1].command = [str(carla_root / "no-such-launcher")]
    with pytest.raises(SupervisorError, match="could not launch"):
        with sup:
            pass
    first = sup.servers[0]
    assert first.launches == 1 and first.status == "stopped" and first.pid is None
    assert processes_with(f"-carla-rpc-port={first.port}") == []  # neither its launcher nor the server


@pytest.mark.slow
def test_cli_start_status_stop(carla_root, tmp_path, capsys):
    """``av-td3 carla-servers start`` leaves a detached supervisor; ``status`` reads its state; a server
    that dies is restarted by it; ``stop`` ends the supervisor and every server."""
    base, state_dir = free_base_port(2), tmp_path / "state"
    flags = ["--state-dir", str(state_dir), "--check-interval", "0.1", "--probe-timeout", "0.5", "--backoff", "0.05"]
    assert main(["carla-servers", "start", "--count", "2", "--port", str(base), "--carla-root", str(carla_root),
                 "--ready-timeout", "60", *flags]) == 0
    out = capsys.readouterr().out
    assert f"port {base}: up" in out and f"port {base + 3}: up" in out
    assert main(["carla-servers", "status", *flags]) == 0
    state = read_state(state_dir)
    supervisor_pid = state["supervisor_pid"]
    assert pid_alive(supervisor_pid)
    (pid,) = server_pids(carla_root, base)
    os.kill(pid, signal.SIGUSR2)
    wait_for(lambda: read_state(state_dir)["servers"][0]["restarts"] == 1
             and read_state(state_dir)["servers"][0]["status"] == "up")
    assert main(["carla-servers", "start", "--count", "1", "--port", str(base), "--carla-root", str(carla_root),
                 *flags]) == 2  # one supervisor per state dir
    assert "already runs" in capsys.readouterr().err
    pids = set().union(server_pids(carla_root, base), server_pids(carla_root, base + 3))
    assert main(["carla-servers", "stop", *flags]) == 0
    wait_for(lambda: not pid_alive(supervisor_pid) and not any(pid_alive(p) for p in pids), timeout_s=10)
    assert main(["carla-servers", "status", *flags]) == 1
    assert "not running" in capsys.readouterr().out


@pytest.mark.slow
def test_train_with_carla_servers_supervises_them_for_the_run(carla_root, monkeypatch, tmp_path):
    """``train --env carla --carla-servers 2``: the servers answer while training runs (a stand-in
    training command here: these servers only tell their version) and are gone afterwards."""
    monkeypatch.setenv("CARLA_ROOT", str(carla_root))
    monkeypatch.chdir(tmp_path)
    base = free_base_port(2)
    seen = {}

    def fake_train(args):
        seen["answered"] = [carla_probe("localhost", base + 3 * i, 1.0) for i in range(2)]
        seen["pids"] = set().union(server_pids(carla_root, base), server_pids(carla_root, base + 3))
        return 0

    monkeypatch.setattr("av_td3.cli.cmd_train", fake_train)
    assert main(["train", "--env", "carla", "--carla-servers", "2", "--set", f"carla.port={base}"]) == 0
    assert seen["answered"] == [True, True] and len(seen["pids"]) == 2
    assert not any(pid_alive(p) for p in seen["pids"])
    assert (tmp_path / "runs" / "carla-servers" / f"carla-{base}.log").is_file()


def test_train_carla_servers_usage_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--carla-servers", "1"]) == 2  # the town needs no server
    assert "--env carla" in capsys.readouterr().err
    assert main(["train", "--env", "carla", "--carla-servers", "1", "--set", "carla.host=10.0.0.7"]) == 2
    assert "carla.host" in capsys.readouterr().err
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    assert main(["carla-servers", "start"]) == 2
    assert "--docker" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_server_comes_up_and_goes():
    root = os.environ.get("CARLA_ROOT")
    if not root or not (Path(root) / "CarlaUE4.sh").is_file():
        pytest.skip("no CARLA install here (set CARLA_ROOT to a CARLA 0.9.16 folder to run this)")
    sup = Supervisor.for_servers(1, free_base_port(1), 3, Path("runs") / "carla-servers-test", docker=False,
                                 carla_root=Path(root), policy=Policy(check_interval_s=1.0))
    with sup:
        sup.wait_ready(timeout_s=180)
        assert carla_probe("localhost", sup.servers[0].port, 5.0)


@pytest.mark.slow
def test_stop_after_the_supervisor_was_killed_still_stops_the_servers(carla_root, tmp_path, capsys):
    """The detached supervisor dies (SIGKILL: no chance to clean up): ``status`` says so, and ``stop``
    kills the recorded servers' process groups itself."""
    base, state_dir = free_base_port(1), tmp_path / "state"
    flags = ["--state-dir", str(state_dir), "--check-interval", "0.1", "--probe-timeout", "0.5"]
    assert main(["carla-servers", "start", "--port", str(base), "--carla-root", str(carla_root), *flags]) == 0
    os.kill(read_state(state_dir)["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(read_state(state_dir)["supervisor_pid"]))
    capsys.readouterr()
    assert main(["carla-servers", "status", *flags]) == 1
    assert "not running" in capsys.readouterr().out
    assert processes_with(f"-carla-rpc-port={base}") != []  # the servers outlived their supervisor
    assert main(["carla-servers", "stop", *flags]) == 0
    wait_for(lambda: processes_with(f"-carla-rpc-port={base}") == [], timeout_s=10)

"""``av-td3 sweep``: run a sweep's trials on Ray Tune and record what happened.

Layout of a sweep directory (``--output``, default ``sweeps/<sweep file name>``)::

    sweep.json          the expanded trials (compared on --resume) and the sweep file's settings
    sweep_state.json    per trial: finished / failed (+ error), attempts; per invocation: timings
    trials/<trial>/     ordinary run directories, exactly what `av-td3 train` writes
    logs/<trial>.log    each trial's console output (appended across attempts)
    ray/                Ray Tune's own experiment records

Local Ray starts in-process by default (``ray.init()``, as many CPUs as the machine, or ``--num-cpus``);
``--address`` joins a running cluster (``ray start --head``). Finished trials are never trained again:
the driver skips them, and the trial function itself returns early on a finished run directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from av_td3.io import atomic_write_text
from av_td3.sweep.spec import Sweep, SweepError
from av_td3.sweep.trial import is_finished

MANIFEST = "sweep.json"
STATE = "sweep_state.json"
NAMESPACE = "av-td3-sweep"


def sweep_paths(root: Path) -> dict[str, Path]:
    return {"root": root, "trials": root / "trials", "logs": root / "logs", "ray": root / "ray"}


def prepare_directory(sweep: Sweep, root: Path, resume: bool) -> None:
    """Create the sweep directory, or check on ``--resume`` that it holds this very sweep."""
    manifest_path = root / MANIFEST
    manifest = sweep.manifest()
    if manifest_path.is_file():
        if not resume:
            raise SweepError(f"{root} already holds a sweep; continue it with --resume, or pass another --output")
        old = json.loads(manifest_path.read_text())
        if old.get("trials") != manifest["trials"]:
            old_names = {t["name"] for t in old.get("trials", [])}
            new_names = {t["name"] for t in manifest["trials"]}
            raise SweepError(
                f"--resume: {root} holds a different sweep (trials added: {sorted(new_names - old_names) or 'none'}, "
                f"removed: {sorted(old_names - new_names) or 'none'}, or their overrides changed); "
                "resume with the same sweep file and --set, or pass another --output")
    elif resume and root.exists() and any(root.iterdir()):
        raise SweepError(f"--resume: {root} has no {MANIFEST}; it is not a sweep directory")
    for path in sweep_paths(root).values():
        path.mkdir(parents=True, exist_ok=True)
    if not manifest_path.is_file():
        manifest["sweep_file"] = str(sweep.path)
        manifest["set"] = sweep.spec.set
        manifest["extra_sets"] = sweep.extra_sets
        manifest["resources"] = sweep.spec.resources.model_dump()
        manifest["settings"] = sweep.settings
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2))


def run_sweep(sweep: Sweep, root: Path, address: str | None = None, max_concurrent: int | None = None,
              resume: bool = False, num_cpus: int | None = None) -> int:
    """Run every unfinished trial; returns 0 when all trials are finished, 1 when some failed."""
    t_start = time.time()
    root = root.resolve()
    if address:
        _check_reachable(address)  # before the sweep directory is created
    prepare_directory(sweep, root, resume)
    paths = sweep_paths(root)
    pending = [t for t in sweep.trials if not is_finished(paths["trials"] / t.name)]
    done = len(sweep.trials) - len(pending)
    _complete_reports(sweep, paths["trials"])
    print(f"[SWEEP] {sweep.name}: {len(sweep.trials)} trials ({len(sweep.settings)} settings x "
          f"{len(sweep.spec.seeds)} seeds), {done} finished already, {len(pending)} to run; directory {root}")
    invocation: dict[str, Any] = {"started": t_start, "resume": resume, "address": address, "trials_to_run": len(pending)}
    errors: dict[str, str] = {}
    if pending:
        errors = _run_on_ray(sweep, pending, paths, address, max_concurrent, num_cpus, invocation)
    invocation["wall_s"] = time.time() - t_start
    state = write_state(sweep, root, errors, invocation)
    failed = [t for t in state["trials"] if t["status"] != "finished"]
    for t in failed:
        print(f"[SWEEP] FAILED {t['name']}: {t.get('error', 'no summary.json').splitlines()[0]} (log {t['log']})")
    print(f"[SWEEP] {len(state['trials']) - len(failed)}/{len(state['trials'])} trials finished in "
          f"{invocation['wall_s']:.1f} s; state {root / STATE}")
    if failed:
        print(f"[SWEEP] run the failed trials again with: av-td3 sweep {sweep.path} --output {root} --resume")
    print(f"[SWEEP] aggregates: av-td3 report {root}")
    return 1 if failed else 0


def _run_on_ray(sweep: Sweep, pending, paths: dict[str, Path], address: str | None, max_concurrent: int | None,
                num_cpus: int | None, invocation: dict[str, Any]) -> dict[str, str]:
    import ray
    from ray import tune

    from av_td3.sweep.trial import tune_trainable

    concurrency = max_concurrent or sweep.spec.max_concurrent
    pool_addresses = None
    if sweep.uses_carla:
        from av_td3.config import load_config
        from av_td3.sweep.carla_pool import pool_addresses as build_pool

        carla = load_config(sweep.base, pending[0].overrides).carla
        servers = sweep.spec.carla_servers if sweep.spec.carla_servers is not None else (concurrency or 1)
        pool_addresses = build_pool(servers, carla.host, carla.port, carla.port_step)
        concurrency = min(concurrency or len(pool_addresses), len(pool_addresses))
        print(f"[SWEEP] CARLA servers: {', '.join(f'{h}:{p}' for h, p in pool_addresses)} (one trial per server)")

    t0 = time.time()
    # Workers inherit this process's environment (PYTHONPATH, OMP settings) on a local Ray.
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus, namespace=NAMESPACE,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SweepError(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}; start a cluster "
                         "with `ray start --head` and pass its address, or drop --address for a local Ray") from None
    invocation["ray_init_s"] = time.time() - t0
    res = sweep.spec.resources
    cluster = ray.cluster_resources()
    if res.cpu > cluster.get("CPU", 0) or res.gpu > cluster.get("GPU", 0):
        ray.shutdown()
        raise SweepError(f"each trial asks for {res.cpu} CPU / {res.gpu} GPU but the Ray cluster has "
                         f"{cluster.get('CPU', 0)} CPU / {cluster.get('GPU', 0)} GPU; lower resources: in the sweep file")
    print(f"[SWEEP] Ray {'at ' + address if address else 'local'}: {cluster.get('CPU', 0):g} CPU, "
          f"{cluster.get('GPU', 0):g} GPU; per trial {res.cpu:g} CPU, {res.gpu:g} GPU; "
          f"{concurrency or 'as many as fit'} at once (started in {invocation['ray_init_s']:.1f} s)")
    ctx = {"base": str(sweep.base), "trials_dir": str(paths["trials"]), "logs_dir": str(paths["logs"]),
           "cpu": res.cpu, "cwd": os.getcwd(), "namespace": NAMESPACE,
           "pool_actor": None}
    pool = None
    if pool_addresses:
        from av_td3.sweep.carla_pool import ServerPool

        ctx["pool_actor"] = f"carla-pool-{sweep.name}-{os.getpid()}"
        pool = ray.remote(num_cpus=0)(ServerPool).options(name=ctx["pool_actor"]).remote(pool_addresses)

    name_of = lambda trial: trial.config["trial"]["name"]  # noqa: E731
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": res.cpu, "gpu": res.gpu}),
        param_space={"trial": tune.grid_search([t.to_dict() for t in pending]), "ctx": ctx},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency,
                                    trial_name_creator=name_of, trial_dirname_creator=name_of),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(paths["ray"]),
            failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
            callbacks=[_ProgressPrinter()], verbose=0),
    )
    t_fit = time.time()
    try:
        results = tuner.fit()
    finally:
        invocation["fit_s"] = time.time() - t_fit
        if pool is not None:
            ray.kill(pool)
        ray.shutdown()
    errors = {}
    for result in results:
        if result.error is not None:
            text = str(result.error)  # Ray wraps it: worker traceback first, then our one-paragraph message
            marker = "TrialFailedError: "
            errors[result.config["trial"]["name"]] = text[text.rindex(marker) + len(marker):] if marker in text else text
    return errors


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a cluster address nothing listens on (``ray.init`` would retry for minutes)."""
    import socket

    if address == "auto":
        return  # Ray reads the address of the cluster started on this machine, and says if there is none
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError(f"--address {address!r} must look like HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SweepError(f"--address {address}: no Ray cluster answers there ({exc}); start one with "
                         "`ray start --head --port=6379` on the head node, or drop --address for a local Ray") from None


class _ProgressPrinter:
    """A Tune callback printing one line per trial start, end, failure and retry."""

    def __new__(cls):
        from ray.tune import Callback

        class Printer(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                print(f"[SWEEP] start  {trial.config['trial']['name']}", flush=True)

            def on_trial_complete(self, iteration, trials, trial, **info):
                print(f"[SWEEP] done   {trial.config['trial']['name']}", flush=True)

            def on_trial_recover(self, iteration, trials, trial, **info):
                print(f"[SWEEP] retry  {trial.config['trial']['name']} (failed; retried per max_failures)", flush=True)

            def on_trial_error(self, iteration, trials, trial, **info):
                print(f"[SWEEP] failed {trial.config['trial']['name']}", flush=True)

        return Printer()


def _complete_reports(sweep: Sweep, trials_dir: Path) -> None:
    """A trial killed between its summary.json and its report.md gets the report ``train`` would have written."""
    from av_td3.report.markdown import write_report

    for t in sweep.trials:
        run_dir = trials_dir / t.name
        if is_finished(run_dir) and not (run_dir / "report.md").is_file():
            write_report(run_dir)


def _attempts(logs: Path, name: str) -> list[dict[str, Any]]:
    path = logs / f"{name}.attempts.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_state(sweep: Sweep, root: Path, errors: dict[str, str], invocation: dict[str, Any]) -> dict[str, Any]:
    """Write ``sweep_state.json``: each trial's status and attempts, and this invocation's timings."""
    paths = sweep_paths(root)
    path = root / STATE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    attempts_now = [a for t in sweep.trials for a in _attempts(paths["logs"], t.name) if a["start"] >= invocation["started"]]
    if attempts_now:
        first, last = min(a["start"] for a in attempts_now), max(a["end"] for a in attempts_now)
        # What Ray (start-up, scheduling, worker processes) adds before the first and after the last trial.
        invocation["startup_overhead_s"] = first - invocation["started"]
        invocation["teardown_s"] = invocation["started"] + invocation["wall_s"] - last
    trials = []
    for t in sweep.trials:
        run_dir = paths["trials"] / t.name
        row = {"name": t.name, "setting": t.setting, "seed": t.seed, "params": t.params,
               "status": "finished" if is_finished(run_dir) else "failed", "run_dir": str(run_dir),
               "log": str(paths["logs"] / f"{t.name}.log"), "attempts": _attempts(paths["logs"], t.name)}
        if row["status"] != "finished":
            row["error"] = errors.get(t.name, "not finished (no summary.json); the sweep was interrupted")
        trials.append(row)
    state = {"sweep": sweep.name, "trials": trials, "invocations": [*previous.get("invocations", []), invocation]}
    atomic_write_text(path, json.dumps(state, indent=2))
    return state

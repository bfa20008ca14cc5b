"""Sweep files, the sweep directory's guards, the CARLA server pool and one trial, without Ray."""

import json
from pathlib import Path

import pytest

from av_td3.cli import main
from av_td3.sweep.carla_pool import ServerPool, pool_addresses
from av_td3.sweep.runner import prepare_directory
from av_td3.sweep.spec import SweepError, load_sweep
from av_td3.sweep.trial import TrialFailedError, run_trial
from conftest import ROOT

BASE = (ROOT / "configs" / "td3.yaml").as_posix()


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("BASE", BASE))
    return path


def test_grid_times_seeds_expands_to_named_trials(tmp_path):
    path = write(tmp_path, """
base: BASE
seeds: [0, 1]
grid: {algorithm.n_step: [1, 3], algorithm.image_pad: [0, 4]}
set: {training.max_timesteps: 500}
resources: {cpu: 2, gpu: 0.5}
""")
    sweep = load_sweep(path, ["evaluation.num_episodes=2"])
    assert len(sweep.trials) == 8 and len(sweep.settings) == 4
    assert sweep.settings["n_step1_image_pad4"] == {"algorithm.n_step": 1, "algorithm.image_pad": 4}
    trial = next(t for t in sweep.trials if t.name == "n_step3_image_pad0_seed1")
    assert trial.overrides == ["training.max_timesteps=500", "evaluation.num_episodes=2", "algorithm.n_step=3",
                               "algorithm.image_pad=0", "training.seed=1"]
    assert sweep.spec.resources.gpu == 0.5 and not sweep.uses_carla


def test_shipped_sweep_files_are_valid():
    for path in sorted((ROOT / "configs").glob("sweep_*.yaml")):
        sweep = load_sweep(path)
        assert sweep.trials, path
    ablation = load_sweep(ROOT / "configs" / "sweep_augment_nstep.yaml")
    assert set(ablation.spec.grid) == {"algorithm.image_pad", "algorithm.n_step"}
    assert len(ablation.trials) == 24  # 2 x 2 settings x 6 seeds, as the ablation benchmark ran them


@pytest.mark.parametrize("body, message", [
    ("base: BASE\nseeds: [0]\ngrid: {}\n", "grid is empty"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: []}\n", "has no values"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm.nstep: [1, 3]}\n", "unknown config key 'algorithm.nstep'"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm: [1]}\n", "whole section"),
    ("base: BASE\nseeds: [0]\ngrid: {training.seed: [1, 2]}\n", "set by the sweep itself"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\nresource: {cpu: 1}\n", "unknown key 'resource'"),
    ("base: BASE\ngrid: {algorithm.n_step: [1]}\n", "missing key 'seeds'"),
    ("base: BASE\nseeds: [0, 0]\ngrid: {algorithm.n_step: [1]}\n", "distinct"),
    ("base: nope.yaml\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\n", "base config 'nope.yaml' not found"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1, 99]}\n", "trial n_step99_seed0 has an invalid config"),
    ("base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\ncarla_servers: 2\n", "no trial uses env.name: carla"),
    ("- just a list\n", "must be a mapping"),
])
def test_bad_sweep_files_exit_2_with_a_clear_error(tmp_path, capsys, body, message):
    path = write(tmp_path, body)
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("av-td3: error:") and message in err, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_bad_set_and_missing_file_exit_2(tmp_path, capsys):
    path = write(tmp_path, "base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\n")
    assert main(["sweep", str(path), "--set", "algorithm.batch_sise=8"]) == 2
    assert "unknown config key 'algorithm.batch_sise'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


def test_sweep_directory_guards_against_overwrite_and_changed_resume(tmp_path):
    path = write(tmp_path, "base: BASE\nseeds: [0, 1]\ngrid: {algorithm.n_step: [1, 3]}\n")
    out = tmp_path / "out"
    prepare_directory(load_sweep(path), out, resume=False)
    assert json.loads((out / "sweep.json").read_text())["settings"] == {"n_step1": {"algorithm.n_step": 1},
                                                                         "n_step3": {"algorithm.n_step": 3}}
    with pytest.raises(SweepError, match="already holds a sweep; continue it with --resume"):
        prepare_directory(load_sweep(path), out, resume=False)
    prepare_directory(load_sweep(path), out, resume=True)  # same sweep: fine
    with pytest.raises(SweepError, match="holds a different sweep"):
        prepare_directory(load_sweep(path, ["training.max_timesteps=10"]), out, resume=True)
    with pytest.raises(SweepError, match="trials added: \\['n_step5_seed0'"):
        prepare_directory(load_sweep(write(tmp_path, "base: BASE\nseeds: [0, 1]\ngrid: {algorithm.n_step: [1, 3, 5]}\n")),
                          out, resume=True)


def test_carla_pool_gives_each_trial_its_own_server():
    assert pool_addresses(3, "localhost", 2000, 3) == [("localhost", 2000), ("localhost", 2003), ("localhost", 2006)]
    assert pool_addresses([2000, "gpu2:2000"], "localhost", 1, 1) == [("localhost", 2000), ("gpu2", 2000)]
    with pytest.raises(SweepError, match="same server twice"):
        pool_addresses([2000, "localhost:2000"], "localhost", 2000, 3)
    with pytest.raises(SweepError, match="host:port"):
        pool_addresses(["gpu2"], "localhost", 2000, 3)
    pool = ServerPool(pool_addresses(2, "localhost", 2000, 3))
    a, b = pool.acquire("t1"), pool.acquire("t2")
    assert a != b and pool.acquire("t1") == a  # asking again (a retry) keeps the same server
    assert pool.acquire("t3") is None  # all busy: t3 waits
    pool.release("t1")
    assert pool.acquire("t3") == a and set(pool.holders()) == {"t2", "t3"}


def test_carla_sweep_expands_with_a_pool(tmp_path):
    path = write(tmp_path, "base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1, 3]}\n"
                           "set: {env.name: carla}\ncarla_servers: [2000, 2003]\n")
    sweep = load_sweep(path)
    assert sweep.uses_carla and sweep.spec.carla_servers == [2000, 2003]


def test_failed_trial_raises_with_its_log_tail(tmp_path):
    """A trial whose ``av-td3 train`` fails (here: a key the config does not know) raises with the log's end."""
    ctx = {"base": BASE, "trials_dir": str(tmp_path / "trials"), "logs_dir": str(tmp_path / "logs"),
           "cpu": 1, "cwd": str(tmp_path)}
    trial = {"name": "bad_seed0", "overrides": ["algorithm.not_a_key=1"]}
    with pytest.raises(TrialFailedError, match="(?s)exited with code 2.*unknown config key 'algorithm.not_a_key'"):
        run_trial(trial, ctx)
    attempts = [json.loads(x) for x in (tmp_path / "logs" / "bad_seed0.attempts.jsonl").read_text().splitlines()]
    assert [a["returncode"] for a in attempts] == [2]


def test_report_rejects_non_sweep_and_unfinished_sweep(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    path = write(tmp_path, "base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\n")
    prepare_directory(load_sweep(path), tmp_path / "out", resume=False)
    assert main(["report", str(tmp_path / "out")]) == 2
    assert "no trial has finished yet" in capsys.readouterr().err


def test_unreachable_cluster_address_exits_2_fast(tmp_path, capsys):
    """Nothing listens on the port (a socket bound here and closed); no Ray is started."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    path = write(tmp_path, "base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\n")
    assert main(["sweep", str(path), "--output", str(tmp_path / "out"), "--address", f"127.0.0.1:{port}"]) == 2
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(path), "--output", str(tmp_path / "out2"), "--address", "nonsense"]) == 2
    assert "must look like HOST:PORT" in capsys.readouterr().err


def test_num_cpus_with_a_cluster_address_is_a_usage_error(tmp_path, capsys):
    path = write(tmp_path, "base: BASE\nseeds: [0]\ngrid: {algorithm.n_step: [1]}\n")
    assert main(["sweep", str(path), "--address", "auto", "--num-cpus", "2"]) == 2
    assert "--num-cpus sizes a local Ray" in capsys.readouterr().err

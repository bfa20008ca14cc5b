"""``av-td3 sweep`` end to end on a local Ray (2 CPUs): tiny trials, a killed driver, resume, failures."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from av_td3.cli import main
from conftest import ROOT

pytest.importorskip("ray.tune")
SMOKE = ROOT / "configs" / "sweep_smoke.yaml"


def sweep_cmd(sweep_file, out, *extra):
    return [sys.executable, "-m", "av_td3.cli", "sweep", str(sweep_file), "--output", str(out), "--num-cpus", "2", *extra]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_processes(marker):
    """PIDs of ``av_td3.cli train`` processes whose command line mentions ``marker`` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "av_td3.cli train" in cmd and marker in cmd:
                pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_killed_sweep_resumes_only_the_missing_trials(tmp_path):
    out = tmp_path / "sweep"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(sweep_cmd(SMOKE, out, "--max-concurrent", "2"), cwd=tmp_path, env=env(),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(out.glob("trials/*/summary.json")):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished within 300 s"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything Ray started beside it
        driver.wait()
    deadline = time.time() + 30  # trainings of killed trials end with their Ray worker (SIGTERM on parent death)
    while training_processes(str(out)) and time.time() < deadline:
        time.sleep(0.5)
    assert not training_processes(str(out))
    finished = {p.parent.name: digest(p.parent / "metrics.jsonl") for p in out.glob("trials/*/summary.json")}
    assert 1 <= len(finished) < 4

    resumed_at = time.time()
    res = subprocess.run(sweep_cmd(SMOKE, out, "--max-concurrent", "2", "--resume"), cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"{len(finished)} finished already, {4 - len(finished)} to run" in res.stdout
    runs = sorted(p.name for p in (out / "trials").iterdir())
    assert runs == ["n_step1_seed0", "n_step1_seed1", "n_step3_seed0", "n_step3_seed1"]
    for name in runs:  # ordinary run directories, as `av-td3 train` writes them
        for f in ("summary.json", "metrics.jsonl", "config.yaml", "checkpoints/latest.pt", "report.md"):
            assert (out / "trials" / name / f).is_file(), (name, f)
        cfg = yaml.safe_load((out / "trials" / name / "config.yaml").read_text())
        assert cfg["algorithm"]["n_step"] == int(name[6]) and cfg["training"]["seed"] == int(name[-1])
    for name, before in finished.items():  # finished trials were not trained again
        assert digest(out / "trials" / name / "metrics.jsonl") == before
    state = json.loads((out / "sweep_state.json").read_text())
    assert {t["status"] for t in state["trials"]} == {"finished"}
    assert state["invocations"][-1]["trials_to_run"] == 4 - len(finished)
    assert state["invocations"][-1]["ray_init_s"] > 0 and state["invocations"][-1]["startup_overhead_s"] > 0
    rerun = [t["name"] for t in state["trials"] if any(a["start"] >= resumed_at for a in t["attempts"])]
    assert sorted(rerun) == sorted(set(runs) - set(finished))

    assert main(["report", str(out)]) == 0
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert {s: row["seeds"] for s, row in summary["settings"].items()} == {"n_step1": [0, 1], "n_step3": [0, 1]}
    assert (out / "sweep_report.md").is_file() and (out / "sweep_plots" / "curve_success_rate.png").is_file()


@pytest.mark.slow
def test_failed_trial_is_retried_reported_and_the_others_finish(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the failing setting asks for CUDA, which this machine has")
    smoke = yaml.safe_load(SMOKE.read_text())
    smoke["base"] = str(ROOT / "configs" / "td3.yaml")
    smoke["seeds"] = [0]
    smoke["grid"] = {"training.device": ["cpu", "cuda"]}  # cuda: `train` exits 2 on a CPU-only machine
    del smoke["set"]["training.device"]
    smoke["max_failures"] = 1
    path = tmp_path / "sweep_fail.yaml"
    path.write_text(yaml.safe_dump(smoke))
    out = tmp_path / "sweep"
    res = subprocess.run(sweep_cmd(path, out), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "FAILED devicecuda_seed0: trial devicecuda_seed0: av-td3 train exited with code 2" in res.stdout
    assert "--resume" in res.stdout
    state = {t["name"]: t for t in json.loads((out / "sweep_state.json").read_text())["trials"]}
    assert state["devicecpu_seed0"]["status"] == "finished"
    failed = state["devicecuda_seed0"]
    assert failed["status"] == "failed" and "CUDA" in failed["error"]
    assert [a["returncode"] for a in failed["attempts"]] == [2, 2]  # the first try and one retry

"""``av-td3 report SWEEP_DIR`` on a synthetic sweep directory: numbers against hand computation."""

import json

import numpy as np
import pytest

from av_td3.cli import main

# setting -> per seed: (final success, final route completion, final return, eval curve of returns)
RESULTS = {
    "n_step1": {0: (0.2, 0.5, 10.0, [0.0, 4.0, 10.0]), 1: (0.4, 0.6, 30.0, [0.0, 10.0, 30.0]),
                2: (0.6, 0.7, 20.0, [2.0, 8.0, 20.0]), 3: (1.0, 1.0, 90.0, [0.0, 30.0, 90.0])},
    "n_step3": {0: (0.8, 0.9, 50.0, [0.0, 20.0, 50.0]), 1: (0.8, 0.8, 60.0, [10.0, 30.0, 60.0]),
                2: (0.6, 0.9, 70.0, [0.0, 40.0, 70.0])},  # seed 3 failed: no summary.json
}
STEPS = [1000, 2000, 3000]


def make_sweep_dir(root):
    trials = []
    for setting, seeds in RESULTS.items():
        for seed in range(4):
            name = f"{setting}_seed{seed}"
            trials.append({"name": name, "setting": setting, "seed": seed,
                           "params": {"algorithm.n_step": int(setting[-1])}, "overrides": []})
            run = root / "trials" / name
            run.mkdir(parents=True)
            if seed not in seeds:
                (run / "metrics.jsonl").write_text(json.dumps({"type": "eval", "step": 1000, "episode_reward": 5.0}) + "\n")
                continue
            success, completion, ret, curve = seeds[seed]
            lines = [json.dumps({"type": "eval", "step": s, "episode_reward": r, "success_rate": success,
                                 "route_completion": completion}) for s, r in zip(STEPS, curve)]
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            (run / "summary.json").write_text(json.dumps({"eval_success_rate": success, "eval_route_completion": completion,
                                                          "eval_mean_reward": ret}))
    (root / "sweep.json").write_text(json.dumps({
        "name": "synthetic", "grid": {"algorithm.n_step": [1, 3]}, "trials": trials,
        "settings": {"n_step1": {"algorithm.n_step": 1}, "n_step3": {"algorithm.n_step": 3}}}))


def test_sweep_report_matches_hand_computation(tmp_path, capsys):
    make_sweep_dir(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert "sweep_report.md" in capsys.readouterr().out
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    a, b = summary["settings"]["n_step1"], summary["settings"]["n_step3"]
    assert a["seeds"] == [0, 1, 2, 3] and b["seeds"] == [0, 1, 2] and b["failed_seeds"] == [3]

    # n_step1 returns 10, 30, 20, 90: IQM drops one at each end -> (20 + 30) / 2; mean 37.5; median 25
    ret = a["metrics"]["return"]
    assert ret["values"] == [10.0, 30.0, 20.0, 90.0]
    assert (ret["iqm"]["point"], ret["mean"]["point"], ret["median"]["point"]) == (25.0, 37.5, 25.0)
    for stat in ("iqm", "mean", "median"):
        assert 10.0 <= ret[stat]["low"] <= ret[stat]["point"] <= ret[stat]["high"] <= 90.0
    # n_step3 success 0.8, 0.8, 0.6 (3 runs: floor(3/4) = 0 dropped, IQM = mean)
    assert b["metrics"]["success_rate"]["iqm"]["point"] == pytest.approx(2.2 / 3)
    assert b["metrics"]["success_rate"]["median"]["point"] == pytest.approx(0.8)

    # P(n_step1 > n_step3) on return: only 90 beats any of 50, 60, 70 -> 3 of 12 pairs
    (pi,) = summary["probability_of_improvement"]["return"]
    assert (pi["x"], pi["y"]) == ("n_step1", "n_step3")
    assert pi["p_x_better"]["point"] == pytest.approx(3 / 12)
    # on success: 0.2/0.4 lose to all; 0.6 ties 0.6 once and loses twice; 1.0 beats all -> (0.5 + 3) / 12
    (pi,) = summary["probability_of_improvement"]["success_rate"]
    assert pi["p_x_better"]["point"] == pytest.approx(3.5 / 12)

    # AUC / step of seed 0's curve (0, 4, 10 at 1k, 2k, 3k): (2 + 7) * 1000 / 2000 = 4.5
    assert a["metrics"]["return_auc"]["values"][0] == pytest.approx(4.5)

    # learning curve: IQM over the 4 seeds at each step (2,000: 4, 10, 8, 30 -> (8 + 10) / 2)
    curve = summary["learning_curves"]["return"]["n_step1"]
    assert curve["steps"] == STEPS and curve["iqm"][1] == pytest.approx(9.0)
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["low"], curve["iqm"], curve["high"]))

    # performance profile on success: fraction of runs above each tau, from min to max of all runs
    prof = summary["performance_profile"]["success_rate"]
    taus = np.array(prof["taus"])
    assert taus[0] == pytest.approx(0.2) and taus[-1] == pytest.approx(1.0)
    expected = [np.mean(np.array([0.2, 0.4, 0.6, 1.0]) > t) for t in taus]
    np.testing.assert_allclose(prof["settings"]["n_step1"]["fraction_above"], expected)

    report = (tmp_path / "sweep_report.md").read_text()
    assert "| n_step1 | 4 | 25 [" in report and "| n_step3 | 3 (1 failed) |" in report
    assert "n_step3: seeds [3]" in report
    for png in ("aggregates", "curve_success_rate", "profile_return"):
        assert (tmp_path / "sweep_plots" / f"{png}.png").stat().st_size > 1000

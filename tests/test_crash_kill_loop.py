"""The kill loop: kill -9 a --save-buffer run with a short checkpoint interval at random moments,
resume, repeat; every kill leaves a valid checkpoint + buffer unit, and the finished run's step count,
buffer length, episode numbering and metrics agree. ``benchmarks/kill_loop.py`` runs a longer loop."""

import importlib.util

import pytest

from conftest import ROOT


def _kill_loop_module():
    spec = importlib.util.spec_from_file_location("kill_loop", ROOT / "benchmarks" / "kill_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_random_kills_then_resume_leave_a_consistent_run(tmp_path):
    result = _kill_loop_module().kill_loop(tmp_path, kills=3, max_steps=200, checkpoint_freq=20, eval_freq=80,
                                           max_delay_s=2.5, seed=3)
    # every kill was followed by check_unit (it raises on an inconsistent checkpoint + buffer unit)
    assert result["kills"] >= 3, result
    assert max(result["checkpoint_steps_at_kills"]) > 0, result  # at least one kill hit a run with a checkpoint
    final = result["final"]
    assert final["step"] == final["transitions"] == 200
    assert final["episode_records"] == final["episodes"] >= 2

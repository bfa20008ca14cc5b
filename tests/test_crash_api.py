"""Values that used to pass validation and then crash or mislead: non-finite config numbers, metrics
lines that are JSON but not records, and Python-API misuse of the agent, the CNN and the buffers."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from av_td3.agents.networks import NatureCNN
from av_td3.agents.td3 import TD3Agent
from av_td3.buffers import DictReplayBuffer, ReplayBuffer
from av_td3.config import ConfigError, load_config
from av_td3.io import CorruptFileError
from av_td3.training.run_logger import read_metrics
from conftest import FAST, ROOT, run_cli

SCRIPT = str(ROOT / "scripts/train_td3.py")


# -- item 7: config and metrics ---------------------------------------------------------------------
@pytest.mark.parametrize("key", ["reward.collision_penalty", "reward.progress", "algorithm.expl_noise",
                                 "exploration.expl_noise_final", "networks.actor.learning_rate",
                                 "classical.target_speed_kmh", "carla.timeout_s"])
@pytest.mark.parametrize("value", [".inf", "inf", "nan", "-.inf"])
def test_non_finite_numbers_are_rejected_everywhere(key, value):
    try:
        load_config(None, [f"{key}=1.0"])
    except ConfigError:
        pytest.skip(f"{key} is not a key of this config")
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        load_config(None, [f"{key}={value}"])


def test_inf_reward_weight_on_the_command_line_exits_2(tmp_path):
    res = run_cli([SCRIPT, "--max-timesteps", "10", "--set", "reward.collision_penalty=inf"], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "collision_penalty" in res.stderr and "Traceback" not in res.stderr


def test_metrics_lines_that_are_not_records_are_skipped(tmp_path):
    good = {"type": "episode", "step": 5, "episode": 1, "reward": 1.0}
    (tmp_path / "metrics.jsonl").write_text("\n".join(
        ["[1, 2]", "3", '"text"', "null", json.dumps(good), '{"no": "type"}', '{"type": "eval", "st']) + "\n")
    assert read_metrics(tmp_path) == [good]


@pytest.mark.slow
def test_report_and_resume_survive_a_metrics_line_that_is_not_an_object(tmp_path):
    base = [SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "m", *FAST, "--eval-freq", "0"]
    assert run_cli(base + ["--max-timesteps", "30"], cwd=tmp_path).returncode == 0
    metrics = tmp_path / "m" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "[1, 2]\n42\n")
    res = run_cli(["-m", "av_td3.cli", "report", str(tmp_path / "m")], cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    res = run_cli([SCRIPT, "--resume", "auto", "--log-dir", str(tmp_path), "--run-name", "m",
                   "--set", "training.max_timesteps=40"], cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]


# -- item 8: the Python API -------------------------------------------------------------------------
SPACE = spaces.Dict({"image": spaces.Box(0, 255, (4, 84, 84), np.uint8),
                     "vector": spaces.Box(-10, 10, (23,), np.float32)})


def _obs(vector_value=0.0):
    vector = np.zeros(23, np.float32)
    vector[3] = vector_value
    return {"image": np.zeros((4, 84, 84), np.uint8), "vector": vector}


@pytest.fixture(scope="module")
def agent():
    cfg = load_config(None, ["training.buffer_size=100", "algorithm.batch_size=16"])
    return TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(), use_dict_buffer=True, config=cfg, verbose=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_vector_is_refused_by_both_buffers(bad):
    buf = DictReplayBuffer(SPACE, 2, 10, device="cpu")
    with pytest.raises(ValueError, match=r"obs_dict\['vector'\] holds non-finite values"):
        buf.add(_obs(bad), np.zeros(2, np.float32), _obs(), 0.0, False)
    with pytest.raises(ValueError, match="next_obs_dict"):
        buf.add(_obs(), np.zeros(2, np.float32), _obs(bad), 0.0, False)
    assert len(buf) == 0
    flat = ReplayBuffer(5, 2, 10, device="cpu")
    with pytest.raises(ValueError, match="non-finite"):
        flat.add(np.array([0, 0, bad, 0, 0], np.float32), np.zeros(2), np.zeros(5), 0.0, False)


def test_agent_buffers_refuse_actions_outside_the_action_space(agent, tmp_path):
    buf = agent.replay_buffer
    with pytest.raises(ValueError, match=r"outside the action space \[-1.0, 1.0\].*np.clip"):
        buf.add(_obs(), np.array([1.5, 0.0], np.float32), _obs(), 0.0, False)
    buf.add(_obs(), np.array([1.0, -1.0], np.float32), _obs(), 0.0, True)  # the bounds themselves are fine
    buf.save(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="outside the action space"):  # the bound survives save/load
        DictReplayBuffer.load(tmp_path / "b.npz").add(_obs(), np.array([0.0, -2.0]), _obs(), 0.0, False)


@pytest.mark.parametrize("max_action", [float("nan"), 0.0, -1.0, float("inf")])
def test_max_action_must_be_finite_and_positive(max_action):
    with pytest.raises(ValueError, match="max_action must be finite and > 0"):
        TD3Agent(535, 2, max_action, cnn_extractor=NatureCNN(), use_dict_buffer=True, verbose=False)


def test_state_dim_that_does_not_fit_the_cnn_says_what_it_should_be():
    with pytest.raises(ValueError, match=r"state_dim=100 leaves no room.*state_dim=535"):
        TD3Agent(100, 2, 1.0, cnn_extractor=NatureCNN(), use_dict_buffer=True, verbose=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    from av_td3.training.setup import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError, match="torch sees no CUDA GPU.*device='cpu'"):
        TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(), use_dict_buffer=True, device="cuda", verbose=False)


@pytest.mark.parametrize("noise", [float("nan"), -1.0, float("inf"), "0.1"])
def test_select_action_refuses_a_bad_noise(agent, noise):
    with pytest.raises(ValueError, match="noise .* must be a finite number >= 0"):
        agent.select_action(_obs(), noise=noise)
    assert agent.select_action(_obs(), noise=0.0).shape == (2,)


def test_nature_cnn_refuses_zero_channels_at_once():
    with pytest.raises(ValueError, match="input_channels >= 1"):
        NatureCNN(input_channels=0)


def test_agent_load_reads_a_training_checkpoint(tmp_path):
    res = run_cli([SCRIPT, "--device", "cpu", "--log-dir", str(tmp_path), "--run-name", "a", *FAST,
                   "--max-timesteps", "30", "--eval-freq", "0"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    path = tmp_path / "a" / "checkpoints" / "latest.pt"
    loaded = TD3Agent.load(path)
    saved = torch.load(path, weights_only=False)["agent"]
    assert loaded.total_it == saved["total_it"] > 0
    for name, tensor in loaded.actor.state_dict().items():
        assert torch.equal(tensor, saved["networks"]["actor"][name])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptFileError) as err:
        TD3Agent.load(tmp_path / "junk.pt")
    assert "\x1b[" not in str(err.value)

"""DeviceReplayStorage: the torch (static-shape, graph-capturable) sampling path returns exactly what
the numpy DictReplayBuffer returns, for the same rows, with parallel-env streams, n-step windows and
wrap-around. Runs on CPU; on a GPU the same code runs with ``device="cuda"``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from av_td3 import DictReplayBuffer
from av_td3.buffers.device_storage import DeviceReplayStorage
from av_td3.envs.contract import FrameStack, make_observation_space

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fill(buf: DictReplayBuffer, steps: int, rng: np.random.Generator, stacks, obs, episode_len: int = 13) -> None:
    """``steps`` interleaved steps of every stream; episodes end by termination or truncation."""
    h, w = buf.frame_shape[1:]
    for t in range(steps):
        for s in range(buf.num_streams):
            nxt = {"image": stacks[s].push(rng.integers(0, 256, (h, w), dtype=np.uint8)),
                   "vector": rng.standard_normal(buf._data["vector"].shape[1]).astype(np.float32)}
            end = rng.random() < 1 / episode_len
            done = end and rng.random() < 0.5
            buf.add(obs_dict=obs[s], action=rng.uniform(-1, 1, 2), next_obs_dict=nxt, reward=float(rng.normal()),
                    done=done, truncated=end and not done, stream=s)
            obs[s] = nxt
            if end:
                obs[s] = {"image": stacks[s].reset(rng.integers(0, 256, (h, w), dtype=np.uint8)),
                          "vector": rng.standard_normal(buf._data["vector"].shape[1]).astype(np.float32)}


def assert_same_batch(a, b) -> None:
    for key in a.obs:
        assert torch.equal(a.obs[key].cpu(), b.obs[key].cpu()), key
        assert torch.equal(a.next_obs[key].cpu(), b.next_obs[key].cpu()), key
    for field in ("action", "reward", "not_done", "discount"):
        assert torch.equal(getattr(a, field).cpu(), getattr(b, field).cpu()), field


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("streams,n_step", [(1, 1), (1, 3), (3, 3), (4, 2)])
def test_device_batches_equal_host_batches(device, streams, n_step):
    space = make_observation_space(4, 12, 10, num_waypoints=2)
    buf = DictReplayBuffer(space, 2, 60, n_step=n_step, gamma=0.95, num_streams=streams)
    rng = np.random.default_rng(streams * 10 + n_step)
    stacks = [FrameStack(4) for _ in range(streams)]
    obs = [{"image": st.reset(rng.integers(0, 256, (12, 10), dtype=np.uint8)),
            "vector": rng.standard_normal(7).astype(np.float32)} for st in stacks]
    fill(buf, 20, rng, stacks, obs)
    storage = DeviceReplayStorage(buf, device)  # mirrors what is already there
    for _ in range(3):  # then follows the buffer through more adds and the ring's wrap-around
        idx = buf.valid_indices()
        assert_same_batch(storage.get_batch(torch.as_tensor(idx, device=device)), buf.get_batch(idx))
        fill(buf, 40, rng, stacks, obs)
        storage.sync()
    assert buf.rows_written > buf._rows  # the ring wrapped: rows were overwritten and unflagged


@pytest.mark.parametrize("device", DEVICES)
def test_device_sampling_returns_only_sampleable_rows_uniformly(device):
    space = make_observation_space(4, 8, 8, num_waypoints=1)
    buf = DictReplayBuffer(space, 2, 60, n_step=3, num_streams=2)
    rng = np.random.default_rng(0)
    stacks = [FrameStack(4) for _ in range(2)]
    obs = [{"image": st.reset(rng.integers(0, 256, (8, 8), dtype=np.uint8)),
            "vector": rng.standard_normal(5).astype(np.float32)} for st in stacks]
    fill(buf, 50, rng, stacks, obs, episode_len=6)  # many episode boundaries: many unsampleable rows
    storage = DeviceReplayStorage(buf, device)
    gen = torch.Generator(device=device).manual_seed(0)
    valid = set(buf.valid_indices().tolist())
    counts = np.zeros(buf._rows)
    for _ in range(200):
        batch = storage.sample(64, gen)
        # recover each sample's row from its action (actions are continuous random: unique per row)
        actions = batch.action.cpu().numpy()
        rows = [int(np.flatnonzero((buf._action == a).all(axis=1))[0]) for a in actions]
        assert set(rows) <= valid
        np.add.at(counts, rows, 1)
    seen = counts[sorted(valid)]
    # uniform over sampleable rows: 12,800 draws over len(buf) rows; every row drawn, none far off
    assert (seen > 0).all() and seen.max() < 3 * seen.mean()

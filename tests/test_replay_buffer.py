"""ReplayBuffer (flat states, frozen-CNN mode): the seed's call, n-step windows, wrap-around, errors,
checkpoints."""

from __future__ import annotations

import os
import re
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3 import ReplayBuffer
from av_td3.buffers import BufferTooLargeError, ReplayBatch
from av_td3.buffers import memory as memory_module
from av_td3.io import CorruptFileError


def test_seed_call_and_shapes():
    buf = ReplayBuffer(state_dim=535, action_dim=2, max_size=1000)
    rng = np.random.default_rng(0)
    for _ in range(300):
        state, next_state = rng.normal(size=535), rng.normal(size=535)  # float64 is cast to float32
        buf.add(state=state, action=rng.uniform(-1, 1, 2), next_state=next_state, reward=1.0, done=0.0)
    assert len(buf) == 300
    assert buf.nbytes == 1000 * (4 * (2 * 535 + 2 + 1) + 1)
    state, action, next_state, reward, not_done = buf.sample(256)
    assert state.shape == next_state.shape == (256, 535) and state.dtype == torch.float32
    assert action.shape == (256, 2) and reward.shape == not_done.shape == (256, 1)
    batch = buf.sample_batch(8)
    assert isinstance(batch, ReplayBatch) and torch.all(batch.discount == np.float32(0.99))


@settings(max_examples=150, deadline=None)
@given(
    max_size=st.integers(1, 12),
    n_step=st.sampled_from([1, 2, 3]),
    ends=st.lists(st.sampled_from(["run", "done", "truncated", "break"]), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_wraparound_and_nstep_match_brute_force(max_size, n_step, ends, seed):
    rng = np.random.default_rng(seed)
    gamma = 0.8
    buf = ReplayBuffer(3, 1, max_size, n_step=n_step, gamma=gamma)
    states, next_states, rewards, flags, rows = [], [], [], [], []
    state = rng.normal(size=3).astype(np.float32)
    for end in ends:
        nxt = rng.normal(size=3).astype(np.float32)
        reward = float(rng.normal())
        rows.append(
            buf.add(
                state=state,
                action=np.zeros(1),
                next_state=nxt,
                reward=reward,
                done=end == "done",
                truncated=end == "truncated",
            )
        )
        states.append(state), next_states.append(nxt), rewards.append(reward), flags.append(end)
        # next state: continue, or a new episode / a caller who broke the chain
        state = nxt if end == "run" else rng.normal(size=3).astype(np.float32)

    n = len(ends)
    assert len(buf) == min(n, max_size)
    row_to_id = {row: i for i, row in enumerate(rows)}  # later ids overwrite earlier ones in the same row
    idx = buf.valid_indices()
    assert sorted(row_to_id[int(r)] for r in idx) == list(range(n - len(buf), n))
    batch = buf.get_batch(idx)
    for i, row in enumerate(idx):
        t = row_to_id[int(row)]
        ret, not_done, m, j = 0.0, 1.0, 0, t
        for step in range(n_step):  # brute force
            ret += gamma**step * float(np.float32(rewards[j]))
            m = step + 1
            if flags[j] == "done":
                not_done = 0.0
                break
            if flags[j] != "run" or step == n_step - 1 or j + 1 == n:
                break
            j += 1
        assert np.array_equal(batch.obs[i].numpy(), states[t])
        assert np.array_equal(batch.next_obs[i].numpy(), next_states[j])
        np.testing.assert_allclose(batch.reward[i, 0].item(), ret, rtol=1e-6, atol=1e-6)
        assert batch.not_done[i, 0].item() == not_done
        assert batch.discount[i, 0].item() == np.float32(gamma**m)


def test_truncation_bootstraps_termination_does_not():
    buf = ReplayBuffer(2, 1, 10, gamma=0.5)
    s = np.zeros(2, np.float32)
    r1 = buf.add(state=s, action=[0.0], next_state=s, reward=1.0, done=True)
    r2 = buf.add(state=s, action=[0.0], next_state=s, reward=1.0, done=False, truncated=True)
    b = buf.get_batch(np.array([r1, r2]))
    assert b.not_done[:, 0].tolist() == [0.0, 1.0] and b.discount[:, 0].tolist() == [0.5, 0.5]


def test_errors():
    buf = ReplayBuffer(535, 2, 1000)
    for _ in range(100):
        buf.add(state=np.zeros(535), action=np.zeros(2), next_state=np.zeros(535), reward=0.0, done=False)
    with pytest.raises(ValueError, match=r"^Cannot sample 256 transitions from a buffer holding 100\b"):
        buf.sample(256)
    obs = {"image": np.zeros((4, 84, 84), np.uint8), "vector": np.zeros(23, np.float32)}
    with pytest.raises(TypeError, match="state is a dict observation.*DictReplayBuffer"):
        buf.add(state=obs, action=np.zeros(2), next_state=obs, reward=0.0, done=False)
    with pytest.raises(ValueError, match=re.escape("next_state has shape (23,), expected (535,)")):
        buf.add(state=np.zeros(535), action=np.zeros(2), next_state=np.zeros(23), reward=0.0, done=False)
    with pytest.raises(ValueError, match="reward must be finite"):
        buf.add(state=np.zeros(535), action=np.zeros(2), next_state=np.zeros(535), reward=float("nan"), done=False)
    with pytest.raises(TypeError, match="done must be a scalar"):
        buf.add(state=np.zeros(535), action=np.zeros(2), next_state=np.zeros(535), reward=0.0, done=None)
    assert len(buf) == 100


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(5, 2, 50, n_step=3, gamma=0.9, seed=3)
    rng = np.random.default_rng(1)
    state = rng.normal(size=5).astype(np.float32)
    for t in range(80):  # wraps around
        nxt = rng.normal(size=5).astype(np.float32)
        buf.add(state=state, action=rng.uniform(-1, 1, 2), next_state=nxt, reward=float(t), done=t % 17 == 16)
        state = nxt
    path = tmp_path / "flat.npz"
    buf.save(path)
    assert os.listdir(tmp_path) == ["flat.npz"]
    loaded = ReplayBuffer.load(path)
    same_rng = [b.sample_batch(32, rng=np.random.default_rng(2)) for b in (buf, loaded)]
    for a, b in zip(*same_rng, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(buf.sample(32), loaded.sample(32), strict=True):  # own RNG state restored
        assert torch.equal(a, b)
    loaded2 = ReplayBuffer.from_state_dict(buf.state_dict())
    assert len(loaded2) == len(buf) == 50


def test_dict_call_on_the_flat_buffer_says_which_buffer_it_is():
    buf = ReplayBuffer(535, 2, 10)
    obs = {"image": np.zeros((4, 84, 84), np.uint8), "vector": np.zeros(23, np.float32)}
    with pytest.raises(TypeError, match=r"obs_dict=/next_obs_dict=, but this is the flat-state buffer: pass "
                                        r"state=/next_state= as flat \(535,\).*DictReplayBuffer"):
        buf.add(obs_dict=obs, action=np.zeros(2), next_obs_dict=obs, reward=0.0, done=False)
    with pytest.raises(TypeError, match=r"add\(\) missing state, next_state: call add\(state=\.\.\., action="):
        buf.add(action=np.zeros(2), reward=0.0, done=False)
    assert len(buf) == 0
    buf.add(np.zeros(535), np.zeros(2), np.zeros(535), 0.0, False)  # positional call still works
    assert len(buf) == 1


def test_resuming_needs_the_buffer_in_memory_once(tmp_path, monkeypatch):
    """1.5x the buffer free (a fake MemAvailable that drops by every byte numpy allocates): build and load work."""
    buf = ReplayBuffer(535, 2, 2000, seed=0)
    rng = np.random.default_rng(0)
    state = rng.normal(size=535).astype(np.float32)
    for t in range(2300):
        nxt = rng.normal(size=535).astype(np.float32)
        buf.add(state=state, action=rng.uniform(-1, 1, 2), next_state=nxt, reward=float(t), done=t % 100 == 99)
        state = nxt
    assert len(buf) == buf.max_size
    path = tmp_path / "buffer.npz"
    buf.save(path)
    budget = int(1.5 * buf.nbytes)
    monkeypatch.setattr(memory_module, "available_memory_bytes", lambda: budget - tracemalloc.get_traced_memory()[0])
    tracemalloc.start()
    try:
        fresh = ReplayBuffer(535, 2, 2000)
        del fresh
        loaded = ReplayBuffer.load(path)
        assert tracemalloc.get_traced_memory()[1] < budget  # not the ring plus a copy of the rows
        for a, b in zip(buf.get_batch(np.arange(2000)), loaded.get_batch(np.arange(2000)), strict=True):
            assert torch.equal(a, b)
        del loaded
        budget = int(0.9 * buf.nbytes)
        with pytest.raises(BufferTooLargeError, match=r"ReplayBuffer\(max_size=2,000\).*saved in .*or move the file"):
            ReplayBuffer.load(path)
    finally:
        tracemalloc.stop()


def test_truncated_file_and_new_folder(tmp_path):
    buf = ReplayBuffer(5, 2, 50)
    for t in range(20):
        buf.add(state=np.full(5, t), action=np.zeros(2), next_state=np.full(5, t + 1), reward=1.0, done=False)
    path = tmp_path / "new" / "folder" / "flat.npz"  # saving creates the folders
    buf.save(path)
    assert os.listdir(path.parent) == ["flat.npz"]
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:-100])
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(cut))} is truncated or corrupt.*Delete it"):
        ReplayBuffer.load(cut)
    assert len(ReplayBuffer.load(path)) == 20


def test_refuses_impossible_max_size(monkeypatch):
    with pytest.raises(
        BufferTooLargeError, match=r"ReplayBuffer\(max_size=1,000,000,000,000\).*largest max_size that fits"
    ):
        ReplayBuffer(535, 2, 10**12)
    monkeypatch.setattr(memory_module, "available_memory_bytes", lambda: 1_000_000)
    with pytest.raises(MemoryError, match=r"largest max_size that fits is 232\b"):  # 1e6 // 4293
        ReplayBuffer(535, 2, 1000)
    assert ReplayBuffer(535, 2, 232).nbytes <= 1_000_000


def test_a_container_memory_limit_lowers_the_available_memory(tmp_path, monkeypatch):
    # In a container MemAvailable is the host's; the cgroup limit is what the OOM killer enforces.
    (tmp_path / "memory.max").write_text(f"{3 * 2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**30}\n")
    assert memory_module.cgroup_memory_headroom(str(tmp_path)) == 2 * 2**30
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_module.cgroup_memory_headroom(str(tmp_path)) is None
    assert memory_module.cgroup_memory_headroom(str(tmp_path / "absent")) is None
    monkeypatch.setattr(memory_module, "_mem_available", lambda: 20 * 2**30)
    monkeypatch.setattr(memory_module, "cgroup_memory_headroom", lambda: 2 * 2**30)
    assert memory_module.available_memory_bytes() == 2 * 2**30

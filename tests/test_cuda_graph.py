"""The CUDA-graph update path against the eager reference.

The graph tests need a CUDA GPU and are skipped without one (CI has none; ``benchmarks/gpu_check.sh``
runs them on a GPU machine). On CPU, ``GraphedUpdate``'s control flow runs against an in-process
stand-in for CUDA graphs (a "capture" that records without changing state, a "replay" that re-runs
it), and the buffer-device setting's checks run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from av_td3 import NatureCNN, TD3Agent
from av_td3.agents.cuda_graph import GraphedUpdate, resolve_buffer_device
from av_td3.buffers.base import ReplayBatch
from av_td3.config import ConfigError
from av_td3.envs.contract import FrameStack

pytestmark = pytest.mark.filterwarnings("ignore:DictReplayBuffer.*new frame sequence:RuntimeWarning")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
B = 32


def make_agent(device: str, action_smoothness: float = 0.0, **training) -> TD3Agent:
    """Deterministic update: no random shift, zero target-policy noise, float32 CNN (same seed -> same nets)."""
    cfg = {"algorithm": {"image_pad": 0, "policy_noise": 0.0, "batch_size": B, "action_smoothness": action_smoothness},
           "networks": {"cnn": {"precision": "float32"}},
           "training": {"buffer_size": 2000, **training}}
    torch.manual_seed(0)  # the CNN is built here, from the global RNG: same weights in every agent
    return TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(4, 512), use_dict_buffer=True, config=cfg,
                    device=device, verbose=False)


def fixed_batch(device: str) -> ReplayBatch:
    g = torch.Generator().manual_seed(0)
    return ReplayBatch(
        obs={"image": torch.randint(0, 256, (B, 4, 84, 84), generator=g, dtype=torch.uint8).to(device),
             "vector": torch.randn(B, 23, generator=g).to(device)},
        action=(torch.rand(B, 2, generator=g) * 2 - 1).to(device),
        next_obs={"image": torch.randint(0, 256, (B, 4, 84, 84), generator=g, dtype=torch.uint8).to(device),
                  "vector": torch.randn(B, 23, generator=g).to(device)},
        reward=torch.randn(B, 1, generator=g).to(device),
        not_done=(torch.rand(B, 1, generator=g) > 0.1).float().to(device),
        discount=torch.full((B, 1), 0.99 ** 3).to(device),
    )


def fill(agent: TD3Agent, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    stack = FrameStack(4)
    obs = {"image": stack.reset(rng.integers(0, 256, (84, 84), dtype=np.uint8)),
           "vector": rng.standard_normal(23).astype(np.float32)}
    for t in range(steps):
        nxt = {"image": stack.push(rng.integers(0, 256, (84, 84), dtype=np.uint8)),
               "vector": rng.standard_normal(23).astype(np.float32)}
        agent.replay_buffer.add(obs_dict=obs, action=rng.uniform(-1, 1, 2), next_obs_dict=nxt,
                                reward=float(rng.normal()), done=t % 50 == 49)
        obs = nxt


def test_buffer_device_setting():
    cpu = torch.device("cpu")
    assert resolve_buffer_device("auto", cpu, 10**9) == "cpu"
    assert resolve_buffer_device("cpu", cpu, 1) == "cpu"
    with pytest.raises(ConfigError, match="buffer_device is 'cuda' but the agent runs on the CPU"):
        resolve_buffer_device("cuda", cpu, 1)
    with pytest.raises(ConfigError, match="buffer_device"):
        make_agent("cpu", buffer_device="cuda")


@cuda
@pytest.mark.parametrize("action_smoothness", [0.0, 0.5])
def test_graph_update_gives_the_eager_losses_on_a_fixed_batch(action_smoothness):
    """The same fixed batch through eager ``update()`` and through ``GraphedUpdate`` (3 eager warm-up
    updates, then replays of the critic-only and critic+actor graphs): same losses at every step, with
    and without the smoothness term in the actor loss."""
    batch = fixed_batch("cuda")
    eager, graphed = make_agent("cuda", action_smoothness), make_agent("cuda", action_smoothness)
    run = GraphedUpdate(graphed, B, sample=lambda: batch)
    for step in range(10):
        expect = {k: float(v) for k, v in eager.update(batch).items()}
        got = {k: float(v) for k, v in run().items()}  # static outputs: read before the next replay
        assert got.keys() == expect.keys(), step
        for key in ("critic_loss", "actor_loss", "q_mean", "target_q_mean"):
            if key in expect:
                assert got[key] == pytest.approx(expect[key], rel=1e-3, abs=1e-5), (step, key)
    assert run.eager_updates == 3 and eager.total_it == graphed.total_it == 10
    for a, b in zip(eager.actor.parameters(), graphed.actor.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@cuda
def test_graph_update_with_gpu_replay_storage_trains_without_host_syncs():
    """Default agent (random shift, target noise) on CUDA with the ring on the GPU: sampling and the
    update replay from graphs, losses stay finite, and no replay step synchronises with the host."""
    agent = TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(4, 512), use_dict_buffer=True, verbose=False,
                     config={"algorithm": {"batch_size": B}, "training": {"buffer_size": 2000, "buffer_device": "cuda"}},
                     device="cuda")
    fill(agent, 300)
    for _ in range(6):  # warm-up and capture
        agent.train()
    assert agent._runner.storage is not None and agent._runner.graphed._graphs
    before = [p.detach().clone() for p in agent.critic.parameters()]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            fill(agent, 1, seed=_ + 1)  # new rows reach the device storage between updates
            stats = agent.train()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert agent.total_it == 26
    assert all(np.isfinite(float(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))


# ------------------------------------------------------------------ CPU stand-in for CUDA graphs
class _FakeStream:
    def wait_stream(self, other) -> None:
        pass


class _FakeGraph:
    """Stand-in for ``torch.cuda.CUDAGraph``: ``replay`` re-runs what was "captured" (see ``_fake_record``)."""

    def register_generator_state(self, generator) -> None:
        pass

    def replay(self) -> None:
        self.replay_fn()


def _fake_record(agent):
    """A capture records work without running it: run the body once for its outputs, then put the agent
    (networks, optimizers, counters, RNG) back as it was; a replay re-runs the body with the counter the
    capture saw and writes into the same output tensors, as a graph replay does."""
    import copy

    def record(graph, body):
        snapshot, seen_it = copy.deepcopy(agent.state_dict()), agent.total_it
        stats = body()
        agent.load_state_dict(snapshot)

        def replay():
            saved, agent.total_it = agent.total_it, seen_it
            out = body()
            agent.total_it = saved
            for key, value in out.items():
                stats[key].copy_(value)

        graph.replay_fn = replay
        return stats

    return record


@pytest.fixture
def fake_cuda(monkeypatch):
    """GraphedUpdate's CUDA calls replaced by stand-ins, so its control flow runs on CPU: warm-up count,
    which of the two graphs each step replays, the counter bookkeeping, and fresh inputs before every
    replay. Whether torch captures the update for real is the CUDA tests' job."""
    from contextlib import nullcontext

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)

    def use(agent):
        monkeypatch.setattr(GraphedUpdate, "_record", staticmethod(_fake_record(agent)))

    return use


def _batches(device: str, n: int) -> list[ReplayBatch]:
    out = []
    for i in range(n):
        b = fixed_batch(device)
        out.append(b._replace(reward=b.reward + i, action=b.action.roll(i, dims=0)))
    return out


@pytest.mark.parametrize("action_smoothness", [0.0, 0.5])
def test_graph_control_flow_matches_eager_on_cpu_stand_in(fake_cuda, action_smoothness):
    """Host-batch path: a different batch every step (picked by the update counter) reaches the static
    inputs before each replay; critic-only and actor steps alternate as in eager TD3 (policy_freq 2)."""
    batches = _batches("cpu", 4)
    eager, graphed = make_agent("cpu", action_smoothness), make_agent("cpu", action_smoothness)
    fake_cuda(graphed)
    run = GraphedUpdate(graphed, B, sample=lambda: batches[graphed.total_it % 4])
    for step in range(9):
        expect = {k: float(v) for k, v in eager.update(batches[eager.total_it % 4]).items()}
        got = {k: float(v) for k, v in run().items()}
        assert got.keys() == expect.keys(), step  # actor keys exactly on actor steps
        for key, value in expect.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    assert run.eager_updates == 3 and set(run._graphs) == {False, True}
    assert eager.total_it == graphed.total_it == 9


def test_graph_control_flow_with_device_storage_on_cpu_stand_in(fake_cuda):
    """Storage path: sampling inside the "graph" from the mirrored ring, new rows synced before each
    replay; with the default random shift and target noise the losses equal eager updates that sample
    the same way from an identical buffer."""
    from av_td3.buffers.device_storage import DeviceReplayStorage

    def agent():
        torch.manual_seed(0)
        return TD3Agent(535, 2, 1.0, cnn_extractor=NatureCNN(4, 512), use_dict_buffer=True, verbose=False,
                        config={"algorithm": {"batch_size": B}, "training": {"buffer_size": 2000}})

    eager, graphed = agent(), agent()
    fill(eager, 200), fill(graphed, 200)
    eager_storage, storage = DeviceReplayStorage(eager.replay_buffer, "cpu"), DeviceReplayStorage(graphed.replay_buffer, "cpu")
    fake_cuda(graphed)
    run = GraphedUpdate(graphed, B, storage)
    for step in range(7):
        fill(eager, 1, seed=100 + step), fill(graphed, 1, seed=100 + step)
        eager_storage.sync()
        expect = {k: float(v) for k, v in eager.update(eager_storage.sample(B, eager._gen)).items()}
        got = {k: float(v) for k, v in run().items()}
        assert got.keys() == expect.keys(), step
        for key, value in expect.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    assert int(storage.filled) == graphed.replay_buffer._rows_filled()  # the replays saw the new rows

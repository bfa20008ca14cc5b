"""How ``TD3Agent.train()`` runs an update: eager (the reference), or whole in a CUDA graph.

On a GPU one TD3 update of this shape (batch 256, NatureCNN, two 256-256 MLPs) is a few hundred
small kernels: launching them from Python costs more than running them (measured on an H200: 131
updates/s eager, ~490/s for the same update replayed from one graph; see docs/benchmarks.md).
So on CUDA, after ``WARMUP`` eager updates (which also create Adam's state and pick cuDNN
algorithms), ``GraphedUpdate`` captures the update twice -- a critic-only step and a critic + actor +
targets step (TD3's ``policy_freq``) -- and then replays the one each step needs. With the replay
storage on the GPU (:class:`~av_td3.buffers.device_storage.DeviceReplayStorage`) the sampling is
captured too, so a step is: copy the few new rows to the GPU, one ``graph.replay()``. With the
storage on the host, the host batch is copied into the graph's static input tensors first.

Nothing here reads a value back to the host: the returned statistics are the graph's static output
tensors (overwritten by the next replay of the same graph), converted to floats only when a trainer
logs. The eager path (``UpdateRunner`` on CPU, or ``training.cuda_graph: false``) is the reference;
``tests/test_cuda_graph.py`` checks that the graph gives the same losses on a fixed batch.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from av_td3.buffers.base import ReplayBatch
from av_td3.config_base import ConfigError

#: Eager updates (on a side stream) before capture, as torch's CUDA-graph guide recommends.
WARMUP = 3
#: ``buffer_device: auto`` puts the ring on the GPU when it takes at most this share of free memory.
GPU_BUFFER_SHARE = 0.5


def resolve_buffer_device(setting: str, device: torch.device, nbytes: int) -> str:
    """``training.buffer_device`` -> ``"cpu"`` or ``"cuda"`` for a ring of ``nbytes`` on ``device``."""
    if setting == "cuda" and device.type != "cuda":
        raise ConfigError("training.buffer_device is 'cuda' but the agent runs on the CPU; set training.device "
                          "(or --device) to cuda, or training.buffer_device to auto/cpu")
    if setting == "cpu" or device.type != "cuda":
        return "cpu"
    if setting == "cuda":
        return "cuda"
    free, _total = torch.cuda.mem_get_info(device)
    return "cuda" if nbytes <= GPU_BUFFER_SHARE * free else "cpu"


class CaptureError(RuntimeError):
    """Capturing the update into a CUDA graph failed (nothing was replayed; eager updates still work)."""


class UpdateRunner:
    """Picks and runs the update path for ``agent``: eager, or graphed on CUDA (``training.cuda_graph``).

    It re-checks the buffer on every call, so a buffer swapped in (resume) gets a fresh device copy.
    """

    def __init__(self, agent: Any):
        self.agent = agent
        self.storage = None  # DeviceReplayStorage, when the ring lives on the GPU
        self._storage_of: Any = None  # the buffer that decision was made for
        self.graphed: GraphedUpdate | None = None
        self.capture_failed = False

    def train(self, batch_size: int) -> dict[str, torch.Tensor]:
        agent = self.agent
        self._check_storage()
        if agent.device.type == "cuda" and agent.config.training.cuda_graph and not self.capture_failed:
            if self.graphed is None or self.graphed.batch_size != batch_size:
                self.graphed = GraphedUpdate(agent, batch_size, self.storage)
            try:
                return self.graphed()
            except CaptureError as exc:  # a capture the installed torch/driver refuses: keep training, eagerly
                self.capture_failed, self.graphed = True, None
                warnings.warn(f"{exc}; training continues with eager updates (set training.cuda_graph: false to "
                              "skip the attempt)", RuntimeWarning, stacklevel=2)
        return agent.update(self.sample(batch_size))

    def sample(self, batch_size: int) -> ReplayBatch:
        """One batch from the device storage (sampled on the GPU) or the host buffer."""
        if self.storage is not None:
            self.storage.sync()
            return self.storage.sample(batch_size, self.agent._gen)
        return self.agent.replay_buffer.sample_batch(batch_size)

    def _check_storage(self) -> None:
        agent = self.agent
        buffer = agent.replay_buffer
        if buffer is self._storage_of:
            return
        from av_td3.buffers import DictReplayBuffer
        from av_td3.buffers.device_storage import DeviceReplayStorage

        self._storage_of, self.storage, self.graphed = buffer, None, None
        if isinstance(buffer, DictReplayBuffer):
            where = resolve_buffer_device(agent.config.training.buffer_device, agent.device, buffer.nbytes)
            if where == "cuda":
                self.storage = DeviceReplayStorage(buffer, agent.device)


class GraphedUpdate:
    """One TD3 update per call, replayed from a CUDA graph after ``WARMUP`` eager ones.

    Args:
        agent: a ``TD3Agent`` on CUDA (its Adam optimizers are ``capturable``).
        batch_size: B, fixed for the graphs' lifetime.
        storage: device replay storage (sampling captured in the graph), or None (host batches are
            copied into static input tensors before each replay).
        sample: for tests: a callable returning the batch to use (a fixed batch), instead of sampling.
    """

    def __init__(self, agent: Any, batch_size: int, storage: Any = None,
                 sample: Callable[[], ReplayBatch] | None = None, warmup: int = WARMUP):
        self.agent, self.batch_size, self.storage, self.warmup = agent, batch_size, storage, warmup
        self._sample_fn = sample
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}
        self._static: ReplayBatch | None = None
        self._side = torch.cuda.Stream(device=agent.device)
        self.eager_updates = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        if self.eager_updates < self.warmup:
            self.eager_updates += 1
            return self._eager()
        if not self._graphs:
            try:
                self._capture_all()
            except RuntimeError as exc:
                self._graphs.clear()
                raise CaptureError(f"CUDA graph capture of the update failed ({type(exc).__name__}: "
                                   f"{str(exc)[:300]})") from exc
        agent = self.agent
        actor_step = (agent.total_it + 1) % agent.policy_freq == 0
        self._prepare_inputs()
        graph, stats = self._graphs[actor_step]
        graph.replay()
        agent.total_it += 1  # what update() does in Python, which a replay does not run
        return stats

    # -- steps ----------------------------------------------------------------------------------------
    def _batch(self) -> ReplayBatch:
        """A fresh batch outside the graph (warm-up, and the host path's input)."""
        if self._sample_fn is not None:
            return self._sample_fn()
        if self.storage is not None:
            self.storage.sync()
            return self.storage.sample(self.batch_size, self.agent._gen)
        return self.agent.replay_buffer.sample_batch(self.batch_size)

    def _eager(self) -> dict[str, torch.Tensor]:
        side, main = self._side, torch.cuda.current_stream(self.agent.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            stats = self.agent.update(self._batch())
        main.wait_stream(side)
        return stats

    def _prepare_inputs(self) -> None:
        """Before a replay: new rows to the device storage, or the next batch into the static inputs."""
        if self.storage is not None and self._sample_fn is None:
            self.storage.sync()
            return
        _copy_batch(self._static, self._batch())

    def _capture_all(self) -> None:
        if self.storage is None or self._sample_fn is not None:
            self._static = _clone_batch(self._batch())
        steps = (True,) if self.agent.policy_freq == 1 else (False, True)
        for actor_step in steps:
            self._graphs[actor_step] = self._capture(actor_step)

    def _capture(self, actor_step: bool) -> tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]:
        """Record one update (with the actor/target step or without) into its own graph and memory pool."""
        agent = self.agent
        saved_it = agent.total_it
        agent.total_it = agent.policy_freq - 1 if actor_step else 0  # update() adds one, then branches on it
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(agent._gen)  # augmentation, target noise and sampling draw from it

        def update() -> dict[str, torch.Tensor]:
            batch = self._static if self._static is not None else self.storage.sample(self.batch_size, agent._gen)
            return agent.update(batch)

        try:
            stats = self._record(graph, update)
        finally:
            agent.total_it = saved_it
        return graph, stats

    @staticmethod
    def _record(graph: torch.cuda.CUDAGraph, body: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Capture ``body()`` into ``graph``; returns its outputs (static: each replay overwrites them)."""
        with torch.cuda.graph(graph):
            return body()


def _clone_batch(batch: ReplayBatch) -> ReplayBatch:
    def clone(x: Any) -> Any:
        return {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone()

    return ReplayBatch(*(clone(x) for x in batch))


def _copy_batch(static: ReplayBatch, batch: ReplayBatch) -> None:
    for dst, src in zip(static, batch):
        if isinstance(dst, dict):
            for key in dst:
                dst[key].copy_(src[key], non_blocking=True)
        else:
            dst.copy_(src, non_blocking=True)

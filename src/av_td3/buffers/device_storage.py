"""A DictReplayBuffer's ring mirrored on a torch device and sampled there with static shapes.

On CUDA the host buffer's gather (``np.take`` of 2 x B stacks, ~14 MB per batch of 256) and its copy
to the GPU cost more than the whole update; keeping the ring in GPU memory (1M transitions of the
contract's space: ~7.3 GB) removes both, and sampling with fixed-shape tensor ops (no host sync, no
data-dependent shapes) lets the sampling itself be captured in the update's CUDA graph.

The host buffer stays the authority (``add``, eviction, checkpoints): it logs the rows each ``add``
touches, and ``sync()`` copies exactly those rows over (a few rows per env step). ``get_batch`` and
``sample`` are the torch twins of ``DictReplayBuffer.get_batch`` / ``sample_indices``; they run on any
device, so the CPU tests compare them with the numpy path bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from av_td3.buffers.base import ACT, DONE, SAMPLE, TRUNC, ReplayBatch
from av_td3.buffers.dict_replay_buffer import DictReplayBuffer

#: Candidates drawn per sampled transition; the first B sampleable ones are kept (see ``sample``).
OVERSAMPLE = 3


class DeviceReplayStorage:
    """Device copy of ``buffer``'s ring (frames, other keys, action, reward, flags, back, next_off).

    Args:
        buffer: the host ``DictReplayBuffer`` (it starts logging the rows it changes).
        device: where the copy lives (``cuda`` in training; any device in tests).
    """

    def __init__(self, buffer: DictReplayBuffer, device: str | torch.device):
        if not isinstance(buffer, DictReplayBuffer):
            raise TypeError(f"DeviceReplayStorage mirrors a DictReplayBuffer, got {type(buffer).__name__}")
        self.buffer, self.device = buffer, torch.device(device)
        host = buffer._storage()
        # back/next_off as int64 here: index maths on small unsigned ints would overflow
        self._arrays = {name: torch.zeros(a.shape, device=self.device,
                                          dtype=torch.int64 if name in ("back", "next_off") else _torch_dtype(a.dtype))
                        for name, a in host.items()}
        self.filled = torch.zeros((), dtype=torch.int64, device=self.device)  # rows that may hold data
        self._offsets = torch.as_tensor(buffer._offsets, device=self.device)
        self._stride, self._rows = buffer.num_streams, buffer._rows
        buffer._dirty = []  # the buffer logs the rows it changes from now on
        self._copy_rows(np.arange(buffer._rows_filled(), dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self._arrays.values()))

    def sync(self) -> None:
        """Copy the rows the host buffer changed since the last sync (call before sampling)."""
        dirty, self.buffer._dirty = self.buffer._dirty, []
        if dirty:
            self._copy_rows(np.unique(np.asarray(dirty, dtype=np.int64)))

    def _copy_rows(self, rows: np.ndarray) -> None:
        if len(rows):
            index = self._upload(rows)
            for name, array in self.buffer._storage().items():
                target = self._arrays[name]
                target.index_copy_(0, index, self._upload(array[rows]).to(target.dtype))
        self.filled.fill_(self.buffer._rows_filled())

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor without a host sync: a pageable-memory copy to CUDA waits for the
        stream, a copy from page-locked memory does not (the caching host allocator keeps the block
        until the copy is done)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------------- sampling
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """A uniformly sampled batch, computed on the device with static shapes (graph-capturable).

        Draws ``OVERSAMPLE * B`` rows uniformly in ``[0, filled)`` and keeps the first B sampleable ones
        (a stable sort moves them to the front): the same distribution as the host's rejection
        sampling. Almost every filled row is sampleable (only episode boundaries and the oldest few
        rows are not), so B of 3B candidates fail only with negligible probability; should it happen,
        the missing slots repeat the first kept row rather than return a non-transition.
        """
        n = OVERSAMPLE * batch_size
        u = torch.rand(n, dtype=torch.float64, device=self.device, generator=generator)
        cand = (u * self.filled).long().clamp_(max=self._rows - 1)
        ok = (self._arrays["flags"][cand] & SAMPLE) != 0
        order = torch.argsort((~ok).to(torch.uint8), stable=True)[:batch_size]
        rows, kept = cand[order], ok[order]
        return self.get_batch(torch.where(kept, rows, rows[:1]))

    def get_batch(self, idx: torch.Tensor) -> ReplayBatch:
        """The batch at ring rows ``idx`` (int64 ``(B,)`` on the device); ``DictReplayBuffer.get_batch``'s
        values, without its argument checks (no host sync)."""
        buf, a = self.buffer, self._arrays
        reward, flags, next_off = a["reward"], a["flags"], a["next_off"]
        ret = reward[idx].double()
        f = flags[idx]
        not_done = (f & DONE) == 0
        alive = (f & (DONE | TRUNC)) == 0
        m = torch.ones_like(idx)
        cur = idx
        for i in range(1, buf.n_step):  # the n-step window of nstep_window, fixed trip count
            nxt = (cur + self._stride * next_off[cur]) % self._rows
            alive = alive & ((flags[nxt] & ACT) != 0)
            cur = torch.where(alive, nxt, cur)
            ret = ret + torch.where(alive, buf.gamma**i * reward[cur].double(), 0.0)
            m = m + alive.long()
            f = flags[cur]
            not_done = not_done & ~(alive & ((f & DONE) != 0))
            alive = alive & ((f & (DONE | TRUNC)) == 0)
        next_rows = (cur + self._stride * next_off[cur]) % self._rows
        discount = torch.pow(torch.full_like(ret, buf.gamma), m.double())
        return ReplayBatch(
            obs=self._gather_obs(idx),
            action=a["action"][idx],
            next_obs=self._gather_obs(next_rows),
            reward=ret.float().unsqueeze(1),
            not_done=not_done.float().unsqueeze(1),
            discount=discount.float().unsqueeze(1),
        )

    def _gather_obs(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        buf, a = self.buffer, self._arrays
        back = a["back"][rows].unsqueeze(1)
        src = (rows.unsqueeze(1) - self._stride * torch.minimum(self._offsets.unsqueeze(0), back)) % self._rows
        frames = a["frames"][src]  # (B, k, C, H, W)
        out = {buf.image_key: frames.reshape(len(rows), -1, *frames.shape[3:])}
        for key in buf._data:
            out[key] = a[f"data.{key}"][rows]
        return {key: out[key] for key in buf.keys}


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype

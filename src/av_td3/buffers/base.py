"""What both replay buffers share: the batch type, n-step windows, sampling, tensors and checkpoints.

Storage is a ring of *rows* (numpy arrays preallocated with ``np.empty``). A per-row ``uint8`` bit
field says what a row holds; the subclasses decide what a row is (one camera frame + vector for the
dict buffer, one full transition for the flat buffer) and how a transition finds its successor.
"""

from __future__ import annotations

import json
import os
import tempfile
import weakref
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np
import torch

# Row flags (one uint8 per row).
ACT = 1  # the row holds a transition (action, reward, done, truncated)
SAMPLE = 2  # ... and that transition may be sampled (all its data is still in the ring)
DONE = 4  # the transition terminated the episode: no bootstrapping
TRUNC = 8  # the transition truncated the episode (time limit, stall): bootstrapping continues
LINK = 16  # flat buffer only: this transition continues the previous row's transition

#: Format version written by ``save`` and checked by ``load``.
FORMAT_VERSION = 1

# Output pool of ``_alloc``: arrays this large are recycled; a few per shape, a few shapes.
_POOL_MIN_BYTES = 1 << 20
_POOL_PER_SHAPE = 4
_POOL_MAX_SHAPES = 8


class ReplayBatch(NamedTuple):
    """One sampled batch, every tensor on the buffer's device, first dimension B.

    Attributes:
        obs: dict buffer: ``{key: tensor}``, images uint8 ``(B, k*C, H, W)``, other keys as stored;
            flat buffer: float32 ``(B, state_dim)``.
        action: float32 ``(B, action_dim)``.
        next_obs: like ``obs``: the observation m steps later (m = 1 for one-step returns).
        reward: float32 ``(B, 1)``: ``sum_{i<m} gamma**i * r_{t+i}``.
        not_done: float32 ``(B, 1)``: 0 if the episode *terminated* within the window, else 1
            (a truncation still bootstraps).
        discount: float32 ``(B, 1)``: ``gamma**m``, the factor in front of the bootstrapped value.

    The TD target is ``reward + not_done * discount * Q'(next_obs, .)``.
    """

    obs: Any
    action: torch.Tensor
    next_obs: Any
    reward: torch.Tensor
    not_done: torch.Tensor
    discount: torch.Tensor


def nstep_window(
    first: np.ndarray,
    n_step: int,
    gamma: float,
    reward: np.ndarray,
    flags: np.ndarray,
    step: np.ndarray | int,
    cont_bit: int,
    newest: int = -1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk up to ``n_step`` transitions forward from each row in ``first``, vectorised over the batch.

    The window stops after a termination or truncation, or when the next row does not continue the
    episode (``flags[next] & cont_bit == 0``: the episode's newest transition, or the caller broke
    the sequence), or at ``n_step`` transitions.

    Args:
        first: int64 ``(B,)`` row indices of the sampled transitions.
        n_step, gamma: window length and discount.
        reward, flags: the ring's per-row reward (float32) and flag (uint8) arrays, length R.
        step: rows from a transition to its successor: an int, or a per-row array.
        cont_bit: flag a successor row must carry to continue the window.
        newest: row written last (its ``+ step`` neighbour is the oldest row, not a successor), or -1.

    Returns:
        ``(ret, not_done, m, last)``: float64 discounted reward sums, bool "no termination", int64
        number of rewards summed (1..n_step), int64 row of the last transition in each window.
    """
    rows = len(reward)
    cur = first
    ret = reward[cur].astype(np.float64)
    f = flags[cur]
    not_done = (f & DONE) == 0
    m = np.ones(len(first), dtype=np.int64)
    alive = (f & (DONE | TRUNC)) == 0
    for i in range(1, n_step):
        if not alive.any():
            break
        nxt = (cur + (step if isinstance(step, int) else step[cur].astype(np.int64))) % rows
        alive &= ((flags[nxt] & cont_bit) != 0) & (cur != newest)
        cur = np.where(alive, nxt, cur)
        ret += np.where(alive, gamma**i * reward[cur].astype(np.float64), 0.0)
        m += alive
        f = flags[cur]
        not_done &= ~(alive & ((f & DONE) != 0))
        alive &= (f & (DONE | TRUNC)) == 0
    return ret, not_done, m, cur


def _atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temp file in the same folder, then ``os.replace``: a crash never leaves a
    half-written checkpoint under ``path``. The file is written exactly at ``path`` (no ``.npz`` added)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class BaseReplayBuffer(ABC):
    """Common machinery: argument checks, uniform sampling, tensors on the device, save/load.

    Subclasses implement ``_storage`` (all allocated arrays), ``_sampleable`` (row mask test),
    ``get_batch`` and the ``_state``/``_restore`` pair used by checkpoints.
    """

    def __init__(
        self,
        action_dim: int,
        max_size: int,
        device: str | torch.device,
        n_step: int,
        gamma: float,
        seed: int | None,
    ) -> None:
        name = type(self).__name__
        for arg, value in (("action_dim", action_dim), ("max_size", max_size), ("n_step", n_step)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {arg} must be an int >= 1, got {value!r}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"{name}: gamma must be in [0, 1], got {gamma!r}")
        self.action_dim = int(action_dim)
        self.max_size = int(max_size)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)  # the default RNG of sample()
        self._out_pool: dict[tuple, list[np.ndarray]] = {}  # recycled sample outputs (see _alloc)

    # ----------------------------------------------------------------------------------- subclasses
    @abstractmethod
    def __len__(self) -> int:
        """Transitions that can be sampled now."""

    @abstractmethod
    def _storage(self) -> dict[str, np.ndarray]:
        """Every preallocated array, by name (counted by ``nbytes``)."""

    @abstractmethod
    def _rows_filled(self) -> int:
        """Rows ``[0, n)`` of the ring that have been written at least once."""

    @abstractmethod
    def _sampleable(self, rows: np.ndarray) -> np.ndarray:
        """Bool mask: which of ``rows`` (in ``[0, _rows_filled())``) hold sampleable transitions."""

    @abstractmethod
    def get_batch(self, indices: np.ndarray) -> ReplayBatch:
        """The batch for the transitions at row ``indices`` (from ``sample_indices``/``valid_indices``)."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: JSON-able settings and counters, and the filled rows of the ring."""

    @abstractmethod
    def _set_storage(self, name: str, array: np.ndarray) -> None:
        """Replace the storage array called ``name`` (a key of ``_storage()``)."""

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        """Fill the ring from checkpoint arrays (the first rows of each storage array).

        A full ring is adopted as loaded instead of copied: the ``np.empty`` ring it replaces was never
        touched, so a resumed 1M-transition buffer does not need twice its size in RAM.
        """
        for name, store in self._storage().items():
            saved = arrays[name]
            if saved.shape[1:] != store.shape[1:] or saved.dtype != store.dtype or len(saved) > len(store):
                raise ValueError(
                    f"checkpoint array {name!r} is {saved.dtype} {saved.shape}, "
                    f"expected {store.dtype} rows of {store.shape[1:]}"
                )
            if saved.shape == store.shape and saved.flags.c_contiguous and saved.flags.writeable:
                self._set_storage(name, saved)
            else:
                store[: len(saved)] = saved

    @classmethod
    @abstractmethod
    def _restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], device: str | torch.device):
        """Rebuild a buffer from ``_state()``'s output."""

    # ------------------------------------------------------------------------------------- sampling
    @property
    def nbytes(self) -> int:
        """Bytes allocated by all storage arrays (the ring), whether or not they are filled yet."""
        return int(sum(a.nbytes for a in self._storage().values()))

    def valid_indices(self) -> np.ndarray:
        """int64 row indices of every transition that can be sampled now (``len == len(self)``)."""
        rows = np.arange(self._rows_filled(), dtype=np.int64)
        return rows[self._sampleable(rows)]

    def sample_indices(self, batch_size: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """int64 ``(batch_size,)`` rows drawn uniformly, with replacement, among sampleable transitions.

        Rejection sampling over the filled rows: almost every row holds a sampleable transition (only
        episode boundaries and the oldest few rows do not), so this costs one or two vectorised draws.
        """
        self._check_batch_size(batch_size)
        rng = self.rng if rng is None else rng
        filled = self._rows_filled()
        accept = len(self) / filled
        chosen: list[np.ndarray] = []
        need = batch_size
        while need > 0:
            draw = rng.integers(0, filled, size=int(need / accept * 1.1) + 8)
            ok = draw[self._sampleable(draw)][:need]
            chosen.append(ok)
            need -= len(ok)
        return np.concatenate(chosen).astype(np.int64, copy=False)

    def sample_batch(self, batch_size: int, rng: np.random.Generator | None = None) -> ReplayBatch:
        """A uniformly sampled :class:`ReplayBatch` (``rng`` defaults to ``self.rng``)."""
        return self.get_batch(self.sample_indices(batch_size, rng))

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> tuple:
        """``(obs, action, next_obs, reward, not_done)``: the first five fields of ``sample_batch``."""
        return tuple(self.sample_batch(batch_size, rng)[:5])

    def _check_batch_size(self, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        held = len(self)
        if batch_size > held:
            raise ValueError(
                f"Cannot sample {batch_size} transitions from a buffer holding {held}; keep adding "
                "transitions first (training should start only after start_timesteps steps, and "
                "start_timesteps must be >= batch_size)"
            )

    # -------------------------------------------------------------------------------------- tensors
    def _alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, torch.Tensor]:
        """An output array and the tensor sharing its memory.

        CUDA: page-locked memory from torch's caching host allocator, so ``_to_device`` copies
        asynchronously and the block is reused only once that copy is done.
        CPU: large outputs are recycled from a small pool. A fresh multi-MB array per batch costs page
        faults (glibc returns freed blocks this size to the kernel): ~3 ms on top of a ~1 ms gather. Each
        use hands out a fresh numpy *view* of a pooled array and keeps only a weak reference to it; the
        tensor made by ``torch.from_numpy`` (and every view of that tensor) keeps the view alive, so a
        pooled array is reused only after every tensor of the batch that used it is gone.
        """
        if self.device.type == "cuda":
            tensor = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
            return tensor.numpy(), tensor
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes < _POOL_MIN_BYTES:
            array = np.empty(shape, dtype)
            return array, torch.from_numpy(array)
        key = (tuple(shape), np.dtype(dtype).str)
        pool = self._out_pool.get(key)
        if pool is None:
            if len(self._out_pool) >= _POOL_MAX_SHAPES:  # batch sizes keep changing: start over
                self._out_pool.clear()
            pool = self._out_pool[key] = []
        for entry in pool:
            if entry[1]() is None:  # the view handed out last time is gone: no tensor uses the memory
                view = entry[0].view()
                entry[1] = weakref.ref(view)
                return view, torch.from_numpy(view)
        array = np.empty(shape, dtype)
        view = array.view()
        if len(pool) < _POOL_PER_SHAPE:
            pool.append([array, weakref.ref(view)])
        return view, torch.from_numpy(view)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A small computed array as a tensor on the device (via pinned memory on CUDA)."""
        if self.device.type == "cpu":
            return torch.from_numpy(np.ascontiguousarray(array))
        out, tensor = self._alloc(array.shape, array.dtype)
        out[...] = array
        return self._to_device(tensor)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return tensor
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """Write the buffer (filled rows, write pointer, episode bookkeeping, RNG) to one ``.npz`` file,
        atomically (temp file + ``os.replace``)."""
        meta, arrays = self._state()
        meta = {"format": FORMAT_VERSION, "class": type(self).__name__, "rng": self.rng.bit_generator.state, **meta}
        _atomic_savez(path, {"meta": np.array(json.dumps(meta)), **arrays})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None):
        """Rebuild a buffer written by ``save``; ``device`` defaults to the saved one."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            if meta.get("class") != cls.__name__ or meta.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"{os.fspath(path)} holds a {meta.get('class')} checkpoint (format {meta.get('format')}); "
                    f"{cls.__name__}.load reads format {FORMAT_VERSION} of {cls.__name__}"
                )
            arrays = {name: data[name] for name in data.files if name != "meta"}
        buf = cls._restore(meta, arrays, meta["device"] if device is None else device)
        buf.rng.bit_generator.state = meta["rng"]
        return buf

    def state_dict(self) -> dict[str, Any]:
        """``{"meta": dict, "arrays": {name: ndarray}}``, the content ``save`` writes (arrays not copied)."""
        meta, arrays = self._state()
        return {"meta": {"rng": self.rng.bit_generator.state, **meta}, "arrays": arrays}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device | None = None):
        """Inverse of ``state_dict``; the arrays are copied, so the two buffers never share storage."""
        meta = state["meta"]
        arrays = {name: np.array(array, copy=True) for name, array in state["arrays"].items()}
        buf = cls._restore(meta, arrays, meta["device"] if device is None else device)
        buf.rng.bit_generator.state = meta["rng"]
        return buf

"""What both replay buffers share: the batch type, n-step windows, sampling, tensors and checkpoints.

Storage is a ring of *rows* (numpy arrays preallocated with ``np.empty``). A per-row ``uint8`` bit
field says what a row holds; the subclasses decide what a row is (one camera frame + vector for the
dict buffer, one full transition for the flat buffer) and how a transition finds its successor.
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.lib import format as npy_format

from av_td3.buffers.memory import BufferTooLargeError
from av_td3.io import CorruptFileError, atomic_write

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

# ``load`` reads each stored array straight into the ring, this many bytes at a time.
_READ_CHUNK = 1 << 20


class _Required:
    """Default of ``add()`` arguments that must be given: lets ``add`` explain a wrong call itself
    (e.g. the other buffer's keywords) instead of Python's bare "missing argument" TypeError."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def missing_args(owner: str, **given: Any) -> None:
    """Raise a TypeError naming the ``add()`` arguments left at ``REQUIRED`` and showing the full call."""
    missing = [name for name, value in given.items() if value is REQUIRED]
    call = ", ".join(f"{name}=..." for name in given)
    raise TypeError(f"{owner}.add() missing {', '.join(missing)}: call add({call}, truncated=...)")


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
    stride: int = 1,
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
        stride: ring rows per step unit: the dict buffer's parallel-env streams own every ``stride``-th
            row, so a successor ``step`` rows later in its stream is ``stride * step`` ring rows later.

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
        nxt = (cur + stride * (step if isinstance(step, int) else step[cur].astype(np.int64))) % rows
        alive &= ((flags[nxt] & cont_bit) != 0) & (cur != newest)
        cur = np.where(alive, nxt, cur)
        ret += np.where(alive, gamma**i * reward[cur].astype(np.float64), 0.0)
        m += alive
        f = flags[cur]
        not_done &= ~(alive & ((f & DONE) != 0))
        alive &= (f & (DONE | TRUNC)) == 0
    return ret, not_done, m, cur


class BaseReplayBuffer(ABC):
    """Common machinery: argument checks, uniform sampling, tensors on the device, save/load.

    Subclasses implement ``_storage`` (all allocated arrays), ``_sampleable`` (row mask test),
    ``get_batch`` and, for checkpoints, ``_state`` and its inverse ``_build`` + ``_set_counters``.
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
        #: Actions must lie in [-action_bound, action_bound] (``None``: any finite action). The agent sets it
        #: to its ``max_action``, so an action the env would clip is refused instead of stored unclipped.
        self.action_bound: float | None = None
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

    @classmethod
    @abstractmethod
    def _build(cls, meta: dict[str, Any], read: Callable[[str], np.ndarray], device: str | torch.device):
        """An empty buffer with the settings in ``meta`` (``_state()``'s), its ring allocated but untouched.

        ``read(name)`` returns a small non-storage checkpoint array (e.g. the dict buffer's space bounds).
        The constructor's memory check runs here, before any storage array is read.
        """

    @abstractmethod
    def _set_counters(self, meta: dict[str, Any]) -> None:
        """Restore write pointer and bookkeeping from ``meta`` once the ring holds the saved rows."""

    def _fill(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy checkpoint arrays (the first rows of each storage array) into the ring."""
        for name, store in self._storage().items():
            saved = arrays[name]
            _check_saved(name, saved.shape, saved.dtype, store)
            store[: len(saved)] = saved

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

    def end_sequence(self) -> None:
        """Say that the next ``add`` does not continue the last one (the env was restarted mid-episode,
        e.g. on resume). Transitions are self-contained here; the dict buffer shares frames across them."""

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> tuple:
        """``(obs, action, next_obs, reward, not_done)``: the first five fields of ``sample_batch``.

        The seed's tuple, without ``discount``. With ``n_step == 1`` the missing factor is the constant
        ``gamma``; with ``n_step > 1`` ``reward`` is an m-step discounted sum with m varying per sample
        (windows stop at episode ends), so TD targets need ``sample_batch().discount`` (``gamma ** m``).
        """
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
    def save(self, path: str | os.PathLike, stamp: dict[str, Any] | None = None) -> None:
        """Write the buffer (filled rows, write pointer, episode bookkeeping, RNG) to one ``.npz`` file,
        atomically (temp file + ``os.replace``: a crash never leaves a half-written file at ``path``).

        The file is written exactly at ``path`` (no ``.npz`` appended); missing parent folders are created.
        ``stamp`` (JSON-able, e.g. the training checkpoint's step and id) is stored with it and read back
        by :meth:`read_stamp`, so a checkpoint can tell its own buffer from another one.
        """
        state = self.state_dict()
        meta = {"format": FORMAT_VERSION, "class": type(self).__name__, **state["meta"]}
        if stamp is not None:
            meta["stamp"] = stamp
        arrays = {"meta": np.array(json.dumps(meta)), **state["arrays"]}
        atomic_write(path, lambda f: np.savez(f, **arrays), what="replay buffer")

    @classmethod
    def read_stamp(cls, path: str | os.PathLike) -> dict[str, Any] | None:
        """The ``stamp`` a file was saved with (``None`` if none), without reading its transitions."""
        with _NpzReader(os.fspath(path), cls.__name__) as reader:
            stamp = reader.meta().get("stamp")
        return stamp if isinstance(stamp, dict) else None

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None):
        """Rebuild a buffer written by ``save``; ``device`` defaults to the saved one.

        The memory check (:class:`BufferTooLargeError`) runs on the settings stored in the file, before
        any transition is read; the saved rows are then read straight into the ring, so resuming needs the
        buffer's size in RAM once, as building it did.

        Raises:
            FileNotFoundError: no file at ``path``.
            CorruptFileError: the file is truncated, damaged or not a replay buffer file.
            ValueError: the file holds another buffer class or format version.
            BufferTooLargeError: the saved ``max_size`` does not fit in available memory.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{cls.__name__}.load: replay buffer file not found: {path}")
        with _NpzReader(path, cls.__name__) as reader:
            meta = reader.meta()
            if meta.get("class") != cls.__name__ or meta.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"{path} holds a {meta.get('class')} checkpoint (format {meta.get('format')}); "
                    f"{cls.__name__}.load reads format {FORMAT_VERSION} of {cls.__name__}"
                )
            bad_setting = (KeyError, TypeError, AttributeError)  # missing or mistyped: damaged, not misuse
            with reader.reading("settings", bad_setting):
                try:
                    buf = cls._build(meta, reader.array, meta["device"] if device is None else device)
                except BufferTooLargeError as exc:  # its advice (lower buffer_size) does not apply to a saved one
                    raise BufferTooLargeError(
                        f"{exc} Here the size is that of the buffer saved in {path} (max_size="
                        f"{meta['max_size']:,}): to resume it, free memory; or move the file away to resume "
                        "without it (training then refills a new buffer of training.buffer_size)."
                    ) from None
            rows = {name: reader.read_into(name, store) for name, store in buf._storage().items()}
            with reader.reading("settings", bad_setting):
                buf._restore_meta(meta)
            with reader.reading("settings"):
                _check_rows(rows, buf._rows_filled())
        return buf

    def state_dict(self) -> dict[str, Any]:
        """``{"meta": dict, "arrays": {name: ndarray}}``, the content ``save`` writes (arrays not copied)."""
        meta, arrays = self._state()
        return {"meta": {"rng": self.rng.bit_generator.state, "action_bound": self.action_bound, **meta}, "arrays": arrays}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device | None = None):
        """Inverse of ``state_dict``; the arrays are copied into the new ring, so the two buffers never
        share storage (the memory check runs before the copy)."""
        meta, arrays = state["meta"], state["arrays"]
        buf = cls._build(meta, arrays.__getitem__, meta["device"] if device is None else device)
        buf._fill(arrays)
        buf._restore_meta(meta)
        _check_rows({name: len(arrays[name]) for name in buf._storage()}, buf._rows_filled())
        return buf

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        """Counters, RNG state and action bound from a saved ``meta`` (``state_dict()["meta"]``)."""
        self._set_counters(meta)
        self.rng.bit_generator.state = meta["rng"]
        self.action_bound = meta.get("action_bound")


def _check_rows(rows: dict[str, int], filled: int) -> None:
    """Every storage array of a checkpoint holds exactly the ring's filled rows."""
    wrong = {name: n for name, n in rows.items() if n != filled}
    if wrong:
        raise ValueError(f"checkpoint arrays {wrong} do not hold the {filled} rows its counters say were written")


def _check_saved(name: str, shape: tuple[int, ...], dtype: np.dtype, store: np.ndarray) -> None:
    """A checkpoint array must be the first rows of the storage array it restores."""
    shape = tuple(shape)
    fits = len(shape) == store.ndim and shape[1:] == store.shape[1:] and shape[0] <= len(store)
    if not fits or np.dtype(dtype) != store.dtype:
        raise ValueError(
            f"checkpoint array {name!r} is {np.dtype(dtype)} {shape}, expected {store.dtype} rows of "
            f"{store.shape[1:]} (at most {len(store)})"
        )


class _NpzReader:
    """Reads a file written by ``BaseReplayBuffer.save`` member by member.

    Every failure to read (truncated or damaged zip, bad ``.npy`` header, missing member, bad JSON)
    becomes a :class:`CorruptFileError` that names the file and says what to do.
    """

    def __init__(self, path: str, owner: str) -> None:
        self.path, self.owner = path, owner
        with self.reading("zip directory"):
            self.zip = zipfile.ZipFile(path)

    def __enter__(self) -> _NpzReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.zip.close()

    @contextlib.contextmanager
    def reading(self, what: str, errors: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
        """Turn ``errors`` raised inside into :class:`CorruptFileError` (never memory or permission errors)."""
        try:
            yield
        except (CorruptFileError, MemoryError, PermissionError):
            raise
        except errors as exc:  # zipfile, zlib, numpy and json raise many types for damaged files
            raise CorruptFileError(
                f"{self.owner}.load: replay buffer file {self.path} is truncated or corrupt (reading {what}: "
                f"{type(exc).__name__}: {exc}). Delete it to resume without the saved replay buffer (training "
                "then refills the buffer before updating again), or replace it with an intact copy (or resume from "
                "another checkpoint whose buffer file is intact); buffer files are written atomically, so this "
                "one was damaged outside a save."
            ) from None

    def _open(self, name: str):
        return self.zip.open(f"{name}.npy")

    def array(self, name: str) -> np.ndarray:
        """A (small) member as a new array."""
        with self.reading(f"array {name!r}"), self._open(name) as f:
            return npy_format.read_array(f, allow_pickle=False)

    def meta(self) -> dict[str, Any]:
        with self.reading("meta"):
            meta = json.loads(str(self.array("meta")[()]))
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a JSON {type(meta).__name__}, not an object")
        return meta

    def read_into(self, name: str, store: np.ndarray) -> int:
        """Read member ``name`` into the first rows of ``store`` without an intermediate array; returns
        the number of rows read."""
        with self.reading(f"array {name!r}"), self._open(name) as f:
            version = npy_format.read_magic(f)
            header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f".npy format version {version}, save() writes 1.0 or 2.0")
            shape, fortran_order, dtype = header[version](f)
            if fortran_order and len(shape) > 1:
                raise ValueError("array stored in Fortran order, save() writes C order")
            _check_saved(name, shape, dtype, store)  # a ValueError: raised as CorruptFileError too
            flat = store[: shape[0]].view()
            flat.shape = (-1,)  # raises instead of copying: the bytes must land in the ring itself
            target = memoryview(flat.view(np.uint8))
            pos, total = 0, target.nbytes
            while pos < total:
                got = f.readinto(target[pos : pos + _READ_CHUNK])
                if not got:
                    raise EOFError(f"{total - pos} of {total} bytes missing")
                pos += got
        return int(shape[0])

"""Replay buffer for dict observations that stores each camera frame once.

A stacked image observation ``(k*C, H, W)`` (k frames of C channels, oldest first) shares k-1 frames
with the previous step's, and ``obs`` of step t+1 *is* ``next_obs`` of step t. Storing stacks (SB3) or,
worse, float32 stacks for obs and next_obs (the seed design) costs 8 to 32 copies of every frame. Here
the ring holds one *row* per observation: one frame ``(C, H, W)`` plus the other keys (e.g. ``vector``).

Row layout. Within a *sequence* of contiguous observations rows are consecutive, and each row keeps
``back`` = how many earlier rows of its sequence its stack may use (capped at k-1). The stack at row r
is the frames of rows ``r - min(k-1-j, back[r])`` for j = 0..k-1, so a reset stack filled with the first
frame needs a single row, and any other first stack is written as its distinct frames ("pre-roll" rows
that are not transitions themselves). A transition lives in the row of its ``obs``; ``next_off[r]``
rows later is the row of its ``next_obs`` (1 when the next stack is this one shifted by one frame,
which is always the case for a frame-stacking env). The next ``add`` of the same episode reuses that
row as its obs when ``obs_dict`` equals the previous ``next_obs_dict`` bit for bit; anything else
starts a new sequence, so data returned is always exactly what was added.

Wrap-around. When the ring is full the oldest row is overwritten. Any later row whose stack reaches
back to it loses its sampleable flag at that moment (``_forget_row``), so no stack ever mixes episodes
or returns an overwritten frame. Successor rows are always newer than their transition, hence intact.

Parallel envs (``num_streams`` = N > 1). N envs add interleaved episode streams (``add(..., stream=i)``).
Each stream owns every N-th row of the ring (global row = local row * N + stream), so within a stream
rows are consecutive exactly as above, with a stride of N: a stack never mixes envs or episodes, each
frame is still stored once, and one ``np.take`` still gathers a whole batch. Each stream keeps its own
write pointer, pending ``next_obs`` and eviction tail, and holds at most its share of ``max_size``
(``max_size // N``, the first ``max_size % N`` streams one more). With N = 1 the layout is today's.

Capacity. The ring has ``max_size + max(ceil(max_size / 64), 2k + 2)`` rows: one per transition plus
head-room for episode boundaries (one row per episode for its final ``next_obs``); ``len(buf)`` never
exceeds ``max_size`` (the oldest transitions are dropped first). For the contract's (4, 84, 84) uint8
+ 23 float32 space this is ~7,275 bytes per transition (SB3's DictReplayBuffer: 56,652).

Every episode costs one row more than its transitions (L + 1 rows for L steps from a reset stack of
repeated frames; up to k - 1 more when the first stack has distinct frames, or per sequence break). The
head-room covers episodes of about 64 steps or more; with shorter ones the ring fills first and
``len(buf)`` tops out below ``max_size``, at about ``rows * L / (L + 1)``: ~92% of ``max_size`` for
10-step episodes, ~50% for 1-step episodes.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from av_td3.buffers.base import (
    ACT, DONE, REQUIRED, SAMPLE, TRUNC, BaseReplayBuffer, ReplayBatch, missing_args, nstep_window,
)
from av_td3.buffers.memory import check_fits

#: Fraction of ``max_size`` added as rows for episode boundaries (final next_obs, pre-roll frames).
HEADROOM_FRACTION = 1 / 64


def ring_rows(max_size: int, frame_stack: int) -> int:
    """Rows allocated for ``max_size`` transitions of stack depth ``frame_stack`` (see module doc).

    The ``2k + 2`` minimum guarantees that one ``add`` (at most k rows for obs and k for next_obs)
    never overwrites rows of the transition it is writing.
    """
    return max_size + max(math.ceil(max_size * HEADROOM_FRACTION), 2 * frame_stack + 2)


class DictReplayBuffer(BaseReplayBuffer):
    """Frame-deduplicating replay buffer for ``gymnasium.spaces.Dict`` observations.

    Args:
        observation_space: ``Dict`` with ``image_key`` -> ``Box`` uint8 ``(k * frame_channels, H, W)``
            (k frames, oldest first; each frame's channels contiguous) and any other ``Box`` keys
            (stored as given, once per observation).
        action_dim: length of the float32 action vector.
        max_size: capacity in transitions (see module doc for the exact ring size, and Capacity below).
        device: where sampled tensors go; on CUDA batches are gathered into pinned memory and copied
            asynchronously.
        n_step: at most this many rewards summed per sample (1 = one-step TD); see Sampling below.
        gamma: discount used for n-step sums and the returned ``discount`` (``gamma ** m``).
        image_key: key of the stacked camera image.
        frame_channels: channels per frame: 1 for grayscale stacks (the contract), 3 for RGB stacks.
        seed: seed of ``self.rng``, the default generator of ``sample``.

    Sampling. ``sample_batch`` returns a :class:`ReplayBatch` whose ``reward`` is the discounted n-step
    sum ``sum_{i<m} gamma**i * r_{t+i}``, ``next_obs`` the observation m steps later and ``discount``
    the bootstrap factor ``gamma ** m``, per sample: m (1..n_step) is the number of rewards actually
    summed, as a window stops after a termination (``not_done`` 0) or a truncation, at the newest stored
    observation of a running episode, or where ``obs_dict`` was not the previous ``next_obs_dict``.
    The TD target is ``reward + not_done * discount * Q'(next_obs, .)``; ``TD3Agent.train`` samples
    with ``sample_batch`` and passes ``batch.discount`` to ``td_target``. ``sample`` returns only the
    seed's five fields ``(obs, action, next_obs, reward, not_done)``, without ``discount``: with
    ``n_step > 1`` a caller of ``sample`` cannot know m (a constant ``gamma ** n_step`` over-discounts
    the windows cut short), so use ``sample_batch``. With ``n_step == 1`` m is always 1.

    Capacity: each episode costs one row beyond its transitions, so with very short episodes (under
    ~64 steps) ``len(buf)`` tops out below ``max_size`` (see the module doc).

    Raises:
        TypeError / ValueError: on a space this buffer cannot store.
        BufferTooLargeError: (a ``ValueError`` and ``MemoryError``) if the ring does not fit in
            available memory; raised before anything is allocated and names the largest size that fits.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_dim: int,
        max_size: int,
        device: str | torch.device = "cpu",
        n_step: int = 1,
        gamma: float = 0.99,
        image_key: str = "image",
        frame_channels: int = 1,
        seed: int | None = None,
        num_streams: int = 1,
    ) -> None:
        super().__init__(action_dim, max_size, device, n_step, gamma, seed)
        self._parse_space(observation_space, image_key, frame_channels)
        if isinstance(num_streams, bool) or not isinstance(num_streams, (int, np.integer)) or num_streams < 1:
            raise ValueError(f"DictReplayBuffer: num_streams must be an int >= 1 (one per env), got {num_streams!r}")
        if num_streams > self.max_size:
            raise ValueError(
                f"DictReplayBuffer: num_streams={num_streams} exceeds max_size={self.max_size}; each env's stream "
                "needs room for at least one transition (raise training.buffer_size or lower training.num_envs)"
            )
        self.num_streams = n = int(num_streams)
        # stream i holds at most _caps[i] transitions; together exactly max_size
        self._caps = [self.max_size // n + (1 if i < self.max_size % n else 0) for i in range(n)]
        self._stream_rows = ring_rows(self._caps[0], self.frame_stack)  # rows per stream
        self._rows = n * self._stream_rows
        check_fits(type(self).__name__, self.max_size, self._nbytes_for)

        rows, k = self._rows, self.frame_stack
        small = np.min_scalar_type(k)  # back <= k-1 and next_off <= k: uint8 for any sane stack
        self._frames = np.empty((rows, *self.frame_shape), dtype=np.uint8)
        self._data = {key: np.empty((rows, *shape), dtype) for key, (shape, dtype) in self._other.items()}
        self._action = np.empty((rows, self.action_dim), dtype=np.float32)
        self._reward = np.empty(rows, dtype=np.float32)
        self._flags = np.zeros(rows, dtype=np.uint8)
        self._back = np.zeros(rows, dtype=small)
        self._next_off = np.zeros(rows, dtype=small)
        self._offsets = np.arange(k - 1, -1, -1, dtype=np.int64)  # frame j of a stack is `offset` rows back

        # Per stream, in the stream's own (local) row numbers; local row t lives at global row
        # (t % stream_rows) * N + stream.
        self._written = [0] * n  # rows ever written by the stream
        self._tail = [0] * n  # local row from which over-capacity eviction continues
        self._pending = [-1] * n  # local row of the stream's running episode's latest next_obs, or -1
        self._last_next: list[dict[str, np.ndarray] | None] = [None] * n  # copy of that next_obs
        self._stream_valid = [0] * n  # sampleable transitions per stream
        self._n_valid = 0
        #: Times a stack did not continue the previous one within an episode (each costs extra rows).
        self.sequence_breaks = 0
        #: Rows changed since a device mirror (``DeviceReplayStorage``) last synced; None: no mirror.
        self._dirty: list[int] | None = None

    def __repr__(self) -> str:
        return (
            f"DictReplayBuffer(len={len(self):,}, max_size={self.max_size:,}, {self.image_key}="
            f"{self.frame_stack}x{self.frame_shape}, keys={self.keys}, n_step={self.n_step}, "
            f"num_streams={self.num_streams}, "
            f"nbytes={self.nbytes:,})"
        )

    # ---------------------------------------------------------------------------------------- space
    def _parse_space(self, space: spaces.Dict, image_key: str, frame_channels: int) -> None:
        if not isinstance(space, spaces.Dict):
            raise TypeError(
                f"DictReplayBuffer needs a gymnasium.spaces.Dict observation space (e.g. "
                f"Dict(image=Box(0, 255, (4, 84, 84), uint8), vector=Box(-10, 10, (23,), float32))), got "
                f"{space!r}. For flat state vectors use av_td3.ReplayBuffer."
            )
        if image_key not in space.spaces:
            raise ValueError(
                f"observation space has no {image_key!r} key (keys: {list(space.spaces)}); pass "
                "image_key= to name the stacked camera image"
            )
        for key, sub in space.spaces.items():
            if not isinstance(sub, spaces.Box):
                raise TypeError(f"observation space key {key!r} is {sub!r}; DictReplayBuffer stores Box keys only")
        image = space.spaces[image_key]
        if image.dtype != np.uint8 or len(image.shape) != 3:
            raise TypeError(
                f"observation space {image_key!r} must be Box uint8 (k * channels, H, W), got "
                f"{image.dtype} {image.shape}; images are stored raw and scaled inside the network"
            )
        if isinstance(frame_channels, bool) or not isinstance(frame_channels, (int, np.integer)) or frame_channels < 1:
            raise ValueError(f"frame_channels must be an int >= 1, got {frame_channels!r}")
        if image.shape[0] % frame_channels:
            raise ValueError(
                f"observation space {image_key!r} has {image.shape[0]} channels, not a multiple of "
                f"frame_channels={frame_channels}"
            )
        self.observation_space = space
        self.image_key = image_key
        self.frame_channels = int(frame_channels)
        self.frame_stack = image.shape[0] // self.frame_channels  # k
        self.frame_shape = (self.frame_channels, *image.shape[1:])  # (C, H, W) of one stored frame
        self.keys = list(space.spaces)
        self._other = {
            key: (tuple(sub.shape), np.dtype(sub.dtype)) for key, sub in space.spaces.items() if key != image_key
        }

    def _row_bytes(self) -> int:
        small = np.min_scalar_type(self.frame_stack).itemsize
        return (
            int(np.prod(self.frame_shape))  # uint8 frame
            + sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self._other.values())
            + 4 * self.action_dim  # float32 action
            + 4  # float32 reward
            + 1  # uint8 flags
            + 2 * small  # back, next_off
        )

    def _nbytes_for(self, max_size: int) -> int:
        n = getattr(self, "num_streams", 1)
        return n * ring_rows(-(-max_size // n), self.frame_stack) * self._row_bytes()

    # ------------------------------------------------------------------------------------------ add
    def add(
        self,
        obs_dict: Mapping[str, np.ndarray] = REQUIRED,
        action: np.ndarray = REQUIRED,
        next_obs_dict: Mapping[str, np.ndarray] = REQUIRED,
        reward: float = REQUIRED,
        done: bool = REQUIRED,
        truncated: bool = False,
        *,
        stream: int = 0,
        state: Any = None,
        next_state: Any = None,
    ) -> int:
        """Store one transition.

        Args:
            obs_dict, next_obs_dict: dict observations as returned by ``env.reset()``/``env.step()``;
                every key of the space, exact shape and dtype (no casting: data round-trips bit for bit).
            action: ``(action_dim,)`` (any float dtype; stored as float32).
            reward: scalar.
            done: the episode *terminated* (collision, goal...): the TD target does not bootstrap.
            truncated: the episode was cut (time limit, stall): it ends, but the target bootstraps.
            stream: which env (0..num_streams-1) the transition comes from; successive adds of one
                stream continue its episode whatever the other streams added in between.
            state, next_state: not accepted; they exist so that the seed's flat call
                ``add(state=..., next_state=...)`` gets an error saying what to pass instead.

        Returns:
            The row index of the transition (what ``sample_indices``/``valid_indices`` return for it).

        Raises:
            TypeError: ``state=``/``next_state=`` given, a required argument missing, or a wrong type.
            ValueError: a wrong shape, key set or a non-finite value (nothing is stored).
        """
        if state is not None or next_state is not None:
            raise TypeError(self._flat_call_message(state if state is not None else next_state))
        if (obs_dict is REQUIRED or action is REQUIRED or next_obs_dict is REQUIRED or reward is REQUIRED
                or done is REQUIRED):
            missing_args("DictReplayBuffer", obs_dict=obs_dict, action=action, next_obs_dict=next_obs_dict,
                         reward=reward, done=done)
        obs = self._check_obs(obs_dict, "obs_dict")
        nxt = self._check_obs(next_obs_dict, "next_obs_dict")
        act = _check_action(action, self.action_dim, self.action_bound)
        rew = _scalar(reward, "reward", float)
        if not math.isfinite(rew):
            raise ValueError(f"reward must be finite, got {rew}")
        done, truncated = _scalar(done, "done", bool), _scalar(truncated, "truncated", bool)
        s = self._check_stream(stream)

        c = self.frame_channels
        if self._pending[s] >= 0 and self._same_obs(obs, self._last_next[s]):
            r = self._pending[s]  # obs is the stored next_obs of the previous step: share its row
        else:
            if self._pending[s] >= 0:
                self._sequence_break("obs_dict is not the previous add's next_obs_dict")
            r = self._write_stack(obs, s)
        slot = self._slot(r, s)
        if self._dirty is not None:
            self._dirty.append(slot)
        self._action[slot] = act
        self._reward[slot] = rew
        self._flags[slot] = ACT | (DONE if done else 0) | (TRUNC if truncated else 0)

        image, next_image = obs[self.image_key], nxt[self.image_key]
        if image[c:].tobytes() == next_image[: len(next_image) - c].tobytes():  # memcmp: fastest here
            # the usual case: next stack = this stack shifted by one frame -> one new row
            back = min(int(self._back[slot]) + 1, self.frame_stack - 1)
            p = self._write_row(next_image[len(next_image) - c :], nxt, back, s)
        else:
            self._sequence_break("next_obs_dict's image is not obs_dict's shifted by one frame")
            p = self._write_stack(nxt, s)
        self._next_off[slot] = p - r  # in the stream's rows (global stride num_streams)

        self._flags[slot] |= SAMPLE
        self._n_valid += 1
        self._stream_valid[s] += 1
        if done or truncated:
            self._pending[s], self._last_next[s] = -1, None
        else:
            self._pending[s] = p
            self._last_next[s] = {key: value.copy() for key, value in nxt.items()}
        self._evict_over_capacity(s)
        return slot

    def _check_stream(self, stream: Any) -> int:
        if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or not 0 <= stream < self.num_streams:
            raise ValueError(
                f"DictReplayBuffer.add: stream must be an env index in [0, {self.num_streams}) "
                f"(num_streams={self.num_streams}), got {stream!r}"
            )
        return int(stream)

    def _slot(self, local: int, stream: int) -> int:
        """Global ring row of the stream's local row ``local`` (absolute, any size)."""
        return (local % self._stream_rows) * self.num_streams + stream

    def _flat_call_message(self, state: Any) -> str:
        shape = getattr(state, "shape", None)
        return (
            f"DictReplayBuffer.add takes dict observations, not state=/next_state=: pass the dict observation "
            f"(obs_dict=..., next_obs_dict=...) from env.reset()/env.step() with keys {self.keys}, e.g. "
            "add(obs_dict=obs, action=action, next_obs_dict=next_obs, reward=reward, done=terminated, "
            f"truncated=truncated); got state={type(state).__name__}"
            + (f" of shape {tuple(shape)}" if shape is not None else "")
            + ". For flat state vectors (frozen CNN) use av_td3.ReplayBuffer instead."
        )

    def end_sequence(self, stream: int | None = None) -> None:
        """The next ``add`` (of ``stream``, default: of every stream) starts a new frame sequence,
        without the sequence-break warning."""
        for s in range(self.num_streams) if stream is None else (self._check_stream(stream),):
            self._pending[s], self._last_next[s] = -1, None

    def _check_obs(self, obs: Any, name: str) -> dict[str, np.ndarray]:
        """Validate one dict observation; returns C-contiguous arrays (not copied when already so)."""
        if not isinstance(obs, Mapping):
            shape = getattr(obs, "shape", None)
            raise TypeError(
                f"DictReplayBuffer.add: {name} must be the dict observation from env.reset()/env.step() "
                f"with keys {self.keys}, e.g. add(obs_dict=obs, action=action, next_obs_dict=next_obs, "
                f"reward=reward, done=terminated, truncated=truncated); got {type(obs).__name__}"
                + (f" of shape {tuple(shape)}" if shape is not None else "")
                + ". For flat state vectors (frozen CNN) use av_td3.ReplayBuffer instead."
            )
        if self.image_key not in obs:
            raise ValueError(
                f"DictReplayBuffer.add: {name} has no {self.image_key!r} key (got keys {list(obs)}); pass the "
                f"dict observation from env.reset()/env.step() (keys {self.keys}), e.g. add(obs_dict=obs, ...), "
                "not a flattened state. For flat state vectors use av_td3.ReplayBuffer instead."
            )
        if len(obs) != len(self.keys) or any(key not in obs for key in self.keys):
            missing = [key for key in self.keys if key not in obs]
            unexpected = [key for key in obs if key not in self.observation_space.spaces]
            raise ValueError(
                f"DictReplayBuffer.add: {name} keys do not match the observation space {self.keys}: "
                f"missing {missing}, unexpected {unexpected}"
            )
        out = {}
        for key in self.keys:
            value = obs[key]
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            space = self.observation_space.spaces[key]
            if value.dtype != space.dtype:
                hint = " (store raw camera bytes; scaling happens inside the network)" if key == self.image_key else ""
                raise TypeError(
                    f"DictReplayBuffer.add: {name}[{key!r}] has dtype {value.dtype}, expected {space.dtype}{hint}"
                )
            if value.shape != space.shape:
                hint = " (channels first: (k * channels, H, W))" if key == self.image_key else ""
                raise ValueError(
                    f"DictReplayBuffer.add: {name}[{key!r}] has shape {value.shape}, expected {space.shape}{hint}"
                )
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"DictReplayBuffer.add: {name}[{key!r}] holds non-finite values (NaN/inf at "
                                 f"{np.argwhere(~np.isfinite(value)).reshape(-1).tolist()[:8]}); nothing was stored. "
                                 "Fix the observation at its source (a sensor or a division by zero in the env)")
            out[key] = np.ascontiguousarray(value)
        return out

    def _same_obs(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray] | None) -> bool:
        """Bit-for-bit equality of two validated observations (so -0.0 != 0.0, NaN == the same NaN)."""
        return b is not None and all(a[key].tobytes() == b[key].tobytes() for key in self.keys)

    def _sequence_break(self, why: str) -> None:
        self.sequence_breaks += 1
        if self.sequence_breaks == 1:
            warnings.warn(
                f"DictReplayBuffer: {why} within an episode; stored as a new frame sequence (correct, but it "
                f"costs up to {self.frame_stack} extra rows). If every step does this (e.g. frames stacked "
                "newest-first), the buffer holds far fewer transitions than max_size. Counted in "
                "buffer.sequence_breaks.",
                RuntimeWarning,
                stacklevel=3,
            )

    # ----------------------------------------------------------------------------------------- rows
    def _write_row(self, frame: np.ndarray, obs: dict[str, np.ndarray], back: int, s: int) -> int:
        """Write one row of stream ``s`` (frame ``(C, H, W)`` + the non-image keys of ``obs``); returns its
        local absolute index."""
        t = self._written[s]
        if t >= self._stream_rows:
            self._forget_row(t - self._stream_rows, s)
        slot = self._slot(t, s)
        if self._dirty is not None:
            self._dirty.append(slot)
        self._frames[slot] = frame
        for key, store in self._data.items():
            store[slot] = obs[key]
        self._flags[slot] = 0
        self._back[slot] = back
        self._next_off[slot] = 0
        self._written[s] = t + 1
        return t

    def _write_stack(self, obs: dict[str, np.ndarray], s: int) -> int:
        """Start a new sequence holding ``obs``: the first stack's distinct frames, one row each.

        The leading run of frames equal to the first one needs a single row (the stack clamps at the
        sequence start), so a reset stack of repeated frames costs one row. Returns the absolute index of
        the last row, the one whose stack equals ``obs``'s image.
        """
        k = self.frame_stack
        frames = obs[self.image_key].reshape(k, *self.frame_shape)
        first = 0
        if k > 1:
            same = (frames[1:] == frames[0]).reshape(k - 1, -1).all(axis=1)
            first = k - 1 if same.all() else int(np.argmin(same))  # frames[0..first] are all equal
        row = -1
        for back, j in enumerate(range(first, k)):
            row = self._write_row(frames[j], obs, back, s)
        return row

    def _forget_row(self, old: int, s: int) -> None:
        """Stream ``s``'s local row ``old`` is about to be overwritten: unflag every transition that needs it.

        That is the row's own transition and the stream's rows up to k-1 later whose stacks reach back
        to it. Successor rows (next_obs, n-step) are always newer, so they never lose data first.
        """
        for d in range(self.frame_stack):
            x = old + d
            if x >= self._written[s]:
                break
            self._unflag(self._slot(x, s), s, d)
        self._tail[s] = max(self._tail[s], old + 1)

    def _unflag(self, slot: int, s: int, min_back: int = 0) -> None:
        """Make the transition at ``slot`` unsampleable if it is sampleable and its stack uses ``min_back`` rows."""
        if self._back[slot] >= min_back and self._flags[slot] & SAMPLE:
            if self._dirty is not None:
                self._dirty.append(slot)
            self._flags[slot] &= ~SAMPLE & 0xFF
            self._n_valid -= 1
            self._stream_valid[s] -= 1

    def _evict_over_capacity(self, s: int) -> None:
        """Drop stream ``s``'s oldest sampleable transitions until it holds at most its share of ``max_size``."""
        while self._stream_valid[s] > self._caps[s]:
            self._unflag(self._slot(self._tail[s], s), s)
            self._tail[s] += 1

    # ------------------------------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return self._n_valid

    @property
    def rows_written(self) -> int:
        """Rows ever written: one per new camera frame (plus pre-roll/boundary rows). Diagnostics."""
        return sum(self._written)

    def _storage(self) -> dict[str, np.ndarray]:
        return {
            "frames": self._frames,
            **{f"data.{key}": store for key, store in self._data.items()},
            "action": self._action,
            "reward": self._reward,
            "flags": self._flags,
            "back": self._back,
            "next_off": self._next_off,
        }

    def _rows_filled(self) -> int:
        # rows of a stream that wrote fewer rows than the busiest one are unwritten: flags 0, never sampled
        return self.num_streams * min(max(self._written), self._stream_rows)

    def _sampleable(self, rows: np.ndarray) -> np.ndarray:
        return (self._flags[rows] & SAMPLE) != 0

    def get_batch(self, indices: np.ndarray) -> ReplayBatch:
        """Rebuild the transitions at row ``indices`` into a :class:`ReplayBatch` on the device.

        Images come back uint8 ``(B, k*C, H, W)``, gathered with one vectorised ``np.take`` per stack.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        filled = self._rows_filled()
        if idx.size and (idx.min() < 0 or idx.max() >= filled or not self._sampleable(idx).all()):
            raise ValueError("get_batch: indices must be rows of sampleable transitions (see valid_indices())")
        if self.n_step == 1:
            ret = self._reward[idx]
            not_done = (self._flags[idx] & DONE) == 0
            discount = np.full((len(idx), 1), self.gamma, dtype=np.float32)
            last = idx
        else:
            ret, not_done, m, last = nstep_window(
                idx, self.n_step, self.gamma, self._reward, self._flags, self._next_off, ACT,
                stride=self.num_streams,
            )
            discount = np.power(self.gamma, m, dtype=np.float64).astype(np.float32).reshape(-1, 1)
        next_rows = (last + self.num_streams * self._next_off[last].astype(np.int64)) % self._rows

        action, action_t = self._alloc((len(idx), self.action_dim), np.dtype(np.float32))
        np.take(self._action, idx, axis=0, out=action, mode="wrap")
        return ReplayBatch(
            obs=self._gather_obs(idx),
            action=self._to_device(action_t),
            next_obs=self._gather_obs(next_rows),
            reward=self._tensor(ret.astype(np.float32, copy=False).reshape(-1, 1)),
            not_done=self._tensor(not_done.astype(np.float32).reshape(-1, 1)),
            discount=self._tensor(discount),
        )

    def _gather_obs(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: self._to_device(t) for key, (_, t) in self._gather_obs_arrays(rows, self._alloc).items()}

    def _gather_obs_arrays(self, rows: np.ndarray, alloc) -> dict[str, tuple[np.ndarray, Any]]:
        """The observations stored at ``rows`` as ``{key: (array, tensor_or_None)}`` (from ``alloc``)."""
        b, k = len(rows), self.frame_stack
        # frame j of the stack at row r: r - min(k-1-j, back[r]) (clamped at the sequence start)
        # (one stream's rows are num_streams apart; the ring length is a multiple of it, so wrapping
        # never leaves the stream)
        src = rows[:, None] - self.num_streams * np.minimum(self._offsets[None, :], self._back[rows][:, None])
        out = {}
        image, image_t = alloc((b, k * self.frame_channels, *self.frame_shape[1:]), np.dtype(np.uint8))
        # mode="wrap" does the modulo of negative rows for free (and avoids np.take's buffered "raise")
        np.take(self._frames, src, axis=0, out=image.reshape(b, k, *self.frame_shape), mode="wrap")
        out[self.image_key] = (image, image_t)
        for key, store in self._data.items():
            arr, arr_t = alloc((b, *store.shape[1:]), store.dtype)
            np.take(store, rows, axis=0, out=arr, mode="wrap")
            out[key] = (arr, arr_t)
        return {key: out[key] for key in self.keys}

    def _obs_at(self, row: int) -> dict[str, np.ndarray]:
        """The observation stored at ring row ``row`` as numpy arrays (no batch dimension)."""
        arrays = self._gather_obs_arrays(
            np.array([row], dtype=np.int64), lambda shape, dtype: (np.empty(shape, dtype), None)
        )
        return {key: arr[0] for key, (arr, _) in arrays.items()}

    # ---------------------------------------------------------------------------------- checkpoints
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        filled = self._rows_filled()
        meta = {
            "device": str(self.device),
            "keys": self.keys,
            "dtypes": {key: str(self.observation_space.spaces[key].dtype) for key in self.keys},
            "action_dim": self.action_dim,
            "max_size": self.max_size,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "image_key": self.image_key,
            "frame_channels": self.frame_channels,
            "rows": self._rows,
            "num_streams": self.num_streams,
            "written": self._written,
            "tail": self._tail,
            "pending": self._pending,
            "n_valid": self._n_valid,
            "sequence_breaks": self.sequence_breaks,
        }
        arrays = {name: store[:filled] for name, store in self._storage().items()}
        for key in self.keys:
            arrays[f"space.{key}.low"] = self.observation_space.spaces[key].low
            arrays[f"space.{key}.high"] = self.observation_space.spaces[key].high
        return meta, arrays

    @classmethod
    def _build(cls, meta: dict[str, Any], read, device: str | torch.device):
        space = spaces.Dict(
            OrderedDict(
                (
                    key,
                    spaces.Box(
                        low=read(f"space.{key}.low"),
                        high=read(f"space.{key}.high"),
                        dtype=np.dtype(meta["dtypes"][key]),
                    ),
                )
                for key in meta["keys"]
            )
        )
        buf = cls(
            space,
            meta["action_dim"],
            meta["max_size"],
            device=device,
            n_step=meta["n_step"],
            gamma=meta["gamma"],
            image_key=meta["image_key"],
            frame_channels=meta["frame_channels"],
            num_streams=meta.get("num_streams", 1),  # files written before streams existed hold one
        )
        if buf._rows != meta["rows"]:
            raise ValueError(f"checkpoint has {meta['rows']} ring rows, this version allocates {buf._rows}")
        return buf

    def _set_counters(self, meta: dict[str, Any]) -> None:
        def per_stream(value: Any) -> list[int]:  # one int in files written before streams existed
            values = [int(v) for v in (value if isinstance(value, list) else [value])]
            if len(values) != self.num_streams:
                raise ValueError(f"counter has {len(values)} streams, the buffer {self.num_streams}")
            return values

        self._written, self._tail = per_stream(meta["written"]), per_stream(meta["tail"])
        self._pending = per_stream(meta["pending"])
        self._n_valid, self.sequence_breaks = meta["n_valid"], meta["sequence_breaks"]
        self._last_next = [None if p < 0 else self._obs_at(self._slot(p, s)) for s, p in enumerate(self._pending)]
        filled = self._rows_filled()
        streams = np.arange(filled) % self.num_streams
        sampleable = self._sampleable(np.arange(filled))
        self._stream_valid = [int(np.count_nonzero(sampleable & (streams == s))) for s in range(self.num_streams)]


def _check_action(action: Any, action_dim: int, bound: float | None = None) -> np.ndarray:
    """float32 ``(action_dim,)`` from an array-like (a CPU tensor is fine), within ``[-bound, bound]``."""
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    try:
        arr = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"action must be a float array of shape ({action_dim},), got {type(action).__name__}") from exc
    if arr.size != action_dim or arr.ndim > 2:
        raise ValueError(f"action has shape {arr.shape}, expected ({action_dim},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"action must be finite, got {arr.reshape(-1)}")
    if bound is not None and (np.abs(arr) > np.float32(bound)).any():
        raise ValueError(f"action {arr.reshape(-1)} lies outside the action space [-{bound}, {bound}]: the env "
                         "would execute a clipped action, so store the action actually executed "
                         f"(np.clip(action, -{bound}, {bound}))")
    return arr.reshape(action_dim)


def _scalar(value: Any, name: str, kind: type) -> Any:
    """``kind(value)`` for a Python/numpy scalar or a one-element array, else a clear TypeError."""
    if type(value) in (bool, int, float):  # the common case, kept cheap
        return kind(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a scalar number or bool, got {value!r}")
    return kind(arr.reshape(()))

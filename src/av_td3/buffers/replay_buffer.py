"""Plain replay buffer for flat float32 states: the frozen-CNN (rollback) mode.

One row per transition with ``state`` and ``next_state`` kept apart (as in the seed and SB3): flat
states are CNN features recomputed every step, and nothing guarantees that ``features(next_obs_t)``
and ``features(obs_{t+1})`` are bit-identical, so sharing rows (as the dict buffer does with raw
frames) could silently halve the capacity. 535 float32 features cost 4.3 KB per transition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from av_td3.buffers.base import (
    ACT, DONE, LINK, REQUIRED, SAMPLE, TRUNC, BaseReplayBuffer, ReplayBatch, missing_args, nstep_window,
)
from av_td3.buffers.dict_replay_buffer import _check_action, _scalar
from av_td3.buffers.memory import check_fits


class ReplayBuffer(BaseReplayBuffer):
    """Ring buffer of ``(state, action, next_state, reward, done, truncated)`` transitions.

    Args:
        state_dim: length of the flat float32 state (535 = 512 CNN features + 23 vector).
        action_dim: length of the float32 action.
        max_size: capacity in transitions; the oldest are overwritten first.
        device: where sampled tensors go.
        n_step: transitions summed per sample. A window continues into the next ``add`` only when the
            previous transition neither terminated nor truncated and the new ``state`` equals the previous
            ``next_state`` bit for bit; otherwise it stops and bootstraps from the stored
            ``next_state`` (a valid, shorter return).
        gamma: discount used for n-step sums and the returned ``discount`` (``gamma ** m``).
        seed: seed of ``self.rng``, the default generator of ``sample``.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        max_size: int,
        device: str | torch.device = "cpu",
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int | None = None,
    ) -> None:
        super().__init__(action_dim, max_size, device, n_step, gamma, seed)
        if isinstance(state_dim, bool) or not isinstance(state_dim, (int, np.integer)) or state_dim < 1:
            raise ValueError(f"ReplayBuffer: state_dim must be an int >= 1, got {state_dim!r}")
        self.state_dim = int(state_dim)
        check_fits(type(self).__name__, self.max_size, lambda n: n * self._row_bytes())

        n = self.max_size
        self._states = np.empty((n, self.state_dim), dtype=np.float32)
        self._next_states = np.empty((n, self.state_dim), dtype=np.float32)
        self._action = np.empty((n, self.action_dim), dtype=np.float32)
        self._reward = np.empty(n, dtype=np.float32)
        self._flags = np.zeros(n, dtype=np.uint8)
        self._ptr = 0  # next row to write
        self._size = 0

    def _row_bytes(self) -> int:
        return 4 * (2 * self.state_dim + self.action_dim + 1) + 1

    # ------------------------------------------------------------------------------------------ add
    def add(
        self,
        state: np.ndarray = REQUIRED,
        action: np.ndarray = REQUIRED,
        next_state: np.ndarray = REQUIRED,
        reward: float = REQUIRED,
        done: bool = REQUIRED,
        truncated: bool = False,
        *,
        obs_dict: Any = None,
        next_obs_dict: Any = None,
    ) -> int:
        """Store one transition; returns its row index.

        Args:
            state, next_state: flat ``(state_dim,)`` states (any real dtype; stored as float32).
            action: ``(action_dim,)``.
            reward: scalar.
            done: the episode *terminated*: the TD target does not bootstrap.
            truncated: the episode was cut (time limit, stall): it ends, but the target bootstraps.
            obs_dict, next_obs_dict: not accepted (that is ``DictReplayBuffer.add``'s call); they exist
                so that such a call gets an error saying what to pass instead.

        Raises:
            TypeError: ``obs_dict=``/``next_obs_dict=`` given, a required argument missing, or a wrong type.
            ValueError: a wrong shape or a non-finite value (nothing is stored).
        """
        if obs_dict is not None or next_obs_dict is not None:
            raise TypeError(
                f"ReplayBuffer.add got obs_dict=/next_obs_dict=, but this is the flat-state buffer: pass "
                f"state=/next_state= as flat ({self.state_dim},) float32 vectors (e.g. agent.flatten_obs(obs)), "
                "or use av_td3.DictReplayBuffer to store dict observations (end-to-end CNN mode)."
            )
        if state is REQUIRED or action is REQUIRED or next_state is REQUIRED or reward is REQUIRED or done is REQUIRED:
            missing_args("ReplayBuffer", state=state, action=action, next_state=next_state, reward=reward, done=done)
        s = self._check_state(state, "state")
        s2 = self._check_state(next_state, "next_state")
        act = _check_action(action, self.action_dim, self.action_bound)
        rew = _scalar(reward, "reward", float)
        if not math.isfinite(rew):
            raise ValueError(f"reward must be finite, got {rew}")
        done, truncated = _scalar(done, "done", bool), _scalar(truncated, "truncated", bool)

        i, prev = self._ptr, (self._ptr - 1) % self.max_size
        link = (
            self._size > 0
            and self.max_size > 1
            and not self._flags[prev] & (DONE | TRUNC)
            and self._next_states[prev].tobytes() == s.tobytes()
        )
        self._states[i] = s
        self._next_states[i] = s2
        self._action[i] = act
        self._reward[i] = rew
        self._flags[i] = ACT | SAMPLE | (DONE if done else 0) | (TRUNC if truncated else 0) | (LINK if link else 0)
        self._ptr = (i + 1) % self.max_size
        self._size = min(self._size + 1, self.max_size)
        return i

    def _check_state(self, state: Any, name: str) -> np.ndarray:
        if isinstance(state, Mapping):
            raise TypeError(
                f"ReplayBuffer.add: {name} is a dict observation (keys {list(state)}); this buffer stores flat "
                f"({self.state_dim},) float32 states. Use av_td3.DictReplayBuffer for dict observations "
                "(end-to-end CNN mode)."
            )
        if isinstance(state, torch.Tensor):
            state = state.detach().cpu().numpy()
        arr = np.asarray(state)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"ReplayBuffer.add: {name} has dtype {arr.dtype}, expected float32 (or a real dtype)")
        if arr.shape not in ((self.state_dim,), (1, self.state_dim)):
            raise ValueError(f"ReplayBuffer.add: {name} has shape {arr.shape}, expected ({self.state_dim},)")
        arr = arr.reshape(self.state_dim).astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError(f"ReplayBuffer.add: {name} holds non-finite values (NaN/inf); nothing was stored")
        return arr

    # ------------------------------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return self._size

    def _storage(self) -> dict[str, np.ndarray]:
        return {
            "state": self._states,
            "next_state": self._next_states,
            "action": self._action,
            "reward": self._reward,
            "flags": self._flags,
        }

    def _rows_filled(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(len={len(self):,}, max_size={self.max_size:,}, state_dim={self.state_dim}, "
            f"n_step={self.n_step}, nbytes={self.nbytes:,})"
        )

    def _sampleable(self, rows: np.ndarray) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)  # every filled row is a whole transition

    def get_batch(self, indices: np.ndarray) -> ReplayBatch:
        """The transitions at row ``indices``: ``obs``/``next_obs`` are float32 ``(B, state_dim)``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise ValueError(f"get_batch: indices must be in [0, {self._size})")
        if self.n_step == 1:
            ret, last = self._reward[idx], idx
            not_done = (self._flags[idx] & DONE) == 0
            discount = np.full((len(idx), 1), self.gamma, dtype=np.float32)
        else:
            newest = (self._ptr - 1) % self.max_size
            ret, not_done, m, last = nstep_window(
                idx, self.n_step, self.gamma, self._reward, self._flags, 1, LINK, newest
            )
            discount = np.power(self.gamma, m, dtype=np.float64).astype(np.float32).reshape(-1, 1)
        return ReplayBatch(
            obs=self._take(self._states, idx),
            action=self._take(self._action, idx),
            next_obs=self._take(self._next_states, last),
            reward=self._tensor(ret.astype(np.float32, copy=False).reshape(-1, 1)),
            not_done=self._tensor(not_done.astype(np.float32).reshape(-1, 1)),
            discount=self._tensor(discount),
        )

    def _take(self, store: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        out, tensor = self._alloc((len(rows), *store.shape[1:]), store.dtype)
        np.take(store, rows, axis=0, out=out, mode="wrap")
        return self._to_device(tensor)

    # ---------------------------------------------------------------------------------- checkpoints
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "device": str(self.device),
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "max_size": self.max_size,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "ptr": self._ptr,
            "size": self._size,
        }
        return meta, {name: store[: self._size] for name, store in self._storage().items()}

    @classmethod
    def _build(cls, meta: dict[str, Any], read, device: str | torch.device):
        return cls(meta["state_dim"], meta["action_dim"], meta["max_size"], device, meta["n_step"], meta["gamma"])

    def _set_counters(self, meta: dict[str, Any]) -> None:
        self._ptr, self._size = meta["ptr"], meta["size"]

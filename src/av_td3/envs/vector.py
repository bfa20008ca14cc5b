"""N driving envs behind gymnasium's vector API, for parallel collection (``training.num_envs``).

The town goes through ``gymnasium.make_vec("av_td3/Town-v0", num_envs=N, vectorization_mode=...)``:
``"async"`` runs each env in its own process and passes observations through shared memory (the
images never get pickled), ``"sync"`` steps them one after another in this process. CARLA envs are
built one per server (env index i talks to port ``carla.port + i * carla.port_step``, see
docs/carla.md).

Autoreset is *disabled*: the trainer resets finished envs itself, with ``reset(seed=[...],
options={"reset_mask": done})``, so every episode gets the seed the trainer drew for it, exactly as a
single env reset with that seed (``tests/test_vector_env.py`` checks transition for transition).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from av_td3.envs.registry import CARLA_ID, TOWN_ID, register_envs


def make_vector_env(cfg: Any, num_envs: int, mode: str = "async") -> VectorEnv:
    """``num_envs`` envs of ``cfg.env.name`` (scenario and settings from ``cfg``) as one ``VectorEnv``.

    Args:
        cfg: a validated ``Config``.
        num_envs: N >= 1.
        mode: ``"async"`` (one process per env, shared-memory observations) or ``"sync"``.

    Returns:
        A vector env with autoreset disabled: observations ``{key: (N, *shape)}``, actions ``(N, 2)``.
    """
    if mode not in ("async", "sync"):
        raise ValueError(f"vectorization mode must be 'async' or 'sync', got {mode!r}")
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    register_envs()
    kwargs: dict[str, Any] = {"autoreset_mode": AutoresetMode.DISABLED}
    if mode == "async":
        kwargs["shared_memory"] = True
    if cfg.env.name == "town":
        return gymnasium.make_vec(TOWN_ID, num_envs=int(num_envs), vectorization_mode=mode, vector_kwargs=kwargs,
                                  scenario=cfg.env.scenario, config=cfg, disable_env_checker=True)
    # CARLA: each env needs its own server, selected by env_index (one port per server)
    fns = [_carla_factory(cfg, i) for i in range(int(num_envs))]
    cls = gymnasium.vector.AsyncVectorEnv if mode == "async" else gymnasium.vector.SyncVectorEnv
    return cls(fns, **kwargs)


def _carla_factory(cfg: Any, index: int):
    def make() -> gymnasium.Env:
        register_envs()
        return gymnasium.make(CARLA_ID, scenario=cfg.env.scenario, config=cfg, env_index=index,
                              disable_env_checker=True)

    return make


def split_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """A vector env's info dict (``{key: array of N}``, with ``_key`` masks) -> one plain dict per env.

    Nested dicts (``reward_components``) are split the same way; numpy scalars become Python scalars
    (``tolist``: one C loop per key, which matters at thousands of steps per second), so each env's
    dict looks like what that env's own ``step`` returned.
    """
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key[:1] == "_":
            continue
        if isinstance(values, dict):
            items = split_infos(values, num_envs)
        else:
            items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        mask = infos.get(f"_{key}")
        if mask is None:
            for env_info, value in zip(out, items):
                env_info[key] = value
        else:
            for env_info, value, present in zip(out, items, mask.tolist()):
                if present:
                    env_info[key] = value
    return out


def select_envs(batch: dict[str, np.ndarray], mask: np.ndarray, other: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per key, rows of ``batch`` where ``mask`` is set and rows of ``other`` elsewhere (new arrays)."""
    return {key: np.where(mask.reshape(-1, *([1] * (value.ndim - 1))), value, other[key])
            for key, value in batch.items()}


class EnvBatch:
    """What the trainer steps: N envs with batched observations and one info dict per env.

    ``EnvBatch.single(env)`` wraps one plain env (N = 1, in process: exactly today's calls);
    ``EnvBatch(vector_env)`` wraps a ``VectorEnv`` from :func:`make_vector_env`.
    Observations are ``{key: (N, *shape)}``, actions ``(N, action_dim)``.
    """

    def __init__(self, vector_env: VectorEnv | None = None, env: gymnasium.Env | None = None):
        self.vector_env, self.env = vector_env, env
        self._pending: np.ndarray | None = None  # actions of a step_async still to run (sync/single envs)
        self.num_envs = 1 if env is not None else vector_env.num_envs
        self.single_observation_space = env.observation_space if env is not None else vector_env.single_observation_space

    @classmethod
    def single(cls, env: gymnasium.Env) -> "EnvBatch":
        return cls(env=env)

    @property
    def observation_space(self):
        """The space of ONE env's observation (what the agent and the buffer are built for)."""
        return self.single_observation_space

    def reset(self, seeds: list[int | None], mask: np.ndarray | None = None) -> tuple[dict, list[dict]]:
        """Reset the envs where ``mask`` is set (all when None) with ``seeds[i]``; the returned batch holds
        the new observations of those envs (rows of the others are unspecified: keep your own)."""
        if self.env is not None:
            obs, info = self.env.reset(seed=seeds[0])
            return {k: np.asarray(v)[None] for k, v in obs.items()}, [info]
        options = None if mask is None or mask.all() else {"reset_mask": np.asarray(mask, dtype=bool)}
        obs, infos = self.vector_env.reset(seed=list(seeds), options=options)
        return obs, split_infos(infos, self.num_envs)

    def step(self, actions: np.ndarray):
        """``(next_obs batch, rewards (N,), terminated (N,) bool, truncated (N,) bool, infos list)``."""
        if self.env is not None:
            obs, reward, terminated, truncated, info = self.env.step(actions[0])
            return ({k: np.asarray(v)[None] for k, v in obs.items()}, np.array([reward], dtype=np.float64),
                    np.array([bool(terminated)]), np.array([bool(truncated)]), [info])
        return self._batched(*self.vector_env.step(actions))

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step and return at once (async envs step in their processes); ``step_wait`` ends it.
        Sync and single envs step inside ``step_wait``."""
        if self.env is None and hasattr(self.vector_env, "step_async"):
            self.vector_env.step_async(actions)
            self._pending = None
        else:
            self._pending = actions

    def step_wait(self):
        """The result of the step ``step_async`` started (as ``step`` returns it)."""
        if self._pending is not None:
            actions, self._pending = self._pending, None
            return self.step(actions)
        return self._batched(*self.vector_env.step_wait())

    def _batched(self, obs, reward, terminated, truncated, infos):
        return (obs, np.asarray(reward, dtype=np.float64), np.asarray(terminated, dtype=bool),
                np.asarray(truncated, dtype=bool), split_infos(infos, self.num_envs))

    def close(self) -> None:
        (self.env or self.vector_env).close()

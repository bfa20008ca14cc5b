"""TD3 (Fujimoto et al. 2018) whose NatureCNN learns end to end from dict observations.

Encoder modes (``algorithm.encoder_mode``; docs/design.md §3):

``critic`` (default)
    One CNN, trained by the critic loss only. The actor reads its features detached, and a Polyak
    target encoder follows the target critic. This is the DrQ-v2 / SAC-AE finding: pixel actor-critics
    are unstable when the actor loss shapes the encoder. It is also the cheapest: one CNN forward +
    backward on ``obs`` and one target-encoder forward on ``next_obs`` per update, and the actor update
    reuses the critic's features (SB3's TD3 runs four CNNs: actor, actor target, critic, critic target).
``separate``
    Actor and critic each own a CNN (the passed ``cnn_extractor`` is the critic's, a copy the actor's),
    each trained by its own loss, each with a target copy: the seed project's final form.
frozen
    ``algorithm.use_end_to_end_cnn: false``, ``use_dict_buffer=False`` or ``cnn_extractor=None``: the
    seed's rollback plan. Flat ``state_dim`` states in a plain ``ReplayBuffer``; a given CNN is only used
    by ``flatten_obs`` (no gradients).

Defaults and why:

* ``algorithm.image_pad = 4``: random shifts of up to 4 pixels on 84 x 84 images (DrQ, Kostrikov et
  al. 2020, arXiv 2004.13649: of the augmentations compared on DeepMind Control, random shift gave the
  largest gain; DrQ-v2, Yarats et al. 2021, arXiv 2107.09645, keeps pad 4). Without it, a CNN trained
  by TD errors overfits its few thousand early frames.
* ``algorithm.n_step = 3``: DrQ-v2's value on every task; n-step returns are one of the changes it
  makes to DrQ (which used 1-step targets) to reach its sample efficiency. Rewards propagate 3x
  faster through the bootstrap chain, which matters for driving's sparse events (collisions, goal).
  With the frame-deduplicating buffer an n-step window costs nothing extra to store.
  Measured on the town (``benchmarks/ablation_augment_nstep.py``, 6 seeds x 10k steps per setting,
  docs/benchmarks.md): with neither random shift nor n-step returns the eval-return curve has half
  the area of the defaults' (22 vs 46 per step, Mann-Whitney p = 0.04); either one alone closes the
  gap, and pad 4 / n-step 3 / both are not separable at that budget. Both stay on: each fixes the
  slow learner, together they are no worse, and an n-step window costs no buffer memory.
* ``networks.cnn.precision = auto``: the CNN (online and target) runs under bfloat16 autocast where
  bf16 is native (``avx512_bf16``/AMX CPUs, bf16 GPUs), float32 elsewhere; its weights and their
  gradients, Adam states, the MLPs and every Q value stay float32 (standard mixed precision; bf16 has float32's
  exponent range, so no loss scaling). Measured on the 2-core EPYC dev machine: 260 -> 180 ms of CPU
  per update. Features differ from float32 by ~0.5% relative, far below TD-target noise. Set
  ``float32`` for bit-for-bit float32 training.
* ReLU after the CNN's last layer (not DrQ-v2's LayerNorm + tanh trunk): it is the seed's and SB3's
  NatureCNN, so the benchmark compares like with like. The guard against the feature-norm blow-up
  seen before (docs/design.md §5) is ``critic`` mode, which keeps the actor loss out of the encoder, plus
  ``feature_norm`` reported by every ``train()`` so a blow-up is caught when it starts.

Performance (``benchmarks/td3_updates.py``): per update, two CNN forwards and one backward where
SB3 averages four forwards and 1.5 backwards (profiled) (see ``critic`` above); channels_last convolutions;
augmentation as one uint8 gather; the 1/255 scale folded into the first convolution; in-place
ReLUs; one fused Polyak update. Nothing in ``update()`` reads a value back to the host: ``train()``
returns 0-d tensors, and a trainer converts them (``float(v)``) only when it logs, so the update can
be captured whole in a CUDA graph (Adam is ``capturable`` on CUDA). On CUDA ``train()`` does exactly
that (``agents/cuda_graph.py``, ``training.cuda_graph``): after a few eager updates the update, and
with the replay ring on the GPU (``training.buffer_device``) the sampling too, is replayed from CUDA
graphs; ``update()`` stays the eager reference. Torch's thread count is left to the application (the
benchmark sets it). ``torch.compile`` is not used on CPU (not measured): the convolutions and matmuls
that take ~75% of an update already run in oneDNN / BLAS kernels, and compiling would add start-up
time to every run and test.
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from av_td3.agents.augment import random_shift
from av_td3.agents.cuda_graph import UpdateRunner, resolve_buffer_device
from av_td3.agents.diagnostics import grad_norm, per_parameter_grad_norms, relative_weight_change
from av_td3.agents.networks import Actor, Critic, DictEncoder, NatureCNN, cnn_compute_dtype, set_requires_grad
from av_td3.agents.config import AgentConfig
from av_td3.config_base import ConfigError
from av_td3.io import CorruptFileError, atomic_torch_save

CHECKPOINT_FORMAT = "av_td3.TD3Agent/1"
IMAGE_KEY = "image"


class AgentStateMismatchError(ValueError):
    """A saved agent state does not fit this agent (other algorithm, encoder mode or network widths)."""


class TD3Agent:
    """TD3 with an end-to-end CNN; the seed's constructor signature.

    Args:
        state_dim: flat state size the MLPs read: CNN features + vector (535 = 512 + 23).
        action_dim: action size (2: steer, throttle_brake).
        max_action: actions are in ``[-max_action, max_action]``.
        cnn_extractor: the CNN (e.g. ``NatureCNN``) trained end to end; ``None`` -> flat states.
        use_dict_buffer: store dict observations in a ``DictReplayBuffer`` and train the CNN.
        config: the root ``Config``, a nested dict or None (``AgentConfig``: reads ``networks``, ``algorithm``,
            ``training.buffer_size`` and ``training.seed``).
        device: torch device.
        observation_space: the env's ``Dict`` space; default: ``image`` uint8
            ``(cnn.input_channels, *cnn.image_size)`` and ``vector`` float32 ``(state_dim - feature_dim,)``.

    Subclasses (``DDPGAgent``) change the algorithm through the hooks ``_make_critic``, ``critic_loss``
    and ``td_target`` (with ``_target_features``), and set ``ALGO``, which ``state_dict()`` records and
    ``load_state_dict()`` checks.
    """

    ALGO = "td3"  # recorded in state_dict(); a state saved by another algorithm is refused by name

    def __init__(
        self,
        state_dim: int = 535,
        action_dim: int = 2,
        max_action: float = 1.0,
        cnn_extractor: nn.Module | None = None,
        use_dict_buffer: bool = False,
        config: Any = None,
        device: str | torch.device = "cpu",
        *,
        observation_space: spaces.Dict | None = None,
        verbose: bool = True,
    ):
        cfg = AgentConfig.from_any(config)
        alg, nets = cfg.algorithm, cfg.networks
        if alg.name != self.ALGO:
            if "name" in alg.model_fields_set:  # a user-set name is never ignored
                raise ConfigError(f"algorithm.name is '{alg.name}' but this is {type(self).__name__}; build the agent "
                                  "with av_td3.training.setup.build_agent (it picks the class from the config) or "
                                  "drop the key")
            # the default name: this agent's config (and so its checkpoints) records what it really is
            cfg = cfg.model_copy(update={"algorithm": alg.model_copy(update={"name": self.ALGO})})
            alg, nets = cfg.algorithm, cfg.networks
        _check_init_arguments(state_dim, action_dim, max_action, device)
        self.config, self.device = cfg, torch.device(device)
        self.state_dim, self.action_dim, self.max_action = int(state_dim), int(action_dim), float(max_action)
        self.discount, self.tau, self.policy_freq = alg.discount, alg.tau, alg.policy_freq
        self.policy_noise, self.noise_clip = alg.policy_noise * max_action, alg.noise_clip * max_action
        self.batch_size, self.start_timesteps, self.expl_noise = alg.batch_size, alg.start_timesteps, alg.expl_noise
        self.image_pad, self.max_grad_norm = alg.image_pad, alg.max_grad_norm
        self.action_smoothness = alg.action_smoothness
        self.cnn_dtype = cnn_compute_dtype(nets.cnn.precision, self.device)  # None: float32
        self.total_it = 0
        self.feature_dim, self._vector_keys = self.state_dim, ("vector",)  # set from the CNN below

        end_to_end = cnn_extractor is not None and use_dict_buffer and alg.use_end_to_end_cnn
        self.encoder_mode = alg.encoder_mode if end_to_end else "frozen"
        self.use_dict_buffer = self.cnn_trainable = end_to_end
        self.cnn_extractor = cnn_extractor
        self.observation_space = None if cnn_extractor is None else self._check_space(cnn_extractor, observation_space)
        if use_dict_buffer and cnn_extractor is None:
            raise ValueError("use_dict_buffer=True needs a cnn_extractor to read the images (e.g. NatureCNN()); "
                             "pass one, or use_dict_buffer=False for flat states")

        seed = cfg.training.seed
        self._gen = torch.Generator(device=self.device).manual_seed(seed)  # augmentation + target noise
        self._np_rng = np.random.default_rng(seed)  # exploration noise in select_action
        with torch.random.fork_rng(devices=[]):  # same seed -> same networks; global RNG untouched
            torch.manual_seed(seed)
            self._build_networks(nets)
        self._build_optimizers(nets)
        self._build_buffer(cfg)
        self._runner = UpdateRunner(self)  # eager, or on CUDA the whole update in CUDA graphs
        resolve_buffer_device(cfg.training.buffer_device, self.device, 0)  # a CUDA buffer without CUDA: error now
        self._cnn_init = {k: v.detach().clone() for k, v in self._cnn_parameters().items()}
        self._feature_norms: tuple[torch.Tensor, torch.Tensor] | None = None
        if verbose:  # the seed's [AGENT] lines; evaluation of a checkpoint turns them off
            self._log_setup(cnn_extractor, use_dict_buffer, alg)

    # ------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------
    def _check_space(self, cnn: nn.Module, space: spaces.Dict | None) -> spaces.Dict:
        feature_dim = int(getattr(cnn, "feature_dim", self.config.networks.cnn.feature_dim))
        if feature_dim != self.config.networks.cnn.feature_dim:
            raise ValueError(f"cnn_extractor.feature_dim={feature_dim} but networks.cnn.feature_dim="
                             f"{self.config.networks.cnn.feature_dim}; make them equal")
        channels, image_size = int(getattr(cnn, "input_channels", 4)), tuple(getattr(cnn, "image_size", (84, 84)))
        if space is None and self.state_dim <= feature_dim:
            raise ValueError(f"state_dim={self.state_dim} leaves no room for the vector observation: state_dim is "
                             f"the CNN's features ({feature_dim}) + the vector's size (23 with 10 waypoints), e.g. "
                             f"state_dim={feature_dim + 23}")
        if space is None:
            space = spaces.Dict({
                IMAGE_KEY: spaces.Box(0, 255, (channels, *image_size), np.uint8),
                "vector": spaces.Box(-10.0, 10.0, (self.state_dim - feature_dim,), np.float32),
            })
        if not isinstance(space, spaces.Dict) or IMAGE_KEY not in space.spaces:
            raise ValueError(f"observation_space must be a gymnasium Dict with an '{IMAGE_KEY}' key, got {space}")
        image_shape = space[IMAGE_KEY].shape
        if len(image_shape) != 3 or image_shape[0] != channels or tuple(image_shape[1:]) != image_size:
            raise ValueError(f"observation_space['{IMAGE_KEY}'] has shape {image_shape} but the CNN expects "
                             f"({channels}, {image_size[0]}, {image_size[1]}); build it with "
                             f"NatureCNN(input_channels={image_shape[0]}, image_size={tuple(image_shape[1:])})")
        self._vector_keys = tuple(k for k in space.spaces if k != IMAGE_KEY)
        vector_dim = sum(int(np.prod(space[k].shape)) for k in self._vector_keys)
        if feature_dim + vector_dim != self.state_dim:
            raise ValueError(f"state_dim={self.state_dim} but CNN features ({feature_dim}) + vector keys "
                             f"{list(self._vector_keys)} ({vector_dim}) = {feature_dim + vector_dim}")
        self.feature_dim = feature_dim
        return space

    def _build_networks(self, nets) -> None:
        s, a = self.state_dim, self.action_dim
        self.actor = Actor(s, a, nets.actor.hidden_layers, self.max_action).to(self.device)
        self.critic = self._make_critic(s, a, nets.critic.hidden_layers).to(self.device)
        self.encoder: nn.Module = nn.Identity()  # flat states pass through
        self.actor_encoder: nn.Module | None = None  # None: the actor reads the critic's features
        if self.cnn_extractor is not None:
            self.cnn_extractor.to(self.device)
            dict_encoder = DictEncoder(self.cnn_extractor, self._vector_keys, IMAGE_KEY, self.cnn_dtype)
            if self.cnn_trainable:
                self.encoder = dict_encoder
                if self.encoder_mode == "separate":
                    self.actor_encoder = DictEncoder(copy.deepcopy(self.cnn_extractor), self._vector_keys, IMAGE_KEY,
                                                     self.cnn_dtype)
            else:
                self.cnn_extractor.eval()
                set_requires_grad(self.cnn_extractor, False)
            self._obs_encoder = dict_encoder  # for flatten_obs
        self.actor_target, self.critic_target = self._target(self.actor), self._target(self.critic)
        self.encoder_target = self._target(self.encoder)
        self.actor_encoder_target = None if self.actor_encoder is None else self._target(self.actor_encoder)

    def _make_critic(self, state_dim: int, action_dim: int, hidden: list[int]) -> nn.Module:
        """The critic network: TD3's twin ``Critic`` (``forward -> (Q1, Q2)``, ``q1`` for the actor loss)."""
        return Critic(state_dim, action_dim, hidden)

    @staticmethod
    def _target(module: nn.Module) -> nn.Module:
        target = copy.deepcopy(module)
        set_requires_grad(target, False)
        return target

    def _build_optimizers(self, nets) -> None:
        # fused: one kernel per optimizer step; capturable on CUDA: step counters stay on the GPU, so the
        # update can be graph-captured.
        adam = functools.partial(torch.optim.Adam, fused=self.device.type in ("cpu", "cuda"),
                                 capturable=self.device.type == "cuda")
        self.actor_optimizer = adam(self.actor.parameters(), lr=nets.actor.learning_rate)
        self.critic_optimizer = adam(self.critic.parameters(), lr=nets.critic.learning_rate)
        self.cnn_optimizer = self.actor_cnn_optimizer = None
        if self.cnn_trainable:
            self.cnn_optimizer = adam(self.cnn_extractor.parameters(), lr=nets.cnn.learning_rate)
            if self.actor_encoder is not None:
                self.actor_cnn_optimizer = adam(self.actor_encoder.parameters(), lr=nets.cnn.learning_rate)
        # What each loss steps, and which leaves the actor loss needs gradients for.
        self._critic_optimizers = [o for o in (self.critic_optimizer, self.cnn_optimizer) if o is not None]
        self._actor_optimizers = [o for o in (self.actor_optimizer, self.actor_cnn_optimizer) if o is not None]
        self._actor_params = [p for o in self._actor_optimizers for g in o.param_groups for p in g["params"]]
        pairs = [(self.actor, self.actor_target), (self.critic, self.critic_target), (self.encoder, self.encoder_target)]
        if self.actor_encoder is not None:
            pairs.append((self.actor_encoder, self.actor_encoder_target))
        self._online_params = [p for m, _ in pairs for p in m.parameters()]
        self._target_params = [p for _, t in pairs for p in t.parameters()]

    def _build_buffer(self, cfg: AgentConfig) -> None:
        from av_td3.buffers import DictReplayBuffer, ReplayBuffer

        size, alg = cfg.training.buffer_size, cfg.algorithm
        common = dict(device=self.device, n_step=alg.n_step, gamma=alg.discount, seed=cfg.training.seed)
        if self.use_dict_buffer:
            # one stream per parallel env: stacks never mix envs (training.num_envs)
            self.replay_buffer = DictReplayBuffer(self.observation_space, self.action_dim, size, image_key=IMAGE_KEY,
                                                  num_streams=min(cfg.training.num_envs, size), **common)
        else:
            self.replay_buffer = ReplayBuffer(self.state_dim, self.action_dim, size, **common)
        self.replay_buffer.action_bound = self.max_action  # refuse actions the env would clip

    def _log_setup(self, cnn: nn.Module | None, use_dict_buffer: bool, alg) -> None:
        if self.cnn_trainable:
            print(f"[AGENT] CNN optimizer initialized with lr={self.config.networks.cnn.learning_rate}")
            print("[AGENT] CNN mode: training (gradients enabled)")
            print("[AGENT] Using DictReplayBuffer for end-to-end CNN training")
            what = ("one CNN trained by the critic loss, actor on detached features, Polyak target encoder"
                    if self.encoder_mode == "critic" else "actor and critic each train their own CNN")
            print(f"[AGENT] Encoder mode: {self.encoder_mode} ({what}); image_pad={alg.image_pad}, n_step={alg.n_step}")
            precision = "float32" if self.cnn_dtype is None else "bfloat16 autocast (float32 weights, Adam and MLPs)"
            print(f"[AGENT] CNN precision: {precision} (networks.cnn.precision={self.config.networks.cnn.precision})")
            return
        if cnn is not None and alg.use_end_to_end_cnn and not use_dict_buffer:
            print("[AGENT] WARNING: cnn_extractor given with use_dict_buffer=False: the CNN stays FROZEN. "
                  "Pass use_dict_buffer=True to train it end to end.")
        print("[AGENT] CNN mode: frozen (no gradients)" if cnn is not None else "[AGENT] CNN mode: none (flat states)")
        print("[AGENT] Using standard ReplayBuffer (flat states)")

    # ------------------------------------------------------------------------------------------------
    # Acting
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def select_action(self, obs: Any, noise: float = 0.0) -> np.ndarray:
        """Dict observation (or a flat state in frozen mode), unbatched or batched -> float32 action(s).

        In frozen mode with a CNN, a dict observation is encoded by the frozen CNN first.

        ``noise`` is the Gaussian exploration std as a fraction of ``max_action``.
        """
        if not isinstance(noise, (int, float, np.number)) or not math.isfinite(noise) or noise < 0:
            raise ValueError(f"select_action: noise is the exploration std as a fraction of max_action and must be "
                             f"a finite number >= 0 (0 for evaluation), got {noise!r}")
        x, batched = self._policy_input(obs)
        state = self.encoder(x) if self.actor_encoder is None else self.actor_encoder(x)
        action = self.actor(state).cpu().numpy()
        if noise > 0:
            action = action + self._np_rng.normal(0.0, noise * self.max_action, size=action.shape)
        action = np.clip(action, -self.max_action, self.max_action).astype(np.float32)
        return action if batched else action[0]

    @torch.no_grad()
    def flatten_obs(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Dict observation -> flat float32 state ``(state_dim,)`` (or ``(B, state_dim)``): CNN features + vector.

        For frozen mode, where the app stores flat states; uses the (frozen or critic's) CNN, no gradients.
        """
        if self.cnn_extractor is None:
            raise RuntimeError("flatten_obs needs a cnn_extractor; this agent was built without one and reads flat states")
        x, batched = self._dict_to_tensors(obs)
        state = self._obs_encoder(x).cpu().numpy().astype(np.float32)
        return state if batched else state[0]

    def _policy_input(self, obs: Any) -> tuple[Any, bool]:
        if self.use_dict_buffer:
            if not isinstance(obs, Mapping):
                raise TypeError(
                    f"select_action expects the env's dict observation {self._space_text()} (end-to-end CNN mode); "
                    f"got {type(obs).__name__} of shape {np.shape(obs)}. Pass obs as returned by env.reset()/step(), "
                    "not a flattened state."
                )
            return self._dict_to_tensors(obs)
        if isinstance(obs, Mapping):
            if self.cnn_extractor is not None:  # frozen CNN on board: encode here, so callers need not care
                obs = self.flatten_obs(obs)
            else:
                raise TypeError(f"this agent reads flat states of shape ({self.state_dim},) (no CNN); got a dict "
                                f"observation with keys {sorted(obs)}: build it with cnn_extractor=NatureCNN(...)")
        state = np.asarray(obs, dtype=np.float32)
        if state.shape[-1:] != (self.state_dim,) or state.ndim > 2:
            raise ValueError(f"expected a flat state of shape ({self.state_dim},) or (B, {self.state_dim}), got {state.shape}")
        batched = state.ndim == 2
        return torch.as_tensor(state if batched else state[None], device=self.device), batched

    def _dict_to_tensors(self, obs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        out, batched = {}, None
        for key, space in self.observation_space.spaces.items():
            if key not in obs:
                raise KeyError(f"observation has no '{key}' key (got keys {sorted(obs)}); pass the dict observation "
                               f"{self._space_text()}")
            arr = np.asarray(obs[key])
            is_batched = arr.shape[1:] == space.shape
            if arr.shape != space.shape and not is_batched:
                raise ValueError(f"observation['{key}']: expected shape {space.shape} (or batched (B, *{space.shape})), "
                                 f"got {arr.shape}")
            if key == IMAGE_KEY and arr.dtype != np.uint8:
                raise TypeError(f"observation['{key}']: expected dtype uint8 (raw pixels), got {arr.dtype}")
            batched = is_batched if batched is None else batched
            arr = arr if key == IMAGE_KEY else arr.astype(np.float32, copy=False)
            out[key] = torch.as_tensor(arr if is_batched else arr[None], device=self.device)
        return out, bool(batched)

    def _space_text(self) -> str:
        return "{" + ", ".join(f"'{k}': {s.dtype} {s.shape}" for k, s in self.observation_space.spaces.items()) + "}"

    # ------------------------------------------------------------------------------------------------
    # Learning
    # ------------------------------------------------------------------------------------------------
    def train(self, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Sample a batch and do ONE update (critic; actor and targets every ``policy_freq`` calls).

        Returns 0-d tensors (no host sync): ``critic_loss``, ``q_mean``/``q_min``/``q_max``,
        ``target_q_mean``, ``critic_grad_norm``, ``cnn_grad_norm``, ``feature_norm`` (mean L2 norm of the
        CNN features), ``feature_norm_max``; on actor steps also ``actor_loss``, ``actor_grad_norm``,
        ``action_saturation`` (fraction of |a| > 0.99 max) and, in ``separate`` mode, ``actor_cnn_grad_norm``.
        """
        return self._runner.train(batch_size or self.batch_size)

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One TD3 update from ``batch`` (``obs, action, next_obs, reward, not_done, discount``, all (B, ...))."""
        self.total_it += 1
        obs, next_obs = self.augment(batch.obs), self.augment(batch.next_obs)
        state = self.encoder(obs)  # (B, S); gradients reach the critic's CNN
        with torch.no_grad():
            next_features = self._target_features(next_obs)  # (critic's, actor's) (B, S) of s'
            target_q = self.td_target(next_obs, batch.reward, batch.not_done, batch.discount, next_features)
        stats = self.update_critic(state, batch.action, target_q)
        if self.total_it % self.policy_freq == 0:
            stats.update(self.update_actor(obs, state, next_features[1]))
            self.soft_update()
        return stats

    def augment(self, obs: Any) -> Any:
        """Random shift of ``obs['image']`` by up to ``image_pad`` pixels (flat states pass through)."""
        if self.image_pad == 0 or not isinstance(obs, Mapping):
            return obs
        return {**obs, IMAGE_KEY: random_shift(obs[IMAGE_KEY], self.image_pad, self._gen)}

    def td_target(self, next_obs: Any, reward: torch.Tensor, not_done: torch.Tensor, discount: Any,
                  next_features: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``r + not_done * discount * min(Q1', Q2')(s', clip(pi'(s') + clipped noise))``, shape (B, 1).

        ``not_done`` is 0 only for ``terminated`` (a time-limit truncation still bootstraps); ``discount``
        is gamma^m for the m-step window the buffer summed into ``reward``. ``next_features``: the target
        encoders' features of ``next_obs`` when the caller has them (``_target_features``).
        """
        next_state, actor_next = next_features or self._target_features(next_obs)
        noise = torch.randn(next_state.shape[0], self.action_dim, device=self.device, generator=self._gen)
        noise = (noise * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        next_action = (self.actor_target(actor_next) + noise).clamp(-self.max_action, self.max_action)
        q1, q2 = self.critic_target(next_state, next_action)
        return reward + not_done * discount * torch.min(q1, q2)

    def _target_features(self, next_obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Target-encoder features of ``next_obs``: ``(critic's (B, S), actor's (B, S))`` (the same
        tensor unless ``separate`` mode gives the actor its own target CNN)."""
        next_state = self.encoder_target(next_obs)
        return next_state, next_state if self.actor_encoder_target is None else self.actor_encoder_target(next_obs)

    def critic_loss(self, state: torch.Tensor, action: torch.Tensor,
                    target_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(MSE of both Q heads to target_q, every Q value (2B, 1) for the statistics)``."""
        q1, q2 = self.critic(state, action)
        return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q), torch.cat([q1, q2])

    def update_critic(self, state: torch.Tensor, action: torch.Tensor, target_q: torch.Tensor) -> dict[str, torch.Tensor]:
        """Minimises ``critic_loss``; steps the critic and (end to end) the critic's CNN."""
        loss, q = self.critic_loss(state, action, target_q)
        for opt in self._critic_optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        q = q.detach()
        stats = {"critic_loss": loss.detach(), "q_mean": q.mean(), "q_min": q.min(), "q_max": q.max(),
                 "target_q_mean": target_q.mean(),
                 "critic_grad_norm": grad_norm(self.critic.parameters(), self.max_grad_norm)}
        if self.cnn_trainable:
            stats["cnn_grad_norm"] = grad_norm(self.cnn_extractor.parameters(), self.max_grad_norm)
        for opt in self._critic_optimizers:
            opt.step()
        stats.update(self._feature_stats(state.detach()))
        return stats

    def actor_loss(self, obs: Any, state: torch.Tensor,
                   next_actor_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``-Q1(s, pi(s))`` on the critic's features ``state`` (B, S), detached here: the actor loss never
        shapes the critic's encoder. The actor reads ``state`` too, or its own CNN in ``separate`` mode.

        With ``algorithm.action_smoothness`` = w > 0 (after CAPS's temporal term, Mysore et al. 2021) the
        loss is ``-mean Q1 / mean|Q1| + w * mean ||pi(s) - pi(s')||^2``; ``next_actor_state`` (B, S) is what
        the actor reads for s', the buffer's next observation (``n_step`` steps later), from the target
        encoder the TD target already ran (no extra CNN pass; it trails the online one by Polyak averaging).
        Dividing by the batch's mean |Q| (no gradient, as in TD3+BC) makes w the weight of smoothness
        against a unit of value whatever the reward scale. Squared, unlike CAPS's plain distance: its pull
        grows with the jump, so it damps throttle/brake flips (the jerk) and barely touches the small
        changes that steering through a bend needs.
        """
        state = state.detach()
        actor_state = state if self.actor_encoder is None else self.actor_encoder(obs)
        action = self.actor(actor_state)
        q = self.critic.q1(state, action)
        if self.action_smoothness == 0.0 or next_actor_state is None:
            return -q.mean(), action
        smoothness = (action - self.actor(next_actor_state)).pow(2).sum(dim=1).mean()
        return -q.mean() / q.abs().mean().detach().clamp_min(1e-6) + self.action_smoothness * smoothness, action

    def update_actor(self, obs: Any, state: torch.Tensor,
                     next_actor_state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        loss, action = self.actor_loss(obs, state, next_actor_state)
        for opt in self._actor_optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self._actor_params)  # the critic's weights need no gradient from this loss
        stats = {"actor_loss": loss.detach(),
                 "actor_grad_norm": grad_norm(self.actor.parameters(), self.max_grad_norm),
                 "action_saturation": (action.detach().abs() > 0.99 * self.max_action).float().mean()}
        if self.actor_encoder is not None:
            stats["actor_cnn_grad_norm"] = grad_norm(self.actor_encoder.parameters(), self.max_grad_norm)
        for opt in self._actor_optimizers:
            opt.step()
        return stats

    @torch.no_grad()
    def soft_update(self) -> None:
        """Polyak: ``theta' <- tau * theta + (1 - tau) * theta'`` for every target network, in one fused op."""
        torch._foreach_lerp_(self._target_params, self._online_params, self.tau)

    def _feature_stats(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        features = state[:, : self.feature_dim]
        norms = features.norm(dim=1)
        self._feature_norms = (norms.mean(), norms.max())
        return {"feature_norm": self._feature_norms[0], "feature_norm_max": self._feature_norms[1]}

    # ------------------------------------------------------------------------------------------------
    # Diagnostics
    # ------------------------------------------------------------------------------------------------
    def _cnns(self) -> dict[str, nn.Module]:
        cnns = {} if self.cnn_extractor is None else {"cnn.": self.cnn_extractor}
        if self.actor_encoder is not None:
            cnns["actor_cnn."] = self.actor_encoder.cnn
        return cnns

    def _cnn_parameters(self) -> dict[str, torch.Tensor]:
        return {prefix + n: p for prefix, m in self._cnns().items() for n, p in m.named_parameters()}

    def cnn_diagnostics(self) -> dict[str, Any]:
        """CNN health, as Python floats (syncs; call it when logging).

        ``grad_norms``: ``{param: ||grad|| or None}`` from the last update (None: no gradient reached it);
        ``weight_change``: ``{param: ||W - W0|| / ||W0||}`` since construction, and ``weight_change_total``;
        ``feature_norm_mean`` / ``feature_norm_max``: L2 norms of the last batch's CNN features (NaN before
        the first update); ``trainable``: whether the CNN is trained. Names: ``cnn.*`` is the critic's (or
        only) CNN, ``actor_cnn.*`` the actor's in ``separate`` mode.
        """
        params = self._cnn_parameters()
        changes, total = relative_weight_change(params, self._cnn_init)
        mean, peak = (float("nan"), float("nan")) if self._feature_norms is None else map(float, self._feature_norms)
        return {
            "trainable": self.cnn_trainable,
            "encoder_mode": self.encoder_mode,
            "grad_norms": per_parameter_grad_norms(params),
            "weight_change": changes,
            "weight_change_total": total,
            "feature_norm_mean": mean,
            "feature_norm_max": peak,
        }

    # ------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------
    def _networks(self) -> dict[str, nn.Module]:
        nets = {"actor": self.actor, "actor_target": self.actor_target, "critic": self.critic,
                "critic_target": self.critic_target, "encoder": self.encoder, "encoder_target": self.encoder_target}
        if self.actor_encoder is not None:
            nets.update(actor_encoder=self.actor_encoder, actor_encoder_target=self.actor_encoder_target)
        if self.cnn_extractor is not None and not self.cnn_trainable:
            nets["frozen_cnn"] = self.cnn_extractor
        return nets

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"actor": self.actor_optimizer, "critic": self.critic_optimizer,
                "cnn": self.cnn_optimizer, "actor_cnn": self.actor_cnn_optimizer}
        return {k: v for k, v in opts.items() if v is not None}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, targets, optimizers, counters, RNGs, config."""
        cnn = self.cnn_extractor
        return {
            "format": CHECKPOINT_FORMAT,
            "algo": self.ALGO,
            "init": {
                "state_dim": self.state_dim, "action_dim": self.action_dim, "max_action": self.max_action,
                "use_dict_buffer": self.use_dict_buffer,
                "observation_space": None if self.observation_space is None else {
                    k: {"shape": list(s.shape), "dtype": str(s.dtype), "low": torch.from_numpy(np.asarray(s.low)),
                        "high": torch.from_numpy(np.asarray(s.high))} for k, s in self.observation_space.spaces.items()},
                "cnn": None if not isinstance(cnn, NatureCNN) else {
                    "input_channels": cnn.input_channels, "feature_dim": cnn.feature_dim, "image_size": list(cnn.image_size)},
            },
            "config": self.config.model_dump(mode="json"),
            "encoder_mode": self.encoder_mode,
            "networks": {k: m.state_dict() for k, m in self._networks().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "total_it": self.total_it,
            "rng": {"device_type": self.device.type, "torch": self._gen.get_state(),
                    "numpy": self._np_rng.bit_generator.state},
            "cnn_init": self._cnn_init,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output into this agent (same mode and shapes)."""
        if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT:
            raise AgentStateMismatchError(f"not a TD3Agent state (expected format {CHECKPOINT_FORMAT!r})")
        saved_algo = str(state.get("algo", "td3"))  # states written before the key existed are TD3's
        if saved_algo != self.ALGO:
            raise AgentStateMismatchError(f"this checkpoint holds a {saved_algo.upper()} agent state, not a {self.ALGO.upper()} one "
                             f"(its critic differs); load it with {saved_algo.upper()}Agent / --algo {saved_algo}")
        if state["encoder_mode"] != self.encoder_mode:
            raise AgentStateMismatchError(f"the saved agent used encoder mode '{state['encoder_mode']}' but this one uses "
                             f"'{self.encoder_mode}'; set algorithm.encoder_mode / use_end_to_end_cnn to match")
        for name, module in self._networks().items():
            try:
                module.load_state_dict(state["networks"][name])
            except (KeyError, RuntimeError) as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise AgentStateMismatchError(
                    f"the saved agent does not fit this agent's '{name}' network ({detail}); the layer widths "
                    "(networks.*.hidden_layers, networks.cnn.feature_dim) must be the saved run's: drop the "
                    "overrides that change them") from None
        for name, opt in self._optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        self._runner = UpdateRunner(self)  # captured graphs point at the replaced optimizer states
        self.total_it = int(state["total_it"])
        rng = state["rng"]
        if rng["device_type"] == self.device.type:  # generator states are device-specific
            self._gen.set_state(rng["torch"].cpu())
        self._np_rng.bit_generator.state = rng["numpy"]
        self._cnn_init = {k: v.to(self.device) for k, v in state["cnn_init"].items()}

    def save(self, path: str | Path) -> Path:
        """Write ``state_dict()`` to ``path`` atomically (temp file + ``os.replace``)."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", cnn_extractor: nn.Module | None = None) -> "TD3Agent":
        """Rebuild a saved agent. A non-NatureCNN encoder must be passed again as ``cnn_extractor``."""
        state = _read_checkpoint(Path(path), device)
        init = state["init"]
        with torch.random.fork_rng(devices=[]):  # building the CNN must not move the caller's RNG
            if cnn_extractor is None and init["cnn"] is not None:
                cnn_extractor = NatureCNN(**init["cnn"])
        space = None if init["observation_space"] is None else spaces.Dict({
            k: spaces.Box(v["low"].numpy(), v["high"].numpy(), tuple(v["shape"]), np.dtype(v["dtype"]))
            for k, v in init["observation_space"].items()})
        agent = cls(init["state_dim"], init["action_dim"], init["max_action"], cnn_extractor=cnn_extractor,
                    use_dict_buffer=init["use_dict_buffer"], config=state["config"], device=device,
                    observation_space=space)
        agent.load_state_dict(state)
        return agent


def _read_checkpoint(path: Path, device: Any) -> dict[str, Any]:
    """The agent state in ``path``: a file of ``TD3Agent.save`` (read weights-only) or a training
    checkpoint of ``av-td3 train`` (``latest.pt``/``best.pt``: the agent is taken out of it)."""
    if not path.is_file():
        raise FileNotFoundError(f"TD3Agent checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # a readable file with more than weights: maybe a training checkpoint
        state = _agent_of_training_checkpoint(path, device)
    except Exception as exc:  # truncated zip, bad pickle, wrong file: torch raises several types
        first_line = _plain_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
        raise CorruptFileError(f"TD3Agent checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                               f"{first_line}); point to another checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{path} is not a TD3Agent checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return state


def _agent_of_training_checkpoint(path: Path, device: Any) -> dict[str, Any]:
    from av_td3.training.checkpoint import load_checkpoint

    try:
        data = load_checkpoint(path)  # full unpickling, as resuming does: only for files the user names
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path} is neither a TD3Agent file (TD3Agent.save) nor a readable av-td3 training "
                               f"checkpoint ({exc}); point to one of those") from None
    agent = data.get("agent")
    if not isinstance(agent, dict):
        raise CorruptFileError(f"training checkpoint {path} holds no agent state")
    return {k: _to_device(v, device) for k, v in agent.items()}


def _to_device(value: Any, device: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _plain_text(text: str) -> str:
    """``text`` without terminal colour codes (torch puts some in its weights-only errors)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _check_init_arguments(state_dim: Any, action_dim: Any, max_action: Any, device: Any) -> None:
    """Arguments that would otherwise fail deep inside torch/numpy, or train nonsense."""
    for name, value in (("state_dim", state_dim), ("action_dim", action_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"TD3Agent: {name} must be an integer >= 1, got {value!r}")
    try:
        max_action = float(max_action)
    except (TypeError, ValueError):
        raise ValueError(f"TD3Agent: max_action must be a number, got {max_action!r}") from None
    if not math.isfinite(max_action) or max_action <= 0:
        raise ValueError(f"TD3Agent: max_action must be finite and > 0 (actions lie in [-max_action, max_action], "
                         f"1.0 for the driving envs), got {max_action}")
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"TD3Agent: device {device!r} is not a torch device ({exc}); use 'cpu' or 'cuda'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        from av_td3.devices import DeviceUnavailableError

        raise DeviceUnavailableError(f"TD3Agent(device={device!r}): torch sees no CUDA GPU on this machine; use "
                                     "device='cpu' (or av_td3.training.setup.resolve_device('auto'))")

"""DDPG (Lillicrap et al. 2016) on the same end-to-end CNN, buffer and trainer as ``TD3Agent``.

DDPG is the algorithm TD3 improves on, so the baseline keeps everything else equal (encoder modes,
random-shift augmentation, n-step returns, Dict replay buffer, checkpoints, diagnostics) and removes
exactly TD3's three additions (Fujimoto et al. 2018, §4-5):

* clipped double-Q  -> ONE critic ``Q(s, a)`` and the target ``r + gamma * Q'(s', pi'(s'))``;
* target policy smoothing -> the target uses the target actor's exact action (no noise);
* delayed policy updates -> the actor and every target network are updated on every critic update.

The TD3-only keys ``algorithm.policy_freq``, ``policy_noise`` and ``noise_clip`` are therefore not used;
``configs/ddpg.yaml`` sets them to their DDPG values (1, 0, 0) and the agent says so in its log when a
config carries other values.

    agent = DDPGAgent(535, 2, 1.0, cnn_extractor=NatureCNN(), use_dict_buffer=True, config=cfg,
                      observation_space=env.observation_space)   # the TD3Agent signature
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from av_td3.agents.networks import mlp
from av_td3.agents.td3 import TD3Agent

__all__ = ["DDPGAgent", "SingleCritic"]


class SingleCritic(nn.Module):
    """One Q network: ``(B, S), (B, A)`` -> ``(B, 1)``.

    ``q1`` is an alias of ``forward`` so ``TD3Agent.actor_loss`` (``-Q1(s, pi(s))``) works unchanged.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: list[int]):
        super().__init__()
        self.q_net = mlp(state_dim + action_dim, hidden, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q_net(torch.cat([state, action], dim=1))

    def q1(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.forward(state, action)


class DDPGAgent(TD3Agent):
    """DDPG with an end-to-end CNN; takes exactly ``TD3Agent``'s arguments (see its docstring).

    ``train()`` returns the same statistics as TD3's on every call, ``actor_loss`` included (no delay).
    Only the critic (``_make_critic``), its loss (``critic_loss``) and the TD target differ from TD3;
    ``ALGO`` makes ``state_dict()``/``load_state_dict()`` refuse a TD3 state by name.
    """

    ALGO = "ddpg"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        alg = self.config.algorithm
        # DDPG has no delay and no target smoothing, whatever the (possibly TD3) config says.
        self.policy_freq, self.policy_noise, self.noise_clip = 1, 0.0, 0.0
        if not kwargs.get("verbose", True):
            return
        print("[AGENT] DDPG: one critic, no target policy smoothing, actor and targets updated every step")
        ignored = [f"algorithm.{k}={v}" for k, v, ddpg in (("policy_freq", alg.policy_freq, 1),
                                                           ("policy_noise", alg.policy_noise, 0.0)) if v != ddpg]
        if ignored:
            print(f"[AGENT] DDPG ignores the TD3-only keys {', '.join(ignored)} "
                  "(configs/ddpg.yaml sets them to 1 and 0)")

    # ------------------------------------------------------------------------------------------------
    def _make_critic(self, state_dim: int, action_dim: int, hidden: list[int]) -> nn.Module:
        return SingleCritic(state_dim, action_dim, hidden)

    def td_target(self, next_obs: Any, reward: torch.Tensor, not_done: torch.Tensor, discount: Any,
                  next_features: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``r + not_done * discount * Q'(s', pi'(s'))``, shape (B, 1): no noise, no min over two critics.

        ``not_done`` is 0 only for ``terminated``; ``discount`` is gamma^m of the buffer's m-step window.
        """
        next_state, actor_next = next_features or self._target_features(next_obs)
        return reward + not_done * discount * self.critic_target(next_state, self.actor_target(actor_next))

    def critic_loss(self, state: torch.Tensor, action: torch.Tensor,
                    target_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(MSE of the one Q head to target_q, its Q values (B, 1))``."""
        q = self.critic(state, action)
        return F.mse_loss(q, target_q), q

"""CAPS temporal smoothness in the actor loss (``algorithm.action_smoothness``): the loss has the documented
value, its gradient pulls pi(s) and pi(s') together, and 0 keeps the plain TD3 actor loss."""

from __future__ import annotations

import pytest
import torch

from av_td3.config import ConfigError
from test_td3_agent import fill, make_agent


def _batch_and_features(agent):
    batch = agent.replay_buffer.sample_batch(8)
    state = agent.encoder(batch.obs)
    return batch, state


def test_zero_weight_is_the_plain_td3_actor_loss():
    agent = fill(make_agent("critic"))
    batch, state = _batch_and_features(agent)
    loss, action = agent.actor_loss(batch.obs, state, agent._target_features(batch.next_obs)[1])
    expected = -agent.critic.q1(state.detach(), agent.actor(state.detach())).mean()
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("mode", ["critic", "separate"])
def test_loss_is_normalised_value_plus_weighted_action_distance(mode):
    agent = fill(make_agent(mode, action_smoothness=0.7))
    batch, state = _batch_and_features(agent)
    next_in = agent._target_features(batch.next_obs)[1]
    loss, action = agent.actor_loss(batch.obs, state, next_in)
    actor_in = state.detach() if mode == "critic" else agent.actor_encoder(batch.obs)
    expected_next = agent.encoder_target(batch.next_obs) if mode == "critic" else agent.actor_encoder_target(batch.next_obs)
    assert torch.equal(next_in, expected_next)  # the target encoder the TD target runs, no extra CNN pass
    q = agent.critic.q1(state.detach(), agent.actor(actor_in))
    distance = (agent.actor(actor_in) - agent.actor(next_in)).pow(2).sum(dim=1).mean()
    expected = -q.mean() / q.abs().mean() + 0.7 * distance
    assert torch.allclose(loss, expected, atol=1e-5)


def test_smoothness_gradient_brings_consecutive_actions_together():
    """With the critic's weights frozen (the actor loss never steps them), 60 actor steps on one batch cut
    the mean ||pi(s) - pi(s')|| when the weight is large, and not when it is 0."""
    distances = {}
    for weight in (0.0, 5.0):
        agent = fill(make_agent("critic", action_smoothness=weight))
        batch, state = _batch_and_features(agent)
        state, next_state = state.detach(), agent._target_features(batch.next_obs)[1].detach()

        def distance():
            with torch.no_grad():
                return (agent.actor(state) - agent.actor(next_state)).norm(dim=1).mean().item()

        before = distance()
        for _ in range(60):
            agent.update_actor(batch.obs, state, next_state)
        distances[weight] = distance() / before
    assert distances[5.0] < 0.5 < distances[0.0]


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="action_smoothness"):
        make_agent("critic", action_smoothness=-1.0)

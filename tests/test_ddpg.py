"""DDPGAgent: one critic, no target smoothing, no delay, end-to-end CNN, checkpoints, `train --algo ddpg`."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from av_td3.agents.ddpg import DDPGAgent, SingleCritic
from av_td3.agents.networks import NatureCNN
from av_td3.agents.td3 import TD3Agent
from av_td3.envs.contract import FrameStack, make_observation_space

SIZE, FEAT, VEC = 36, 32, 23  # small images and features: behaviour, not size


def config(**algorithm):
    return {
        "networks": {"cnn": {"feature_dim": FEAT}, "actor": {"hidden_layers": [32, 32]},
                     "critic": {"hidden_layers": [32, 32]}},
        "algorithm": {"batch_size": 8, **algorithm},
        "training": {"buffer_size": 200},
    }


def make(cls=DDPGAgent, mode="critic", **algorithm):
    torch.manual_seed(0)
    return cls(FEAT + VEC, 2, 1.0, cnn_extractor=NatureCNN(4, FEAT, image_size=(SIZE, SIZE)),
               use_dict_buffer=True, config=config(encoder_mode=mode, **algorithm),
               observation_space=make_observation_space(4, SIZE, SIZE))


def random_obs(rng, stack, first=False):
    frame = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    return {"image": stack.reset(frame) if first else stack.push(frame),
            "vector": rng.standard_normal(VEC).astype(np.float32)}


def fill(agent, n=40, seed=0):
    rng, stack = np.random.default_rng(seed), FrameStack(4)
    obs = random_obs(rng, stack, first=True)
    for i in range(n):
        nxt = random_obs(rng, stack)
        end = i % 10 == 9
        agent.replay_buffer.add(obs_dict=obs, action=rng.uniform(-1, 1, 2).astype(np.float32), next_obs_dict=nxt,
                                reward=float(rng.standard_normal()), done=end and i % 20 == 9,
                                truncated=end and i % 20 == 19)
        obs = random_obs(rng, stack, first=True) if end else nxt
    return agent


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(module, before):
    return all(not torch.equal(p, before[n]) for n, p in module.named_parameters())


def batch_obs(n=4, seed=1):
    rng, stack = np.random.default_rng(seed), FrameStack(4)
    obs = [random_obs(rng, stack, first=True) for _ in range(n)]
    return {k: torch.as_tensor(np.stack([o[k] for o in obs])) for k in ("image", "vector")}


# --------------------------------------------------------------------------------------------------
def test_every_train_call_updates_critic_actor_cnn_and_targets(capsys):
    agent = fill(make(policy_freq=2, policy_noise=0.2))  # TD3 values in the config: ignored, and said so
    out = capsys.readouterr().out
    assert "[AGENT] DDPG: one critic" in out and "ignores the TD3-only keys algorithm.policy_freq=2" in out
    assert agent.policy_freq == 1 and agent.policy_noise == 0.0
    for step in range(3):
        nets = {"critic": agent.critic, "actor": agent.actor, "cnn": agent.cnn_extractor,
                "actor_target": agent.actor_target, "critic_target": agent.critic_target,
                "encoder_target": agent.encoder_target}
        before = {k: snapshot(m) for k, m in nets.items()}
        stats = agent.train()
        assert "actor_loss" in stats and "critic_loss" in stats, step
        for name, module in nets.items():
            assert changed(module, before[name]), (step, name)
        assert all(torch.isfinite(v) for v in stats.values())
    assert agent.total_it == 3
    # Same statistics as TD3 on an actor step (the trainer and its health checks read them).
    assert stats.keys() == fill(make(TD3Agent, policy_freq=1)).train().keys()


def test_single_critic_and_no_target_smoothing():
    agent = make(policy_noise=10.0, noise_clip=5.0)  # would be huge smoothing noise in TD3
    assert isinstance(agent.critic, SingleCritic) and isinstance(agent.critic_target, SingleCritic)
    assert agent.critic(torch.zeros(3, FEAT + VEC), torch.zeros(3, 2)).shape == (3, 1)
    seen = {}

    class Spy(nn.Module):  # target critic with a known value that records the action it is asked about
        def forward(self, state, action):
            seen["action"] = action
            return torch.full((state.shape[0], 1), 3.0)

    agent.critic_target = Spy()
    obs = batch_obs()
    gen_state = agent._gen.get_state()
    reward, not_done = torch.tensor([[1.0], [1.0], [2.0], [0.0]]), torch.tensor([[0.0], [1.0], [1.0], [1.0]])
    target = agent.td_target(obs, reward, not_done, torch.full((4, 1), 0.9))
    torch.testing.assert_close(target, torch.tensor([[1.0], [1.0 + 0.9 * 3], [2.0 + 0.9 * 3], [0.9 * 3]]))
    with torch.no_grad():
        exact = agent.actor_target(agent.encoder_target(obs))
    assert torch.equal(seen["action"], exact)  # the target actor's exact action, no noise
    assert torch.equal(agent._gen.get_state(), gen_state)  # and no noise was even drawn


def test_separate_mode_trains_both_cnns_every_call():
    agent = fill(make(mode="separate"))
    critic_cnn, actor_cnn = snapshot(agent.cnn_extractor), snapshot(agent.actor_encoder)
    stats = agent.train()
    assert "actor_cnn_grad_norm" in stats and "cnn_grad_norm" in stats
    assert changed(agent.cnn_extractor, critic_cnn) and changed(agent.actor_encoder, actor_cnn)


def test_critic_loss_gradient_reaches_every_cnn_parameter():
    agent = fill(make())
    agent.train()
    grads = agent.cnn_diagnostics()["grad_norms"]
    assert grads and all(g is not None and g > 0 for g in grads.values())
    assert agent.cnn_diagnostics()["weight_change_total"] > 0


def test_save_load_round_trip(tmp_path):
    agent = fill(make())
    for _ in range(2):
        agent.train()
    loaded = DDPGAgent.load(agent.save(tmp_path / "ddpg.pt"))
    assert isinstance(loaded, DDPGAgent) and loaded.total_it == 2 and loaded.policy_freq == 1
    rng, stack = np.random.default_rng(5), FrameStack(4)
    obs = random_obs(rng, stack, first=True)
    np.testing.assert_array_equal(agent.select_action(obs), loaded.select_action(obs))
    batch = agent.replay_buffer.sample_batch(8)
    s1, s2 = agent.update(batch), loaded.update(batch)
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    # A TD3 state and a DDPG state never load into each other silently.
    with pytest.raises(ValueError, match="TD3 agent state, not a DDPG"):
        make().load_state_dict(make(TD3Agent).state_dict())
    with pytest.raises(ValueError, match="critic"):
        make(TD3Agent).load_state_dict(agent.state_dict())
    with pytest.raises(ValueError, match="holds a DDPG agent .* load it with DDPGAgent / --algo ddpg"):
        make(TD3Agent).load_state_dict(agent.state_dict())
    assert make(TD3Agent).state_dict()["algo"] == "td3" and agent.state_dict()["algo"] == "ddpg"


def test_train_algo_ddpg_smoke(tmp_path, capsys):
    from av_td3.cli import main

    rc = main(["train", "--algo", "ddpg", "--max-timesteps", "60", "--device", "cpu", "--log-dir", str(tmp_path),
               "--run-name", "d", "--set", "algorithm.batch_size=16", "--set", "env.max_episode_steps=40",
               "--set", "logging.progress_bar=false", "--set", "evaluation.num_episodes=1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "DDPG" in out and "CNN passed to DDPGAgent" in out
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["updates"] > 0
    saved = torch.load(tmp_path / "d" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)
    assert saved["algo"] == "ddpg"

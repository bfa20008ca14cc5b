"""TD3Agent: gradient flow per encoder mode, TD targets, Polyak targets, checkpoints, errors, logging."""

import numpy as np
import pytest
import torch
from torch import nn

from av_td3 import NatureCNN, TD3Agent
from av_td3.config import ConfigError
from av_td3.envs.contract import FrameStack, make_observation_space
from av_td3.io import CorruptFileError

SIZE, FEAT, VEC = 36, 32, 23  # small images and features: these tests are about behaviour, not size
SMALL = {"training": {"buffer_size": 16}, "algorithm": {"batch_size": 8}}


def config(**algorithm):
    return {
        "networks": {"cnn": {"feature_dim": FEAT}, "actor": {"hidden_layers": [32, 32]},
                     "critic": {"hidden_layers": [32, 32]}},
        "algorithm": {"batch_size": 8, **algorithm},
        "training": {"buffer_size": 200},
    }


def make_agent(mode="critic", end_to_end=True, **algorithm):
    torch.manual_seed(0)
    cnn = NatureCNN(4, FEAT, image_size=(SIZE, SIZE))
    return TD3Agent(FEAT + VEC, 2, 1.0, cnn_extractor=cnn, use_dict_buffer=True,
                    config=config(encoder_mode=mode, use_end_to_end_cnn=end_to_end, **algorithm),
                    observation_space=make_observation_space(4, SIZE, SIZE))


def episodes(n, seed=0, length=10, size=SIZE):
    """``(obs, action, next_obs, reward, terminated, truncated)`` from random-pixel episodes."""
    rng = np.random.default_rng(seed)
    stack, t = FrameStack(4), 0
    obs = {"image": stack.reset(rng.integers(0, 256, (size, size), dtype=np.uint8)),
           "vector": rng.standard_normal(VEC).astype(np.float32)}
    for i in range(n):
        t += 1
        nxt = {"image": stack.push(rng.integers(0, 256, (size, size), dtype=np.uint8)),
               "vector": rng.standard_normal(VEC).astype(np.float32)}
        end = t == length
        yield obs, rng.uniform(-1, 1, 2).astype(np.float32), nxt, float(rng.standard_normal()), end and i % 2 == 0, end and i % 2 == 1
        obs = nxt
        if end:
            t = 0
            obs = {"image": stack.reset(rng.integers(0, 256, (size, size), dtype=np.uint8)), "vector": nxt["vector"]}


def fill(agent, n=60, **kw):
    for obs, action, nxt, reward, terminated, truncated in episodes(n, **kw):
        if agent.use_dict_buffer:
            agent.replay_buffer.add(obs_dict=obs, action=action, next_obs_dict=nxt, reward=reward,
                                    done=terminated, truncated=truncated)
        else:
            agent.replay_buffer.add(state=agent.flatten_obs(obs), action=action, next_state=agent.flatten_obs(nxt),
                                    reward=reward, done=terminated, truncated=truncated)
    return agent


def params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def an_obs(seed=1):
    return next(episodes(1, seed=seed))[0]


# --------------------------------------------------------------------------------------------------
# Gradient flow per encoder mode
# --------------------------------------------------------------------------------------------------
def test_critic_mode_every_cnn_parameter_gets_a_gradient_and_changes():
    agent = fill(make_agent("critic"))
    before = params(agent.cnn_extractor)
    agent.train()
    stats = agent.train()  # second call: actor + targets too
    assert "actor_loss" in stats
    for name, p in agent.cnn_extractor.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    diag = agent.cnn_diagnostics()
    assert diag["trainable"] and diag["weight_change_total"] > 0
    assert all(g is not None and g > 0 for g in diag["grad_norms"].values())
    assert set(diag["grad_norms"]) == {f"cnn.{n}" for n, _ in agent.cnn_extractor.named_parameters()}
    assert diag["feature_norm_mean"] > 0 and diag["feature_norm_max"] >= diag["feature_norm_mean"]


def test_critic_mode_actor_loss_puts_no_gradient_into_the_encoder():
    agent = fill(make_agent("critic"))
    batch = agent.replay_buffer.sample_batch(8)
    obs = agent.augment(batch.obs)
    state = agent.encoder(obs)  # with grad, as in update()
    loss, _ = agent.actor_loss(obs, state)
    loss.backward()
    assert all(p.grad is None for p in agent.cnn_extractor.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    # ... and the actor step leaves the encoder untouched
    before = params(agent.cnn_extractor)
    agent.update_actor(obs, state)
    assert all(torch.equal(p, before[n]) for n, p in agent.cnn_extractor.named_parameters())


def test_separate_mode_both_cnns_learn_from_their_own_loss():
    agent = fill(make_agent("separate"))
    assert agent.actor_encoder is not None and agent.actor_encoder.cnn is not agent.cnn_extractor
    critic_cnn, actor_cnn = params(agent.cnn_extractor), params(agent.actor_encoder.cnn)
    agent.train()
    agent.train()
    for before, cnn in ((critic_cnn, agent.cnn_extractor), (actor_cnn, agent.actor_encoder.cnn)):
        for name, p in cnn.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
            assert not torch.equal(p.detach(), before[name]), name
    # the actor loss reaches the actor's CNN only
    agent.cnn_extractor.zero_grad(set_to_none=True)
    agent.actor_encoder.zero_grad(set_to_none=True)
    batch = agent.replay_buffer.sample_batch(8)
    loss, _ = agent.actor_loss(batch.obs, agent.encoder(batch.obs))
    loss.backward()
    assert all(p.grad is None for p in agent.cnn_extractor.parameters())
    assert all(p.grad is not None for p in agent.actor_encoder.parameters())
    assert set(agent.cnn_diagnostics()["grad_norms"]) >= {"actor_cnn.conv.0.weight", "cnn.conv.0.weight"}


def test_frozen_mode_never_changes_the_cnn(capsys):
    agent = make_agent(end_to_end=False)
    out = capsys.readouterr().out
    assert "[AGENT] CNN mode: frozen (no gradients)" in out and "[AGENT] Using standard ReplayBuffer (flat states)" in out
    assert not agent.use_dict_buffer and not agent.cnn_trainable and agent.encoder_mode == "frozen"
    fill(agent)
    before = params(agent.cnn_extractor)
    for _ in range(2):
        agent.train()
    for name, p in agent.cnn_extractor.named_parameters():
        assert p.grad is None and torch.equal(p.detach(), before[name]), name
    diag = agent.cnn_diagnostics()
    assert not diag["trainable"] and diag["weight_change_total"] == 0.0
    state = agent.flatten_obs(an_obs())
    assert state.shape == (FEAT + VEC,) and state.dtype == np.float32
    assert agent.select_action(state).shape == (2,)
    obs = an_obs()  # a dict goes through the frozen CNN first: the same action as the flat state
    assert np.array_equal(agent.select_action(obs), agent.select_action(agent.flatten_obs(obs)))


@pytest.mark.parametrize("mode", ["critic", "separate"])
def test_targets_move_by_exactly_tau_on_actor_steps_only(mode):
    agent = fill(make_agent(mode, tau=0.1))
    pairs = [(agent.actor, agent.actor_target), (agent.critic, agent.critic_target),
             (agent.encoder, agent.encoder_target)]
    if mode == "separate":  # the actor's own CNN has its own target, read by td_target for pi'(s')
        assert agent.actor_encoder is not None and agent.actor_encoder_target is not None
        pairs.append((agent.actor_encoder, agent.actor_encoder_target))
    # every target network the agent has is checked here (a new one must be added to `pairs`)
    nets = agent._networks()
    assert {id(nets[name]) for name in nets if name.endswith("_target")} == {id(t) for _, t in pairs}
    old = [params(t) for _, t in pairs]
    assert "actor_loss" not in agent.train()  # critic-only step: targets stay
    assert all(torch.equal(p, o[n]) for (_, t), o in zip(pairs, old) for n, p in t.named_parameters())
    assert "actor_loss" in agent.train()
    for (online, target), o in zip(pairs, old):
        online_p = dict(online.named_parameters())
        for name, p in target.named_parameters():
            torch.testing.assert_close(p, 0.1 * online_p[name].detach() + 0.9 * o[name], rtol=1e-6, atol=1e-7)
            assert not p.requires_grad
    assert len(list(agent.encoder_target.parameters())) == len(list(agent.cnn_extractor.parameters()))
    if mode == "separate":
        assert len(list(agent.actor_encoder_target.parameters())) == len(list(agent.actor_encoder.cnn.parameters()))
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(agent.actor_encoder_target.parameters(),
                                                                 agent.encoder_target.parameters()))


# --------------------------------------------------------------------------------------------------
# TD targets
# --------------------------------------------------------------------------------------------------
class ConstQ(nn.Module):
    """Target critic with known values: Q1' = 5, Q2' = 3, so min(Q1', Q2') = 3."""

    def forward(self, state, action):
        ones = torch.ones(state.shape[0], 1)
        return 5.0 * ones, 3.0 * ones


def test_td_target_terminated_vs_truncated_hand_made_batch():
    agent = make_agent("critic")
    agent.critic_target = ConstQ()
    obs = {k: torch.as_tensor(np.stack([an_obs(i)[k] for i in range(3)])) for k in ("image", "vector")}
    reward = torch.tensor([[1.0], [2.0], [3.0]])
    not_done = torch.tensor([[0.0], [1.0], [1.0]])  # terminated, truncated (time limit), 3-step window
    discount = torch.tensor([[0.99], [0.99], [0.99**3]])
    target = agent.td_target(obs, reward, not_done, discount)
    torch.testing.assert_close(target, torch.tensor([[1.0], [2.0 + 0.99 * 3.0], [3.0 + 0.99**3 * 3.0]]))


def test_td_target_through_the_buffer_and_update():
    """One-step episodes that terminate (reward 1) or truncate (reward 2): only termination stops bootstrapping."""
    agent = make_agent("critic", n_step=1, discount=0.9)
    rng, stack = np.random.default_rng(0), FrameStack(4)
    for i in range(12):
        obs = {"image": stack.reset(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)), "vector": np.zeros(VEC, np.float32)}
        nxt = {"image": stack.push(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)), "vector": np.ones(VEC, np.float32)}
        agent.replay_buffer.add(obs_dict=obs, action=rng.uniform(-1, 1, 2), next_obs_dict=nxt,
                                reward=1.0 if i % 2 else 2.0, done=bool(i % 2), truncated=not i % 2)
    agent.critic_target = ConstQ()
    seen = {}
    update_critic = agent.update_critic

    def spy(state, action, target_q):
        seen["target"] = target_q
        return update_critic(state, action, target_q)

    agent.update_critic = spy
    batch = agent.replay_buffer.sample_batch(8)
    agent.update(batch)
    expected = torch.where(batch.reward == 1.0, torch.tensor(1.0), torch.tensor(2.0 + 0.9 * 3.0))
    torch.testing.assert_close(seen["target"], expected)
    assert set(batch.reward.flatten().tolist()) == {1.0, 2.0}


def test_target_policy_smoothing_noise_is_clipped():
    agent = make_agent("critic", policy_noise=10.0, noise_clip=0.05)
    actions = {}

    class Spy(ConstQ):
        def forward(self, state, action):
            actions["a"] = action
            return super().forward(state, action)

    agent.critic_target = Spy()
    obs = {k: torch.as_tensor(np.stack([an_obs(i)[k] for i in range(4)])) for k in ("image", "vector")}
    agent.td_target(obs, torch.zeros(4, 1), torch.ones(4, 1), torch.full((4, 1), 0.99))
    with torch.no_grad():
        clean = agent.actor_target(agent.encoder_target(obs)).clamp(-1, 1)
    diff = (actions["a"] - clean).abs()
    assert diff.max() <= 0.05 + 1e-6 and diff.max() > 0.04


# --------------------------------------------------------------------------------------------------
# Checkpoints and determinism
# --------------------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_actions_and_next_update(tmp_path):
    agent = fill(make_agent("critic"))
    for _ in range(3):
        agent.train()
    path = agent.save(tmp_path / "agent.pt")
    loaded = TD3Agent.load(path)
    assert loaded.total_it == 3 and loaded.encoder_mode == "critic"
    obs = an_obs()
    np.testing.assert_array_equal(agent.select_action(obs), loaded.select_action(obs))
    np.testing.assert_array_equal(agent.select_action(obs, noise=0.3), loaded.select_action(obs, noise=0.3))
    batch = agent.replay_buffer.sample_batch(8)
    s1, s2 = agent.update(batch), loaded.update(batch)  # 4th update: critic, actor and targets
    assert s1.keys() == s2.keys() and "actor_loss" in s1
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    for name, sd in agent.state_dict()["networks"].items():
        other = loaded.state_dict()["networks"][name]
        assert all(torch.equal(v, other[k]) for k, v in sd.items()), name


def test_state_dict_restores_into_a_fresh_agent_and_checks_the_mode():
    agent = fill(make_agent("critic"))
    agent.train()
    fresh = make_agent("critic")
    fresh.load_state_dict(agent.state_dict())
    obs = an_obs()
    np.testing.assert_array_equal(agent.select_action(obs), fresh.select_action(obs))
    with pytest.raises(ValueError, match="encoder mode 'critic'.*'separate'"):
        make_agent("separate").load_state_dict(agent.state_dict())


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    agent = make_agent("critic")
    data = agent.save(tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="cut.pt"):
        TD3Agent.load(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="junk.pt"):
        TD3Agent.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        TD3Agent.load(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_same_seed_same_training():
    a, b = fill(make_agent("critic")), fill(make_agent("critic"))
    for _ in range(3):
        sa, sb = a.train(), b.train()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(p, q) for p, q in zip(a._online_params, b._online_params))
    np.testing.assert_array_equal(a.select_action(an_obs(), 0.2), b.select_action(an_obs(), 0.2))


# --------------------------------------------------------------------------------------------------
# API, errors, config, logging
# --------------------------------------------------------------------------------------------------
def test_seed_log_lines(capsys):
    make_agent("critic")
    out = capsys.readouterr().out
    for line in ("[AGENT] CNN optimizer initialized with lr=0.0001", "[AGENT] CNN mode: training (gradients enabled)",
                 "[AGENT] Using DictReplayBuffer for end-to-end CNN training"):
        assert line in out


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match=r"algorithm\.polcy_freq.*algorithm\.policy_freq"):
        TD3Agent(config={"algorithm": {"polcy_freq": 2}})


def test_cnn_must_match_the_observation_space_and_config():
    with pytest.raises(ValueError, match=r"image_size=\(36, 36\)"):
        TD3Agent(535, 2, cnn_extractor=NatureCNN(), use_dict_buffer=True, config=SMALL,
                 observation_space=make_observation_space(4, SIZE, SIZE))
    with pytest.raises(ValueError, match="networks.cnn.feature_dim"):
        TD3Agent(FEAT + VEC, 2, cnn_extractor=NatureCNN(4, FEAT), use_dict_buffer=True, config=SMALL)


def test_select_action_inputs_and_errors():
    agent = make_agent("critic")
    obs = an_obs()
    action = agent.select_action(obs)
    assert action.shape == (2,) and action.dtype == np.float32 and np.abs(action).max() <= 1.0
    noisy = agent.select_action(obs, noise=5.0)
    assert np.abs(noisy).max() <= 1.0 and not np.array_equal(noisy, action)
    batched = {k: np.stack([v, v]) for k, v in obs.items()}
    np.testing.assert_allclose(agent.select_action(batched), np.stack([action, action]), atol=1e-6)
    with pytest.raises(TypeError, match="dict observation"):
        agent.select_action(np.zeros(FEAT + VEC, np.float32))
    with pytest.raises(ValueError, match=r"observation\['image'\].*\(4, 36, 36\).*\(4, 30, 30\)"):
        agent.select_action({"image": np.zeros((4, 30, 30), np.uint8), "vector": obs["vector"]})
    with pytest.raises(KeyError, match="'vector'"):
        agent.select_action({"image": obs["image"]})
    with pytest.raises(TypeError, match="uint8"):
        agent.select_action({"image": obs["image"].astype(np.float32), "vector": obs["vector"]})
    frozen = TD3Agent(config=SMALL)
    with pytest.raises(TypeError, match=r"flat states of shape \(535,\)"):
        frozen.select_action(obs)
    with pytest.raises(ValueError, match=r"\(535,\)"):
        frozen.select_action(np.zeros(10))


def test_train_returns_tensors_and_clips_gradients():
    agent = fill(make_agent("critic", max_grad_norm=1e-3))
    agent.train()
    stats = agent.train()
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in stats.values())
    assert {"critic_loss", "actor_loss", "q_mean", "q_max", "critic_grad_norm", "actor_grad_norm",
            "cnn_grad_norm", "feature_norm"} <= stats.keys()
    assert float(stats["critic_grad_norm"]) > 1e-3  # the norm is reported before clipping ...
    for module in (agent.critic, agent.actor, agent.cnn_extractor):  # ... and the step used clipped grads
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))
        assert total <= 1e-3 * 1.001


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cnn_precision_keeps_float32_weights_and_close_features(precision):
    agent = fill(_agent_with_precision(precision))
    assert agent.cnn_dtype == (None if precision == "float32" else torch.bfloat16)
    batch = agent.replay_buffer.sample_batch(8)
    state = agent.encoder(batch.obs)
    assert state.dtype == torch.float32
    with torch.no_grad():
        reference = torch.cat([agent.cnn_extractor(batch.obs["image"]), batch.obs["vector"]], dim=1)  # plain fp32
    torch.testing.assert_close(state, reference, rtol=2e-2, atol=2e-3)
    agent.train()
    agent.train()
    for p in agent.cnn_extractor.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0
    assert all(s["exp_avg"].dtype == torch.float32 for s in agent.cnn_optimizer.state.values())


def _agent_with_precision(precision):
    torch.manual_seed(0)
    cfg = config()
    cfg["networks"]["cnn"]["precision"] = precision
    return TD3Agent(FEAT + VEC, 2, 1.0, cnn_extractor=NatureCNN(4, FEAT, image_size=(SIZE, SIZE)), use_dict_buffer=True,
                    config=cfg, observation_space=make_observation_space(4, SIZE, SIZE))


def test_default_84x84_agent_trains():
    agent = TD3Agent(cnn_extractor=NatureCNN(), use_dict_buffer=True,
                     config={"algorithm": {"batch_size": 4}, "training": {"buffer_size": 16}})
    assert agent.state_dim == 535 and agent.observation_space["image"].shape == (4, 84, 84)
    for obs, action, nxt, reward, terminated, truncated in episodes(6, size=84):
        agent.replay_buffer.add(obs_dict=obs, action=action, next_obs_dict=nxt, reward=reward, done=terminated)
    stats = agent.train()
    assert np.isfinite(float(stats["critic_loss"]))
    assert agent.select_action(an_obs_84()).shape == (2,)


def an_obs_84():
    return next(episodes(1, size=84))[0]

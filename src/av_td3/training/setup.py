"""Building the pieces of a run from a validated ``Config``: device, envs, agent."""

from __future__ import annotations

import gymnasium

from av_td3.config import Config
from av_td3.devices import DeviceUnavailableError, resolve_device
from av_td3.envs.contract import vector_dim
from av_td3.envs.registry import CARLA_ID, TOWN_ID, register_envs

__all__ = ["DeviceUnavailableError", "build_agent", "make_env", "resolve_device"]


def make_env(cfg: Config, render_mode: str | None = None, training: bool = False) -> gymnasium.Env:
    """The configured backend (``env.name``) as a gymnasium env, scenario and all from ``cfg``.

    ``env.traffic_mix`` (a traffic density drawn per episode) and ``env.lane_invasion_ends_episode`` apply
    only to the training env (``training=True``); every evaluation plays ``env.scenario`` to the end.
    """
    register_envs()
    env_id = TOWN_ID if cfg.env.name == "town" else CARLA_ID
    if not training:
        cfg = evaluation_config(cfg)
    # The env enforces its own step limit (env.max_episode_steps), so no TimeLimit wrapper here.
    return gymnasium.make(env_id, scenario=cfg.env.scenario, render_mode=render_mode, config=cfg,
                          disable_env_checker=True)


def evaluation_config(cfg: Config) -> Config:
    """``cfg`` without the training-only env settings (``traffic_mix``, ``lane_invasion_ends_episode``)."""
    training_only = {"traffic_mix": None, "lane_invasion_ends_episode": False}
    if all(getattr(cfg.env, k) == v for k, v in training_only.items()):
        return cfg
    return cfg.model_copy(update={"env": cfg.env.model_copy(update=training_only)})


def build_agent(cfg: Config, observation_space: gymnasium.spaces.Dict, device: str, verbose: bool = True):
    """The agent of ``algorithm.name`` (TD3 or DDPG) with a NatureCNN for the observation's image stack,
    in the configured encoder mode.

    End-to-end (default): the CNN goes to the agent and dict observations go to a DictReplayBuffer.
    Frozen (``algorithm.use_end_to_end_cnn: false``, the seed's rollback plan): the agent still gets the
    CNN, keeps it frozen, and stores flat states; ``agent.flatten_obs`` encodes observations.
    """
    from av_td3.agents.networks import NatureCNN
    from av_td3.agents.td3 import TD3Agent

    image_shape = observation_space["image"].shape
    cnn = NatureCNN(input_channels=image_shape[0], feature_dim=cfg.networks.cnn.feature_dim,
                    image_size=tuple(image_shape[1:]))
    end_to_end = cfg.algorithm.use_end_to_end_cnn
    agent_cls = TD3Agent
    if cfg.algorithm.name == "ddpg":
        from av_td3.agents.ddpg import DDPGAgent

        agent_cls = DDPGAgent
    agent = agent_cls(
        state_dim=cfg.networks.cnn.feature_dim + vector_dim(cfg.env.num_waypoints),
        action_dim=2,
        max_action=1.0,
        cnn_extractor=cnn,
        use_dict_buffer=end_to_end,
        config=cfg,
        device=device,
        observation_space=observation_space,
        verbose=verbose,
    )
    if verbose and end_to_end:
        print(f"[AGENT] CNN passed to {agent_cls.__name__} for end-to-end training")
        print("[AGENT] DictReplayBuffer enabled for gradient flow")
    elif verbose:
        print(f"[AGENT] CNN passed to {agent_cls.__name__} frozen (rollback mode: flat 535-d states)")
    return agent

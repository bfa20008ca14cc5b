"""av-td3: end-to-end visual TD3 for autonomous driving.

``import av_td3`` registers ``av_td3/Town-v0`` and ``av_td3/Carla-v0`` with gymnasium. The learning
classes are imported lazily so that env-only users do not pay for importing torch.
"""

from av_td3.envs.registry import register_envs

__version__ = "0.1.0"
__all__ = ["TD3Agent", "DictReplayBuffer", "ReplayBuffer", "NatureCNN", "load_config", "Config"]

_LAZY = {
    "TD3Agent": "av_td3.agents.td3",
    "NatureCNN": "av_td3.agents.networks",
    "DictReplayBuffer": "av_td3.buffers.dict_replay_buffer",
    "ReplayBuffer": "av_td3.buffers.replay_buffer",
    "load_config": "av_td3.config",
    "Config": "av_td3.config",
}

register_envs()


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'av_td3' has no attribute {name!r}")

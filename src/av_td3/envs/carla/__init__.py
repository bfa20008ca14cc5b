"""The CARLA 0.9.16 backend (``av_td3/Carla-v0``); see ``env.py`` and docs/carla.md."""

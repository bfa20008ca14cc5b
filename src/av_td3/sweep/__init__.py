"""Sweeps: a grid of settings x seeds, each trial an ordinary run directory, run on Ray Tune.

``spec`` reads and validates sweep files, ``runner`` drives Ray Tune, ``trial`` trains one trial,
``carla_pool`` gives each concurrent CARLA trial its own server. Aggregates: ``av_td3.report.sweep``.
"""

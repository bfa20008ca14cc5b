"""Errors of the CARLA backend that are the user's to fix (the CLI reports them in one line, exit 2)."""

from __future__ import annotations


class CarlaUnavailableError(RuntimeError):
    """The CARLA backend cannot run: no ``carla`` package, or no server answering. The message says how
    to fix it."""


class CarlaNotInstalledError(CarlaUnavailableError):
    """``import carla`` failed; install the ``[carla]`` extra."""


class CarlaConnectionError(CarlaUnavailableError):
    """No CARLA server answered at host:port within the time-out (after the allowed retries)."""

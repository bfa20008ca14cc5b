"""Which torch device a run uses; shared by the agents (a CUDA agent without a GPU) and the training setup."""

from __future__ import annotations

__all__ = ["DeviceUnavailableError", "resolve_device"]


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine."""


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; asking for CUDA without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu or auto")
    return requested

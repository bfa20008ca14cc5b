"""Gradient and weight statistics for the agent, kept as tensors in the hot path (no host sync).

``train()`` returns 0-d tensors; converting them to Python floats (``float(t)`` / ``t.item()`` /
``to_floats``) waits for the device, so a trainer does it only when it logs (every
``logging.log_interval`` updates). On CPU the conversion is free; on GPU it is the only sync.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch


def grad_norm(params: Iterable[torch.Tensor], max_norm: float | None = None) -> torch.Tensor:
    """Total L2 norm of the parameters' gradients (0-d tensor), clipping them to ``max_norm`` if given.

    Parameters without a gradient are skipped; the norm is measured before clipping.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    norms = torch._foreach_norm([p.grad for p in params])  # one fused pass over all gradients
    return torch.linalg.vector_norm(torch.stack(norms))


def to_floats(stats: Mapping[str, Any]) -> dict[str, float]:
    """``{name: 0-d tensor}`` -> ``{name: float}`` (one device sync; call it when logging)."""
    return {k: float(v) for k, v in stats.items()}


def per_parameter_grad_norms(params: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """``{name: ||grad||}`` for every parameter, ``None`` where it received no gradient."""
    return {name: (None if p.grad is None else float(p.grad.detach().norm())) for name, p in params.items()}


def relative_weight_change(
    params: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]
) -> tuple[dict[str, float], float]:
    """Per parameter ``||W - W0|| / ||W0||``, and the same over all parameters together."""
    changes, diff_sq, ref_sq = {}, 0.0, 0.0
    for name, p in params.items():
        w0 = initial[name].to(p.device)
        d, r = float((p.detach() - w0).norm()) ** 2, float(w0.norm()) ** 2
        changes[name] = math.sqrt(d / r) if r > 0 else math.sqrt(d)
        diff_sq, ref_sq = diff_sq + d, ref_sq + r
    return changes, (math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else math.sqrt(diff_sq))

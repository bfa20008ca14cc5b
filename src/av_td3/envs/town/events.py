"""Ego events measured against the town: collision with NPC boxes, lane invasion and off-road.

* Collision: the ego footprint (oriented rectangle) overlaps an NPC footprint (separating-axis test,
  vectorised over the few NPCs whose centres are close enough to touch).
* Lane invasion: a lane marking (centre or edge line) lies in the space between the ego's wheels this
  step, as CARLA's lane-invasion sensor defines it: a point of the outline of the rectangle spanned by
  the four wheels (wheelbase x track, sampled every ~0.2 m, finer than the 0.4 m markings) is on a
  marking. (A line crossing under the car must cross that outline.)
* Off-road (surface): the ego centre is not on a drivable cell. The task adds the lateral limit.
"""

from __future__ import annotations

import math

import numpy as np

from av_td3.envs.town.camera import Boxes
from av_td3.envs.town.map import EDGE_LINE, ROAD, TownMap
from av_td3.envs.town.vehicle import VehicleParams

__all__ = ["EgoEvents"]


def _outline(length: float, width: float, step: float) -> np.ndarray:
    """``(P, 2)`` points (x forward, y left) along a centred rectangle's outline, plus its centre last."""
    hl, hw = 0.5 * length, 0.5 * width
    nl = max(2, int(math.ceil(length / step)) + 1)
    nw = max(2, int(math.ceil(width / step)) + 1)
    xs = np.linspace(-hl, hl, nl)
    ys = np.linspace(-hw, hw, nw)
    pts = np.concatenate(
        [
            np.stack([xs, np.full(nl, hw)], 1),
            np.stack([xs, np.full(nl, -hw)], 1),
            np.stack([np.full(nw, hl), ys], 1),
            np.stack([np.full(nw, -hl), ys], 1),
            np.zeros((1, 2)),
        ]
    )
    return pts


class EgoEvents:
    """Event checks for one ego vehicle on one map."""

    def __init__(self, town: TownMap, params: VehicleParams):
        self.map = town
        self.params = params
        self._outline = _outline(params.wheelbase_m, params.track_m, 0.9 * town.res_m)
        self._half = (0.5 * params.length_m, 0.5 * params.width_m)
        self._diag = math.hypot(params.length_m, params.width_m)

    def surface(self, x: float, y: float, yaw: float) -> tuple[bool, bool]:
        """``(lane_invasion, off_road)`` from the material under the wheel outline and the centre."""
        c, s = math.cos(yaw), math.sin(yaw)
        p = self._outline
        wx = x + p[:, 0] * c - p[:, 1] * s
        wy = y + p[:, 0] * s + p[:, 1] * c
        mat = self.map.material_at(wx, wy)
        return bool(np.any(mat[:-1] >= EDGE_LINE)), bool(mat[-1] < ROAD)

    def collision(self, x: float, y: float, yaw: float, others: Boxes) -> bool:
        """True if the ego rectangle at ``(x, y, yaw)`` overlaps any of the ``others`` rectangles."""
        if len(others.x) == 0:
            return False
        reach = 0.5 * (self._diag + np.hypot(others.length, others.width))
        dx, dy = others.x - x, others.y - y
        near = np.flatnonzero(dx * dx + dy * dy < reach * reach)
        if len(near) == 0:
            return False
        dx, dy = dx[near], dy[near]
        ca, sa = math.cos(yaw), math.sin(yaw)
        cb, sb = others.cos[near], others.sin[near]
        hla, hwa = self._half
        hlb, hwb = 0.5 * others.length[near], 0.5 * others.width[near]
        separated = np.zeros(len(near), dtype=bool)
        # Separating axes: ego forward/left, other forward/left.
        for axx, axy in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
            dist = np.abs(dx * axx + dy * axy)
            ra = hla * np.abs(ca * axx + sa * axy) + hwa * np.abs(-sa * axx + ca * axy)
            rb = hlb * np.abs(cb * axx + sb * axy) + hwb * np.abs(-sb * axx + cb * axy)
            separated |= dist > ra + rb
        return bool(np.any(~separated))

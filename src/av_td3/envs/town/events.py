"""Ego events measured against the town: collision with NPC boxes, lane invasion and off-road.

* Collision: the ego footprint (oriented rectangle) overlaps an NPC footprint (separating-axis test,
  vectorised over the few NPCs whose centres are close enough to touch).
* Lane invasion: a lane boundary (centre or edge line) lies in the space between the ego's wheels this
  step, as CARLA's lane-invasion sensor defines it. The boundary is ``raster.lane_line``: the middle of each
  marking, one 0.2 m cell wide, *continuous* along a broken centre line (crossing a broken line is an
  invasion in CARLA too; testing only the painted dashes would miss a car straddling the line with both
  axles in a 3 m gap). The test is a point grid over the whole wheel rectangle (wheelbase x track),
  edges included, spaced at most ``0.9 * RASTER_RES_M / sqrt(2)`` (0.13 m) along both axes: every point
  of the rectangle is within 0.09 m of a grid point, less than half a cell, so any line cell under the
  wheels holds a grid point. ~300 points, one gather per step.
* Off-road (surface): the ego centre is not on a drivable cell. The task adds the lateral limit.
"""

from __future__ import annotations

import math

import numpy as np

from av_td3.envs.town.camera import Boxes
from av_td3.envs.town.raster import ROAD, Raster
from av_td3.envs.town.vehicle import VehicleParams

__all__ = ["EgoEvents", "boxes_overlap"]


def _footprint_grid(length: float, width: float, step: float) -> np.ndarray:
    """``(P, 2)`` points (x forward, y left) on a grid covering a centred rectangle, edges included,
    spaced at most ``step`` along each axis; the centre ``(0, 0)`` is appended last."""
    hl, hw = 0.5 * length, 0.5 * width
    xs = np.linspace(-hl, hl, max(2, int(math.ceil(length / step)) + 1))
    ys = np.linspace(-hw, hw, max(2, int(math.ceil(width / step)) + 1))
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return np.concatenate([np.stack([gx.ravel(), gy.ravel()], 1), np.zeros((1, 2))])


def boxes_overlap(
    ax, ay, acos, asin, alength, awidth, bx, by, bcos, bsin, blength, bwidth
) -> np.ndarray:
    """Whether oriented rectangles A and B overlap (separating-axis test); arguments broadcast.

    Each rectangle: centre ``(x, y)`` (m), heading ``(cos, sin)``, ``length`` along the heading and
    ``width`` across it (m). Touching edges count as overlapping. Returns a bool array of the broadcast
    shape (e.g. ``(n,)`` for one ego against ``n`` NPCs, ``(n, n)`` for all pairs via ``[:, None]``).
    """
    dx, dy = np.subtract(bx, ax), np.subtract(by, ay)
    hla, hwa = 0.5 * np.asarray(alength), 0.5 * np.asarray(awidth)
    hlb, hwb = 0.5 * np.asarray(blength), 0.5 * np.asarray(bwidth)
    separated = np.zeros(np.broadcast(dx, acos, bcos, hla, hlb).shape, dtype=bool)
    # Separating axes: A forward/left, B forward/left.
    for axx, axy in ((acos, asin), (-asin, acos), (bcos, bsin), (-bsin, bcos)):
        dist = np.abs(dx * axx + dy * axy)
        ra = hla * np.abs(acos * axx + asin * axy) + hwa * np.abs(-asin * axx + acos * axy)
        rb = hlb * np.abs(bcos * axx + bsin * axy) + hwb * np.abs(-bsin * axx + bcos * axy)
        separated |= dist > ra + rb
    return ~separated


class EgoEvents:
    """Event checks for one ego vehicle on one map."""

    def __init__(self, raster: Raster, params: VehicleParams):
        self.raster = raster
        self.params = params
        self._wheel_grid = _footprint_grid(params.wheelbase_m, params.track_m, 0.9 * raster.res_m / math.sqrt(2.0))
        self._line_flat = raster.lane_line.reshape(-1)
        self._cols = raster.shape[1]
        self._diag = math.hypot(params.length_m, params.width_m)

    def surface(self, x: float, y: float, yaw: float) -> tuple[bool, bool]:
        """``(lane_invasion, off_road)``: a lane boundary between the wheels; the centre off the road."""
        c, s = math.cos(yaw), math.sin(yaw)
        p = self._wheel_grid
        r, k = self.raster.world_to_cell(x + p[:, 0] * c - p[:, 1] * s, y + p[:, 0] * s + p[:, 1] * c)
        return bool(self._line_flat[r * self._cols + k].any()), bool(self.raster.material[r[-1], k[-1]] < ROAD)

    def collision(self, x: float, y: float, yaw: float, others: Boxes) -> bool:
        """True if the ego rectangle at ``(x, y, yaw)`` overlaps any of the ``others`` rectangles."""
        if len(others.x) == 0:
            return False
        reach = 0.5 * (self._diag + np.hypot(others.length, others.width))
        dx, dy = others.x - x, others.y - y
        near = np.flatnonzero(dx * dx + dy * dy < reach * reach)
        if len(near) == 0:
            return False
        hit = boxes_overlap(
            x, y, math.cos(yaw), math.sin(yaw), self.params.length_m, self.params.width_m,
            others.x[near], others.y[near], others.cos[near], others.sin[near], others.length[near], others.width[near],
        )
        return bool(np.any(hit))

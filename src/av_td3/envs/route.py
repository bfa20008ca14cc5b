"""Backend-agnostic route maths: a lane-centre polyline, and where a vehicle is relative to it.

Coordinate conventions (shared by every backend; a backend with another convention converts first):

* World frame: x east, y north, metres (right-handed, viewed from above). Yaw is measured
  counter-clockwise from +x, radians. (CARLA's world is left-handed with yaw clockwise: its adapter
  passes ``(x, -y, -yaw)``.)
* Vehicle frame: x forward, y RIGHT, metres. A world offset ``(dx, dy)`` seen from a vehicle with yaw
  ``psi`` is ``forward = dx cos(psi) + dy sin(psi)``, ``right = dx sin(psi) - dy cos(psi)``.
* Lateral deviation: signed distance from the route's lane centre, positive when the vehicle is to the
  RIGHT of the centre line when facing along the route (in right-hand traffic: toward the kerb).
* Heading error: vehicle yaw minus the route tangent, wrapped to ``[-pi, pi)``; positive = the
  vehicle points left of the route (counter-clockwise), so it is drifting left if it keeps going.

Typical use::

    route = Route(points_xy, spacing_m=2.0)      # resampled to uniform spacing
    route.reset()                                # start tracking from the first waypoint
    p = route.project(x, y, yaw)                 # RouteProjection (progress, lateral, heading error)
    ahead = route.waypoints_ahead(x, y, yaw, 10) # (10, 2) next waypoints as (x forward, y right)

Why stateful tracking: a route may pass near itself (loops, a road and its opposite lane, overlapping
segments in a junction). A global nearest-point search could jump to the wrong part of the route, so
``project`` only searches a window around the last matched segment (a little behind, more ahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Route", "RouteProjection", "resample_polyline", "world_to_vehicle"]


@dataclass(frozen=True)
class RouteProjection:
    """Where a pose lies relative to the route.

    Attributes:
        progress_m: arc length of the projection along the route, clamped to ``[0, length_m]``.
        completion: ``progress_m / length_m`` in ``[0, 1]``.
        lateral_m: signed lateral deviation, m, positive = right of the lane centre.
        heading_error_rad: vehicle yaw minus route tangent, wrapped to ``[-pi, pi)`` (the tangent is
            interpolated between waypoint tangents, so it turns smoothly along bends).
        segment: index of the matched segment (waypoint ``segment`` to ``segment + 1``).
        tangent_rad: route tangent yaw at the projection, radians.
        remaining_m: ``length_m - progress_m``.
    """

    progress_m: float
    completion: float
    lateral_m: float
    heading_error_rad: float
    segment: int
    tangent_rad: float
    remaining_m: float


def world_to_vehicle(points_xy: np.ndarray, x: float, y: float, yaw: float) -> np.ndarray:
    """World points ``(M, 2)`` to the vehicle frame ``(M, 2)`` as ``(x forward, y right)``, metres."""
    c, s = math.cos(yaw), math.sin(yaw)
    d = np.asarray(points_xy, dtype=np.float64) - (x, y)
    out = np.empty_like(d)
    out[:, 0] = d[:, 0] * c + d[:, 1] * s
    out[:, 1] = d[:, 0] * s - d[:, 1] * c
    return out


def _clean_polyline(points_xy: np.ndarray) -> np.ndarray:
    """Validate a ``(M, 2)`` polyline and drop consecutive duplicate points."""
    pts = np.asarray(points_xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"a route needs a (M >= 2, 2) array of x, y waypoints, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("route waypoints must be finite")
    seg = np.hypot(*np.diff(pts, axis=0).T)
    pts = pts[np.concatenate([[True], seg > 1e-9])]
    if len(pts) < 2:
        raise ValueError("route waypoints are all the same point")
    return pts


def resample_polyline(points_xy: np.ndarray, spacing_m: float) -> np.ndarray:
    """Resample a polyline ``(M, 2)`` at uniform arc-length spacing; keeps both end points.

    Consecutive duplicate points are dropped first. Returns ``(K, 2)`` float64 with ``K >= 2``; the last
    spacing may be shorter than ``spacing_m``.
    """
    if spacing_m <= 0:
        raise ValueError(f"spacing_m must be > 0, got {spacing_m}")
    pts = _clean_polyline(points_xy)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    length = cum[-1]
    n = max(1, int(math.ceil(length / spacing_m - 1e-9)))
    s = np.minimum(np.arange(n + 1) * spacing_m, length)
    s[-1] = length
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)


class Route:
    """A route as lane-centre waypoints at uniform spacing, with monotone-safe pose projection.

    Args:
        points_xy: ``(M, 2)`` lane-centre polyline in world metres, in driving order.
        spacing_m: waypoint spacing after resampling, m (``None`` keeps the points as given).
        search_back_m / search_ahead_m: projection window around the last matched segment, m.

    Attributes:
        waypoints: ``(K, 2)`` float64 world waypoints.
        headings: ``(K - 1,)`` yaw of each segment, radians.
        cumulative_m: ``(K,)`` arc length at each waypoint, m.
        length_m: total length, m.
        spacing_m: nominal waypoint spacing, m.
    """

    def __init__(
        self,
        points_xy: np.ndarray,
        spacing_m: float | None = 2.0,
        search_back_m: float = 6.0,
        search_ahead_m: float = 20.0,
    ):
        if spacing_m is None:
            pts = _clean_polyline(points_xy)
            spacing_m = float(np.mean(np.hypot(*np.diff(pts, axis=0).T)))
        else:
            pts = resample_polyline(points_xy, spacing_m)
        self.waypoints = pts
        self.spacing_m = float(spacing_m)
        d = np.diff(pts, axis=0)
        self._seg_len = np.hypot(d[:, 0], d[:, 1])
        self._seg_dir = d / self._seg_len[:, None]
        self.headings = np.arctan2(d[:, 1], d[:, 0])
        # Tangent at each waypoint = mean of the adjacent segment headings; along a segment the tangent
        # is interpolated between its end waypoints, so on bends the heading error is smooth instead of
        # a saw-tooth of +-(turn per segment)/2.
        turn = _wrap_array(np.diff(self.headings))
        vertex = np.concatenate([[self.headings[0]], self.headings[:-1] + 0.5 * turn, [self.headings[-1]]])
        self._tangent0 = vertex[:-1]
        self._tangent_turn = _wrap_array(vertex[1:] - vertex[:-1])
        self.cumulative_m = np.concatenate([[0.0], np.cumsum(self._seg_len)])
        self.length_m = float(self.cumulative_m[-1])
        self._back = max(1, int(math.ceil(search_back_m / self.spacing_m)))
        self._ahead = max(2, int(math.ceil(search_ahead_m / self.spacing_m)))
        self._segment = 0

    # ------------------------------------------------------------------------------------------
    @property
    def num_segments(self) -> int:
        return len(self._seg_len)

    @property
    def segment(self) -> int:
        """Index of the segment matched by the last ``project`` call."""
        return self._segment

    def reset(self, segment: int = 0) -> None:
        """Restart tracking at ``segment`` (0 = the route start)."""
        self._segment = int(np.clip(segment, 0, self.num_segments - 1))

    def localize(self, x: float, y: float) -> int:
        """Global nearest-segment search (use once, e.g. at spawn); sets and returns the tracked segment."""
        self._segment = self._nearest_segment(x, y, 0, self.num_segments)
        return self._segment

    def point_at(self, progress_m: float) -> tuple[float, float, float]:
        """World ``(x, y, tangent yaw)`` at arc length ``progress_m`` (clamped; tangent as in ``project``)."""
        s = float(np.clip(progress_m, 0.0, self.length_m))
        i = int(np.clip(np.searchsorted(self.cumulative_m, s, side="right") - 1, 0, self.num_segments - 1))
        t = s - self.cumulative_m[i]
        p = self.waypoints[i] + self._seg_dir[i] * t
        return float(p[0]), float(p[1]), self._tangent(i, t)

    def _tangent(self, i: int, t: float) -> float:
        """Route tangent yaw ``t`` metres along segment ``i`` (interpolated between waypoint tangents)."""
        frac = min(max(t / float(self._seg_len[i]), 0.0), 1.0)
        return float(_wrap(self._tangent0[i] + frac * self._tangent_turn[i]))

    # ------------------------------------------------------------------------------------------
    def _nearest_segment(self, x: float, y: float, lo: int, hi: int) -> int:
        a = self.waypoints[lo:hi]
        u = self._seg_dir[lo:hi]
        rel_x = x - a[:, 0]
        rel_y = y - a[:, 1]
        t = np.minimum(np.maximum(rel_x * u[:, 0] + rel_y * u[:, 1], 0.0), self._seg_len[lo:hi])
        ex = rel_x - t * u[:, 0]
        ey = rel_y - t * u[:, 1]
        # argmin returns the first minimum, so ties resolve to the earlier segment.
        return lo + int(np.argmin(ex * ex + ey * ey))

    def project(self, x: float, y: float, yaw: float, update: bool = True) -> RouteProjection:
        """Project a pose onto the route, searching near the last matched segment.

        Before the first waypoint and beyond the last one the end segments are extended, so lateral
        deviation and heading error stay meaningful; progress is clamped to ``[0, length_m]``.

        Args:
            x, y: world position, m.  yaw: world yaw, radians (CCW from +x).
            update: remember the matched segment for the next call (False = a pure query).
        """
        lo = max(0, self._segment - self._back)
        hi = min(self.num_segments, self._segment + self._ahead + 1)
        i = self._nearest_segment(x, y, lo, hi)
        if update:
            self._segment = i
        ax, ay = self.waypoints[i]
        ux, uy = self._seg_dir[i]
        rx, ry = x - ax, y - ay
        t = rx * ux + ry * uy
        # Interior segments clamp; the first/last segment extends backward/forward past the route ends.
        if i > 0:
            t = max(t, 0.0)
        if i < self.num_segments - 1:
            t = min(t, float(self._seg_len[i]))
        # Right-hand normal of the tangent (ux, uy) is (uy, -ux).
        lateral = (rx - t * ux) * uy - (ry - t * uy) * ux
        progress = min(max(float(self.cumulative_m[i] + t), 0.0), self.length_m)
        tangent = self._tangent(i, t)
        return RouteProjection(
            progress_m=progress,
            completion=progress / self.length_m,
            lateral_m=float(lateral),
            heading_error_rad=float(_wrap(yaw - tangent)),
            segment=i,
            tangent_rad=tangent,
            remaining_m=self.length_m - progress,
        )

    def waypoints_ahead(self, x: float, y: float, yaw: float, n: int, progress_m: float | None = None) -> np.ndarray:
        """The next ``n`` waypoints strictly ahead of the projection, in the vehicle frame.

        Args:
            x, y, yaw: the vehicle pose (world).
            n: number of waypoints.
            progress_m: progress to start from (default: project the pose without updating tracking).

        Returns:
            ``(n, 2)`` float64 as ``(x forward, y right)``, metres. Past the route's end the last waypoint
            (the goal) is repeated, so the goal is always visible.
        """
        if progress_m is None:
            progress_m = self.project(x, y, yaw, update=False).progress_m
        start = int(np.searchsorted(self.cumulative_m, progress_m + 1e-6, side="right"))
        idx = np.minimum(np.arange(start, start + n), len(self.waypoints) - 1)
        return world_to_vehicle(self.waypoints[idx], x, y, yaw)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def _wrap_array(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi

"""Cameras: a front perspective camera and top-down views, all by sampling the map raster.

Why it is fast: the camera is fixed to the car, so every image pixel below the horizon always sees
the same ground point in the VEHICLE frame (x forward, y right). Those points are computed once; per
step they are rotated/translated into the world with one small matrix product, turned into raster
indices and gathered with integer indexing (``take``). Vehicles are then drawn on top: in the front
view as the screen-space bounding rectangles of their projected 3-D boxes (far to near, one shade), in
top-down views as filled rotated rectangles.

Front camera: CARLA's usual mount, ``x = 1.6 m`` ahead of the vehicle centre, ``z = 1.5 m``, 90 deg
horizontal FOV, configurable pitch (negative looks down), grayscale ``(H, W)`` uint8.
Top-down (BEV): ego-centred and heading-up, the ego in the lower part of the image.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from av_td3.envs.town.raster import CENTRE_LINE, EDGE_LINE, GRASS, ROAD, SIDEWALK, Raster

__all__ = ["Boxes", "FrontCamera", "TopDownCamera", "GRAY", "RGB"]


class Boxes(NamedTuple):
    """Vehicles to draw, ``(n,)`` arrays: centre ``x``, ``y`` (m), heading ``cos``/``sin``, ``length``/``width`` (m)."""

    x: np.ndarray
    y: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    length: np.ndarray
    width: np.ndarray


#: Grayscale shades (uint8) of materials and objects.
GRAY = {GRASS: 60, SIDEWALK: 140, ROAD: 95, EDGE_LINE: 215, CENTRE_LINE: 180, "sky": 200, "npc": 20, "ego": 255}
#: Colours for ``render()``.
RGB = {
    GRASS: (62, 112, 52), SIDEWALK: (170, 168, 160), ROAD: (85, 85, 90), EDGE_LINE: (240, 240, 240),
    CENTRE_LINE: (235, 195, 40), "npc": (40, 90, 200), "ego": (220, 40, 40),
    "route": (60, 220, 90),
}

#: Vehicles farther than this are not drawn in the front view (at 84 px they would be ~1-2 px), m.
_MAX_BOX_RANGE_M = 60.0


def _lut(table: dict, channels: int) -> np.ndarray:
    lut = np.zeros((256, channels) if channels > 1 else 256, dtype=np.uint8)
    for k in (GRASS, SIDEWALK, ROAD, EDGE_LINE, CENTRE_LINE):
        lut[k] = table[k]
    return lut


class _GroundSampler:
    """Gathers map colours at fixed vehicle-frame ground points, for any ego pose.

    Args:
        raster: the town's material raster (``TownMap.raster``).
        points: ``(n, 2)`` vehicle-frame ground points (x forward, y right), m.
        channels: 1 (grayscale) or 3 (RGB).
    """

    def __init__(self, raster: Raster, points: np.ndarray, channels: int):
        self.raster = raster
        res = raster.res_m
        self._design = np.concatenate([points, np.ones((len(points), 1))], axis=1).astype(np.float32)
        self._inv_res = 1.0 / res
        self._rows, self._cols = raster.shape
        lut = _lut(GRAY if channels == 1 else RGB, channels)
        # Pre-coloured raster: one gather per pixel instead of material gather + LUT gather.
        self._colour = lut[raster.material_flat]
        # int32 indices: the raster has < 2**31 cells, and int32 conversion/arithmetic is cheaper.
        self._idx = np.empty(len(points), dtype=np.int32)
        self._m = np.empty((3, 2), dtype=np.float32)

    def sample(self, x: float, y: float, yaw: float) -> np.ndarray:
        """Colours ``(n,)`` or ``(n, 3)`` uint8 at the ground points for an ego at ``(x, y, yaw)``."""
        c, s, k = math.cos(yaw), math.sin(yaw), self._inv_res
        m = self._m
        # col = (x + fwd c + right s - ox) / res ; row = (y + fwd s - right c - oy) / res
        m[0, 0], m[1, 0], m[2, 0] = c * k, s * k, (x - self.raster.origin_x) * k
        m[0, 1], m[1, 1], m[2, 1] = s * k, -c * k, (y - self.raster.origin_y) * k
        cr = (self._design @ m).astype(np.int32)
        col, row = cr[:, 0], cr[:, 1]
        np.maximum(col, 0, out=col)
        np.minimum(col, self._cols - 1, out=col)
        np.maximum(row, 0, out=row)
        np.minimum(row, self._rows - 1, out=row)
        np.multiply(row, self._cols, out=self._idx)
        self._idx += col
        return self._colour.take(self._idx, axis=0)


class FrontCamera:
    """Front perspective camera rendering grayscale ``(H, W)`` uint8 frames.

    Args:
        raster: the town's material raster (``TownMap.raster``).
        height, width: image size, pixels.
        pitch_deg: camera pitch (negative looks down).
        fov_deg: horizontal field of view.
        mount: ``(x forward, z up)`` of the camera relative to the vehicle centre on the ground, m.
    """

    def __init__(
        self, raster: Raster, height: int, width: int, pitch_deg: float = -10.0, fov_deg: float = 90.0,
        mount: tuple[float, float] = (1.6, 1.5),
    ):
        self.h, self.w = height, width
        self.focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
        self.mount = mount
        th = math.radians(pitch_deg)
        self._f = np.array([math.cos(th), 0.0, math.sin(th)])  # optical axis (vehicle frame x, y_right, z)
        self._u = np.array([-math.sin(th), 0.0, math.cos(th)])  # image up
        jj, ii = np.meshgrid(np.arange(width), np.arange(height))
        xn = (jj + 0.5 - 0.5 * width) / self.focal
        yn = (ii + 0.5 - 0.5 * height) / self.focal
        d = self._f[None, None] + xn[..., None] * np.array([0.0, 1.0, 0.0]) - yn[..., None] * self._u[None, None]
        ground = d[..., 2] < -1e-6
        # With no roll, ground pixels form whole rows at the bottom: one contiguous block in flat order.
        rows_ground = ground.all(axis=1)
        self._first = int(np.argmax(rows_ground)) if rows_ground.any() else height
        g = slice(self._first * width, None)
        t = -mount[1] / d[..., 2].reshape(-1)[g]
        pts = np.stack([mount[0] + t * d[..., 0].reshape(-1)[g], t * d[..., 1].reshape(-1)[g]], axis=1)
        self._sampler = _GroundSampler(raster, pts, 1)
        self._template = np.full(height * width, GRAY["sky"], dtype=np.uint8)

    def render(self, x: float, y: float, yaw: float, npcs: "Boxes | None" = None) -> np.ndarray:
        """Frame ``(H, W)`` uint8 for an ego at ``(x, y, yaw)`` with the vehicles ``npcs`` drawn."""
        img = self._template.copy()
        img[self._first * self.w :] = self._sampler.sample(x, y, yaw)
        img = img.reshape(self.h, self.w)
        if npcs is not None and len(npcs.x):
            self._draw_boxes(img, x, y, yaw, npcs)
        return img

    def _draw_boxes(self, img: np.ndarray, ex: float, ey: float, eyaw: float, b: "Boxes", height_m: float = 1.5) -> None:
        """Fill, far to near, the screen rectangle bounding each visible NPC's 3-D box.

        The box is taken as its footprint's extent in the camera's ground frame (forward, right) times
        [0, height]; the rectangle spans the projections of those 8 corners. Only a few vehicles are
        ever in view, so after one vectorised visibility test the rest is scalar Python (cheaper than
        a dozen numpy calls on 1-5 elements).
        """
        c, s = math.cos(eyaw), math.sin(eyaw)
        dx, dy = b.x - ex, b.y - ey
        fwd = dx * c + dy * s
        right = dx * s - dy * c
        vis = np.flatnonzero((fwd > -3.0) & (fwd < _MAX_BOX_RANGE_M) & (np.abs(right) < fwd + 6.0))
        if len(vis) == 0:
            return
        f0, f2, u0, u2 = self._f[0], self._f[2], self._u[0], self._u[2]
        zb, zt = -self.mount[1], height_m - self.mount[1]
        cw, ch, focal = 0.5 * self.w, 0.5 * self.h, self.focal
        mx = self.mount[0]
        rects = []
        for k in vis.tolist():
            fk, rk = float(fwd[k]) - mx, float(right[k])
            bc, bs = float(b.cos[k]), float(b.sin[k])
            rc, rs = abs(bc * c + bs * s), abs(bs * c - bc * s)  # |cos|, |sin| of the relative yaw
            hl, hw = 0.5 * float(b.length[k]), 0.5 * float(b.width[k])
            ef, er = hl * rc + hw * rs, hl * rs + hw * rc  # half extents along forward / right
            umin = vmin = math.inf
            umax = vmax = -math.inf
            front = False
            for xf in (fk - ef, fk + ef):
                for z in (zb, zt):
                    depth = xf * f0 + z * f2
                    front = front or depth > 0.3
                    inv = focal / max(depth, 0.3)  # corners behind the lens: clamp (box fills the edge)
                    ua, ub = (rk - er) * inv, (rk + er) * inv
                    v = (xf * u0 + z * u2) * inv
                    umin, umax = min(umin, ua), max(umax, ub)
                    vmin, vmax = min(vmin, v), max(vmax, v)
            if front:
                rects.append((fk, int(ch - vmax), int(ch - vmin + 1.0), int(cw + umin), int(cw + umax + 1.0)))
        shade = GRAY["npc"]
        for _, v0, v1, a0, a1 in sorted(rects, reverse=True):  # painter's order: far first
            img[max(v0, 0) : max(v1, 0), max(a0, 0) : max(a1, 0)] = shade


class TopDownCamera:
    """Ego-centred, heading-up top-down view (BEV).

    Args:
        raster: the town's material raster (``TownMap.raster``).
        height, width: image size, pixels.
        behind_m, ahead_m: ground range behind/ahead of the ego centre shown vertically, m.
        channels: 1 = grayscale (observation), 3 = RGB (``render()``).
    """

    def __init__(
        self, raster: Raster, height: int, width: int, behind_m: float = 10.0, ahead_m: float = 30.0,
        channels: int = 1,
    ):
        self.h, self.w, self.channels = height, width, channels
        self.mpp = (behind_m + ahead_m) / height  # metres per pixel (square pixels)
        self.ahead_m = ahead_m
        ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        fwd = ahead_m - (ii + 0.5) * self.mpp
        right = (jj + 0.5 - 0.5 * width) * self.mpp
        self._sampler = _GroundSampler(raster, np.stack([fwd.ravel(), right.ravel()], 1), channels)
        self._table = GRAY if channels == 1 else RGB

    def to_pixel(self, fwd: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame points to fractional ``(row, col)`` pixel coordinates."""
        return (self.ahead_m - fwd) / self.mpp - 0.5, right / self.mpp + 0.5 * self.w - 0.5

    def render(
        self, x: float, y: float, yaw: float, npcs: "Boxes | None" = None,
        ego_size: tuple[float, float] | None = None, route_xy: np.ndarray | None = None,
    ) -> np.ndarray:
        """Frame ``(H, W)`` (or ``(H, W, 3)``) uint8 for an ego at ``(x, y, yaw)``."""
        shape = (self.h, self.w) if self.channels == 1 else (self.h, self.w, 3)
        img = self._sampler.sample(x, y, yaw).reshape(shape)
        c, s = math.cos(yaw), math.sin(yaw)
        if route_xy is not None and len(route_xy):
            dx, dy = route_xy[:, 0] - x, route_xy[:, 1] - y
            r, q = self.to_pixel(dx * c + dy * s, dx * s - dy * c)
            r, q = np.round(r).astype(int), np.round(q).astype(int)
            ok = (r >= 0) & (r < self.h) & (q >= 0) & (q < self.w)
            img[r[ok], q[ok]] = self._table["route"]
        if npcs is not None and len(npcs.x):
            dx, dy = npcs.x - x, npcs.y - y
            fwd, right = dx * c + dy * s, dx * s - dy * c
            rc = npcs.cos * c + npcs.sin * s  # cos / sin of the relative yaw (CCW)
            rs = npcs.sin * c - npcs.cos * s
            for k in np.flatnonzero((np.abs(right) < 0.5 * self.w * self.mpp + 4) & (fwd < self.ahead_m + 4)
                                    & (fwd > self.ahead_m - self.h * self.mpp - 4)):
                self._fill_box(img, fwd[k], right[k], rc[k], rs[k], npcs.length[k], npcs.width[k], self._table["npc"])
        if ego_size is not None:
            self._fill_box(img, 0.0, 0.0, 1.0, 0.0, ego_size[0], ego_size[1], self._table["ego"])
        return img

    def _fill_box(self, img, fwd, right, cr, sr, length, width, value) -> None:
        """Fill a rectangle centred at vehicle-frame ``(fwd, right)``, rotated CCW by the angle with
        cosine ``cr`` and sine ``sr`` relative to the ego."""
        rad = 0.5 * math.hypot(length, width)
        r, q = self.to_pixel(np.array([fwd + rad, fwd - rad]), np.array([right - rad, right + rad]))
        r0, r1 = max(int(r[0]), 0), min(int(math.ceil(r[1])) + 1, self.h)
        q0, q1 = max(int(q[0]), 0), min(int(math.ceil(q[1])) + 1, self.w)
        if r0 >= r1 or q0 >= q1:
            return
        ii, jj = np.meshgrid(np.arange(r0, r1), np.arange(q0, q1), indexing="ij")
        pf = self.ahead_m - (ii + 0.5) * self.mpp - fwd
        pr = (jj + 0.5 - 0.5 * self.w) * self.mpp - right
        # Box axes in (fwd, right) coordinates: forward (cr, -sr), left (sr, cr) -> use |.| tests.
        along = pf * cr - pr * sr
        across = pf * sr + pr * cr
        inside = (np.abs(along) <= 0.5 * length) & (np.abs(across) <= 0.5 * width)
        img[r0:r1, q0:q1][inside] = value

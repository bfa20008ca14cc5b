"""The town's top-down material raster: grass, sidewalk, road and lane markings, and the lane boundaries
that lane invasion is tested against. Cameras sample it; event checks read it.

``material`` is a ``(rows, cols)`` uint8 grid at ``RASTER_RES_M`` per cell, row 0 = southmost
(``y = origin_y``), col 0 = westmost; codes in ``MATERIALS``. Drivable = ``material >= ROAD``,
marking = ``material >= EDGE_LINE``. The border of the raster is grass, so clipped look-ups outside the
town read grass. ``lane_line`` (bool, same grid) marks the middle line of every marking, one cell wide:
the lane boundaries that lane invasion tests the ego's wheel rectangle against (``events.py``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from av_td3.envs.town.layout import (
    CORNER_RADIUS_M,
    GRID_XS,
    GRID_YS,
    JUNCTION_RADIUS_M,
    LANE_WIDTH_M,
    RoadLayout,
    arc,
    line,
)

__all__ = ["Raster", "GRASS", "SIDEWALK", "ROAD", "EDGE_LINE", "CENTRE_LINE", "MATERIALS", "RASTER_RES_M"]

#: Raster cell size, m.
RASTER_RES_M = 0.2
SIDEWALK_WIDTH_M = 2.5
#: Markings: centre line is |d| <= 0.2 m from the road centre (broken); solid edge lines 0.1..0.5 m inside the edge.
CENTRE_LINE_HALF_M = 0.2
#: Centre-line dash pattern (paint, gap), m. Both axles fit in a 3 m gap (wheelbase 2.875 m), so lane
#: invasion tests the continuous lane boundary (``Raster.lane_line``), not the painted dashes.
DASH_M = (3.0, 3.0)
EDGE_LINE_BAND_M = (0.1, 0.5)
MARGIN_M = 20.0

GRASS, SIDEWALK, ROAD, EDGE_LINE, CENTRE_LINE = 0, 1, 2, 3, 4
MATERIALS = {"grass": GRASS, "sidewalk": SIDEWALK, "road": ROAD, "edge_line": EDGE_LINE, "centre_line": CENTRE_LINE}


class Raster:
    """Material raster of a ``RoadLayout`` (see the module docstring).

    Attributes:
        res_m: cell size, m.  origin_x, origin_y: world position of cell (0, 0)'s corner, m.
        shape: ``(rows, cols)``.  material: ``(rows, cols)`` uint8 codes (``material_flat``: its flat view).
        lane_line: ``(rows, cols)`` bool lane boundaries.
    """

    def __init__(self, layout: RoadLayout):
        res = RASTER_RES_M
        self.res_m = res
        # Half-cell offset: road centre lines (whole metres) fall on cell centres, so markings are symmetric.
        self.origin_x = min(GRID_XS) - MARGIN_M - 0.5 * res
        self.origin_y = min(GRID_YS) - MARGIN_M - 0.5 * res
        cols = int(math.ceil((max(GRID_XS) - min(GRID_XS) + 2 * MARGIN_M) / res))
        rows = int(math.ceil((max(GRID_YS) - min(GRID_YS) + 2 * MARGIN_M) / res))
        self.shape = (rows, cols)
        nodes, node_kind, neighbours = layout.nodes, layout.node_kind, layout.neighbours

        # Road centre lines: straight through junctions and pass-through joints, arcs round corners.
        centre = np.zeros(self.shape, dtype=bool)
        samples = []
        for a, b in layout.edges:
            pa, pb = nodes[a], nodes[b]
            d = (pb - pa) / np.hypot(*(pb - pa))
            ta = CORNER_RADIUS_M if node_kind[a] == "corner" else 0.0
            tb = CORNER_RADIUS_M if node_kind[b] == "corner" else 0.0
            samples.append(line(pa + d * ta, pb - d * tb))
        for k, kind in enumerate(node_kind):
            if kind == "corner":
                n0, n1 = neighbours[k]
                d0 = (nodes[k] - nodes[n0]) / np.hypot(*(nodes[k] - nodes[n0]))
                d1 = (nodes[n1] - nodes[k]) / np.hypot(*(nodes[n1] - nodes[k]))
                pts, _ = arc(nodes[k] - d0 * CORNER_RADIUS_M, d0, nodes[k] + d1 * CORNER_RADIUS_M, d1)
                samples.append(pts)
        dense, arc_s = [], []
        for pts in samples:  # densify to half a cell so the rasterised line has no gaps
            s0 = 0.0
            for p0, p1 in zip(pts[:-1], pts[1:]):
                seg = float(np.hypot(*(p1 - p0)))
                n = max(1, int(math.ceil(seg / (0.5 * res))))
                t = np.linspace(0, 1, n + 1)
                dense.append(p0 + (p1 - p0) * t[:, None])
                arc_s.append(s0 + seg * t)
                s0 += seg
        dense, arc_s = np.concatenate(dense), np.concatenate(arc_s)
        r, c = self.world_to_cell(dense[:, 0], dense[:, 1])
        centre[r, c] = True
        centre_arc = np.zeros(self.shape, dtype=np.float32)
        centre_arc[r, c] = arc_s
        dist_centre, (ri, ci) = ndimage.distance_transform_edt(~centre, return_indices=True)
        dist_centre *= res
        # Broken centre line (paint, gap): forward motion shows in the camera image.
        dashed = (centre_arc[ri, ci] % (DASH_M[0] + DASH_M[1])) < DASH_M[0]
        del ri, ci

        yy = self.origin_y + (np.arange(rows) + 0.5) * res
        xx = self.origin_x + (np.arange(cols) + 0.5) * res
        # Junctions: a paved disc (rounded inner corners between the roads), cut off at the road edge on
        # every side without a road (the closed side of a T), so that edge stays straight and its edge
        # line continuous.
        in_junction = np.zeros(self.shape, dtype=bool)
        for k, (jx, jy) in zip(layout.junction_nodes, layout.junction_xy):
            r0, r1 = np.searchsorted(yy, [jy - JUNCTION_RADIUS_M, jy + JUNCTION_RADIUS_M])
            c0, c1 = np.searchsorted(xx, [jx - JUNCTION_RADIUS_M, jx + JUNCTION_RADIUS_M])
            gx, gy = np.meshgrid(xx[c0:c1] - jx, yy[r0:r1] - jy)
            disc = np.hypot(gx, gy) <= JUNCTION_RADIUS_M
            open_dirs = {tuple(np.sign(nodes[n] - nodes[k]).astype(int)) for n in neighbours[k]}
            for dx, dy in {(1, 0), (-1, 0), (0, 1), (0, -1)} - open_dirs:
                disc &= gx * dx + gy * dy <= LANE_WIDTH_M + 1e-6  # same edge as the road: |d| <= LANE_WIDTH_M
            in_junction[r0:r1, c0:c1] |= disc

        road = (dist_centre <= LANE_WIDTH_M) | in_junction
        to_road = ndimage.distance_transform_edt(~road) * res
        to_edge = ndimage.distance_transform_edt(road) * res
        mat = np.full(self.shape, GRASS, dtype=np.uint8)
        mat[(to_road > 0) & (to_road <= SIDEWALK_WIDTH_M)] = SIDEWALK
        mat[road] = ROAD
        mat[road & (to_edge > EDGE_LINE_BAND_M[0]) & (to_edge <= EDGE_LINE_BAND_M[1])] = EDGE_LINE
        mat[road & (dist_centre <= CENTRE_LINE_HALF_M) & ~in_junction & dashed] = CENTRE_LINE
        mat[[0, -1], :] = GRASS
        mat[:, [0, -1]] = GRASS
        self.material = mat
        self.material_flat = mat.reshape(-1)
        # The lines a car crosses (lane invasion): the middle of each marking, one cell wide. Centre line:
        # the cells on the road centre line itself, gaps of the broken line included (it is one lane
        # boundary); edge line: its outer half, from its middle to the road edge (for a 0.4 m line the
        # outer ring of road cells, edge or corner neighbours).
        lane_line = road & (centre & ~in_junction)
        lane_line |= road & (to_edge > EDGE_LINE_BAND_M[0]) & (to_edge <= 0.5 * (EDGE_LINE_BAND_M[0] + EDGE_LINE_BAND_M[1]))
        lane_line[[0, -1], :] = False
        lane_line[:, [0, -1]] = False
        self.lane_line = lane_line

    def world_to_cell(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raster ``(row, col)`` int arrays for world points, clipped into the raster (border = grass)."""
        # minimum/maximum rather than np.clip: same result, a third of the call overhead on small arrays.
        r = np.minimum(np.maximum(((np.asarray(y) - self.origin_y) / self.res_m).astype(np.int64), 0), self.shape[0] - 1)
        c = np.minimum(np.maximum(((np.asarray(x) - self.origin_x) / self.res_m).astype(np.int64), 0), self.shape[1] - 1)
        return r, c

    def material_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Material codes (uint8) at world points."""
        r, c = self.world_to_cell(x, y)
        return self.material[r, c]

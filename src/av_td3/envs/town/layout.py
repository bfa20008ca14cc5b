"""The town's road layout: a Town01-like grid of junction, corner and straight nodes and the road edges
between them, plus the two polyline helpers (straight lines and quarter circles) that the lane graph
and the raster draw with.

Layout (world x east, y north, metres): a ~390 x 310 m grid of two-way roads, one 3.5 m lane each way
(right-hand traffic), with T and four-way junctions, curved corners, two pass-through joints. Roads are
axis-aligned; corners are circular arcs.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RoadLayout", "line", "arc", "LANE_WIDTH_M", "JUNCTION_RADIUS_M", "CORNER_RADIUS_M", "LANE_DS_M",
           "GRID_XS", "GRID_YS"]

LANE_WIDTH_M = 3.5
#: Lanes start/stop this far from a junction node; junctions are paved discs of this radius, cut off at
#: the road edge on a side without a road (T junctions).
JUNCTION_RADIUS_M = 8.0
#: Radius of the road centre line round a corner (inner lane 13.25 m, outer 16.75 m).
CORNER_RADIUS_M = 15.0
#: Spacing of the lane centre-line samples used by traffic, m (approximate; uniform per lane).
LANE_DS_M = 0.5

# Grid of node coordinates and the road edges between grid neighbours (some removed for T junctions,
# an inner corner and pass-through joints).
GRID_XS = (0.0, 90.0, 180.0, 290.0, 390.0)
GRID_YS = (0.0, 110.0, 200.0, 310.0)
_REMOVED = {((2, 2), (3, 2)), ((1, 2), (1, 3)), ((3, 2), (3, 3))}


def line(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Straight polyline from ``p0`` to ``p1``, sampled every ~``LANE_DS_M``: ``(K, 2)``."""
    n = max(1, int(math.ceil(np.hypot(*(p1 - p0)) / LANE_DS_M)))
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return p0 + (p1 - p0) * t


def arc(p0: np.ndarray, d0: np.ndarray, p1: np.ndarray, d1: np.ndarray) -> tuple[np.ndarray, str]:
    """Quarter circle from ``p0`` heading ``d0`` to ``p1`` heading ``d1`` (perpendicular unit vectors):
    ``((K, 2) points, "left" | "right")``; a straight line (``"straight"``) for parallel headings."""
    cross = d0[0] * d1[1] - d0[1] * d1[0]
    if abs(cross) < 1e-9:
        return line(p0, p1), "straight"
    sign = 1.0 if cross > 0 else -1.0  # +1 = left turn (counter-clockwise)
    r = float(np.hypot(*(p1 - p0))) / math.sqrt(2.0)
    left = np.array([-d0[1], d0[0]])
    centre = p0 + sign * r * left
    th0 = math.atan2(p0[1] - centre[1], p0[0] - centre[0])
    n = max(2, int(math.ceil(0.5 * math.pi * r / LANE_DS_M)))
    th = th0 + sign * np.linspace(0.0, 0.5 * math.pi, n + 1)
    pts = centre + r * np.stack([np.cos(th), np.sin(th)], axis=1)
    pts[0], pts[-1] = p0, p1  # exact ends so lanes join without gaps
    return pts, "left" if sign > 0 else "right"


class RoadLayout:
    """Nodes and road edges of the grid.

    Attributes:
        grid_index: ``(i, j)`` grid cell -> node index.  nodes: ``(V, 2)`` node positions, m.
        edges: undirected road edges ``(a, b)``.  neighbours: node -> adjacent nodes.
        node_kind: "junction" (degree >= 3), "corner" or "straight" (degree 2) per node.
        junction_nodes: node indices of the junctions.  junction_xy: their positions ``(J, 2)``, m.
        junction_of_node: ``(V,)`` node index -> junction index, or -1.
    """

    def __init__(self):
        grid = [(i, j) for j in range(len(GRID_YS)) for i in range(len(GRID_XS))]
        self.grid_index = {g: k for k, g in enumerate(grid)}
        self.nodes = np.array([[GRID_XS[i], GRID_YS[j]] for i, j in grid], dtype=np.float64)
        edges = []
        for i, j in grid:
            for di, dj in ((1, 0), (0, 1)):
                nb = (i + di, j + dj)
                if nb in self.grid_index and ((i, j), nb) not in _REMOVED:
                    edges.append((self.grid_index[(i, j)], self.grid_index[nb]))
        self.edges = edges
        nbrs: dict[int, list[int]] = {k: [] for k in range(len(grid))}
        for a, b in edges:
            nbrs[a].append(b)
            nbrs[b].append(a)
        self.neighbours = nbrs
        kinds = []
        for k in range(len(grid)):
            deg = len(nbrs[k])
            if deg >= 3:
                kinds.append("junction")
            elif deg == 2:
                d0, d1 = (self.nodes[n] - self.nodes[k] for n in nbrs[k])
                kinds.append("straight" if abs(d0[0] * d1[1] - d0[1] * d1[0]) < 1e-9 else "corner")
            else:
                raise ValueError(f"node {grid[k]} has degree {deg}: the town must have no dead ends")
        self.node_kind = kinds
        self.junction_nodes = np.array([k for k in range(len(grid)) if kinds[k] == "junction"], dtype=np.int64)
        self.junction_xy = self.nodes[self.junction_nodes]
        #: node index -> junction index (or -1).
        self.junction_of_node = np.full(len(grid), -1, dtype=np.int64)
        self.junction_of_node[self.junction_nodes] = np.arange(len(self.junction_nodes))

    @property
    def size_m(self) -> tuple[float, float]:
        """Extent of the road network (x, y), m."""
        return max(GRID_XS) - min(GRID_XS), max(GRID_YS) - min(GRID_YS)

"""The town: a Town01-like road grid, its lane graph and a top-down material raster.

Layout (world x east, y north, metres): a ~390 x 310 m grid of two-way roads, one 3.5 m lane each way
(right-hand traffic), with T and four-way junctions, curved corners, two pass-through joints, lane
markings and grass/sidewalk around. Roads are axis-aligned; corners are circular arcs.

Lane graph: every directed road edge has one lane (centre 1.75 m right of the road centre line). Lanes
stop ``JUNCTION_RADIUS_M`` before a junction node and ``CORNER_RADIUS_M`` before a corner node; connector
lanes (arcs or straight lines) join them through junctions (straight, left, right; no U-turns) and round
corners. All lane centre lines are resampled at ~``LANE_DS_M`` and concatenated into flat arrays so that
traffic can look up positions for all vehicles at once.

Raster: ``material`` is a ``(rows, cols)`` uint8 grid at ``RASTER_RES_M`` per cell, row 0 = southmost
(``y = origin_y``), col 0 = westmost; codes in ``MATERIALS``. Drivable = ``material >= ROAD``,
marking = ``material >= EDGE_LINE``. The border of the raster is grass, so clipped look-ups outside the
town read grass. ``lane_line`` (bool, same grid) marks the middle line of every marking, one cell wide:
the lane boundaries that lane invasion tests the ego's wheel rectangle against (``events.py``).

The map is immutable and built once per process (``get_town_map()``, ~1 s), then shared by every env.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "TownMap",
    "get_town_map",
    "GRASS",
    "SIDEWALK",
    "ROAD",
    "EDGE_LINE",
    "CENTRE_LINE",
    "MATERIALS",
    "LANE_WIDTH_M",
]

LANE_WIDTH_M = 3.5
#: Lanes start/stop this far from a junction node; junctions are paved discs of this radius, cut off at
#: the road edge on a side without a road (T junctions).
JUNCTION_RADIUS_M = 8.0
#: Radius of the road centre line round a corner (inner lane 13.25 m, outer 16.75 m).
CORNER_RADIUS_M = 15.0
#: Junction connectors whose centre lines come closer than this conflict (one may be used at a time), m.
CONFLICT_DISTANCE_M = 2.5
#: Spacing of the lane centre-line samples used by traffic, m (approximate; uniform per lane).
LANE_DS_M = 0.5
#: Raster cell size, m.
RASTER_RES_M = 0.2
SIDEWALK_WIDTH_M = 2.5
#: Markings: centre line is |d| <= 0.2 m from the road centre (broken); solid edge lines 0.1..0.5 m inside the edge.
CENTRE_LINE_HALF_M = 0.2
#: Centre-line dash pattern (paint, gap), m. Both axles fit in a 3 m gap (wheelbase 2.875 m), so lane
#: invasion tests the continuous lane boundary (``TownMap.lane_line``), not the painted dashes.
DASH_M = (3.0, 3.0)
EDGE_LINE_BAND_M = (0.1, 0.5)
MARGIN_M = 20.0

GRASS, SIDEWALK, ROAD, EDGE_LINE, CENTRE_LINE = 0, 1, 2, 3, 4
MATERIALS = {"grass": GRASS, "sidewalk": SIDEWALK, "road": ROAD, "edge_line": EDGE_LINE, "centre_line": CENTRE_LINE}

# Grid of node coordinates and the road edges between grid neighbours (some removed for T junctions,
# an inner corner and pass-through joints).
_XS = (0.0, 90.0, 180.0, 290.0, 390.0)
_YS = (0.0, 110.0, 200.0, 310.0)
_REMOVED = {((2, 2), (3, 2)), ((1, 2), (1, 3)), ((3, 2), (3, 3))}

#: The default route: grid nodes visited, start offset on the first lane, end offset on the last lane.
#: East along the south road, left at a T junction, right at a four-way, straight through the next: ~284 m.
DEFAULT_ROUTE_NODES = ((0, 0), (1, 0), (1, 1), (2, 1), (3, 1))
DEFAULT_ROUTE_START_M = 2.0
DEFAULT_ROUTE_END_M = 10.0


@dataclass
class Lane:
    """One lane of the graph.

    Attributes:
        kind: "road" (along an edge), "junction" (connector inside a junction) or "corner".
        points: ``(K, 2)`` centre-line samples, uniformly spaced, first = lane start.
        node: the junction/corner node index of a connector, or the end node of a road lane.
        approach: for a junction connector, the id of the road lane that enters it; else -1.
        turn: "straight", "left" or "right".
    """

    id: int
    kind: str
    points: np.ndarray
    node: int
    approach: int = -1
    turn: str = "straight"
    successors: list[int] = field(default_factory=list)

    @property
    def length(self) -> float:
        return float(np.sum(np.hypot(*np.diff(self.points, axis=0).T)))


def _line(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    n = max(1, int(math.ceil(np.hypot(*(p1 - p0)) / LANE_DS_M)))
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return p0 + (p1 - p0) * t


def _arc(p0: np.ndarray, d0: np.ndarray, p1: np.ndarray, d1: np.ndarray) -> tuple[np.ndarray, str]:
    """Quarter circle from ``p0`` heading ``d0`` to ``p1`` heading ``d1`` (perpendicular unit vectors)."""
    cross = d0[0] * d1[1] - d0[1] * d1[0]
    if abs(cross) < 1e-9:
        return _line(p0, p1), "straight"
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


class TownMap:
    """Road network, lane graph and raster of the town (see the module docstring)."""

    def __init__(self):
        self._build_nodes()
        self._build_lanes()
        self._build_flat_arrays()
        self._build_raster()

    # ------------------------------------------------------------------------------------------
    # Nodes and edges
    # ------------------------------------------------------------------------------------------
    def _build_nodes(self) -> None:
        grid = [(i, j) for j in range(len(_YS)) for i in range(len(_XS))]
        self.grid_index = {g: k for k, g in enumerate(grid)}
        self.nodes = np.array([[_XS[i], _YS[j]] for i, j in grid], dtype=np.float64)
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

    def _trim(self, node: int) -> float:
        return {"junction": JUNCTION_RADIUS_M, "corner": CORNER_RADIUS_M, "straight": 0.0}[self.node_kind[node]]

    def _lane_ends(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start point, end point and unit direction of the lane from node a to node b."""
        pa, pb = self.nodes[a], self.nodes[b]
        d = (pb - pa) / np.hypot(*(pb - pa))
        right = np.array([d[1], -d[0]]) * (0.5 * LANE_WIDTH_M)
        return pa + d * self._trim(a) + right, pb - d * self._trim(b) + right, d

    # ------------------------------------------------------------------------------------------
    # Lanes
    # ------------------------------------------------------------------------------------------
    def _build_lanes(self) -> None:
        lanes: list[Lane] = []
        self.road_lane: dict[tuple[int, int], int] = {}
        for a, b in self.edges:
            for u, v in ((a, b), (b, a)):
                p0, p1, _ = self._lane_ends(u, v)
                self.road_lane[(u, v)] = len(lanes)
                lanes.append(Lane(len(lanes), "road", _line(p0, p1), node=v))
        self.connector: dict[tuple[int, int], int] = {}
        for (u, v), lin in list(self.road_lane.items()):
            _, p0, d0 = self._lane_ends(u, v)
            for w in self.neighbours[v]:
                if w == u:
                    continue  # no U-turns
                lout = self.road_lane[(v, w)]
                p1, _, d1 = self._lane_ends(v, w)
                if self.node_kind[v] == "straight":
                    lanes[lin].successors.append(lout)
                    continue
                pts, turn = _arc(p0, d0, p1, d1)
                kind = "junction" if self.node_kind[v] == "junction" else "corner"
                cid = len(lanes)
                lanes.append(Lane(cid, kind, pts, node=v, approach=lin if kind == "junction" else -1, turn=turn))
                lanes[cid].successors.append(lout)
                lanes[lin].successors.append(cid)
                self.connector[(lin, lout)] = cid
        self.lanes = lanes

    def _build_flat_arrays(self) -> None:
        """Concatenate lane samples so positions of many vehicles are one gather (see ``lane_pose``)."""
        n = len(self.lanes)
        self.num_lanes = n
        self.lane_length = np.array([ln.length for ln in self.lanes])
        self.lane_npts = np.array([len(ln.points) for ln in self.lanes], dtype=np.int64)
        self.lane_offset = np.concatenate([[0], np.cumsum(self.lane_npts)[:-1]]).astype(np.int64)
        self.lane_ds = self.lane_length / (self.lane_npts - 1)
        self.lane_kind = np.array([{"road": 0, "junction": 1, "corner": 2}[ln.kind] for ln in self.lanes])
        self.lane_junction = np.array(
            [self.junction_of_node[ln.node] if ln.kind == "junction" else -1 for ln in self.lanes], dtype=np.int64
        )
        #: For road lanes that end at a junction: that junction's index, else -1.
        self.lane_end_junction = np.array(
            [self.junction_of_node[ln.node] if ln.kind == "road" else -1 for ln in self.lanes], dtype=np.int64
        )
        self.lane_approach = np.array([ln.approach for ln in self.lanes], dtype=np.int64)
        self.max_successors = max(len(ln.successors) for ln in self.lanes)
        self.successors = np.full((n, self.max_successors), -1, dtype=np.int64)
        for ln in self.lanes:
            self.successors[ln.id, : len(ln.successors)] = ln.successors
        self.num_successors = np.array([len(ln.successors) for ln in self.lanes], dtype=np.int64)
        if np.any(self.num_successors == 0):
            raise ValueError("every lane must have a successor")
        pts = np.concatenate([ln.points for ln in self.lanes])
        self.lane_points = pts
        d = np.diff(pts, axis=0, append=pts[-1:])
        yaw = np.arctan2(d[:, 1], d[:, 0])
        # The last sample of each lane has no segment after it: reuse the previous segment's yaw.
        last = self.lane_offset + self.lane_npts - 1
        yaw[last] = yaw[last - 1]
        self.lane_yaw = yaw
        self.lane_cos, self.lane_sin = np.cos(yaw), np.sin(yaw)
        # Flat look-up helpers for ``lane_pose``: step to the next sample, 1/spacing, last segment index.
        self.lane_delta = np.diff(pts, axis=0, append=pts[-1:])
        self.lane_inv_ds = 1.0 / self.lane_ds
        self.lane_last_seg = self.lane_npts - 2
        #: The single successor of connector / pass-through lanes (first successor otherwise).
        self.first_successor = self.successors[:, 0].copy()
        # Speed limit per lane: tighter on turns so lateral acceleration stays ~2.5 m/s^2.
        limit = np.full(n, 13.9)
        for ln in self.lanes:
            if ln.turn != "straight":
                r = float(np.hypot(*(ln.points[-1] - ln.points[0]))) / math.sqrt(2.0)
                limit[ln.id] = min(13.9, math.sqrt(2.5 * r))
        self.lane_speed_limit = limit
        self._build_conflicts()

    def _build_conflicts(self) -> None:
        """``lane_conflict[a, b]``: connectors a != b of one junction whose paths come within
        ``CONFLICT_DISTANCE_M`` (crossing, merging into one exit, or diverging from one approach)."""
        n = self.num_lanes
        conflict = np.zeros((n, n), dtype=bool)
        for j in range(len(self.junction_nodes)):
            conn = np.flatnonzero(self.lane_junction == j)
            for a in conn:
                for b in conn:
                    if a < b:
                        pa, pb = self.lanes[a].points, self.lanes[b].points
                        d = np.hypot(pa[:, None, 0] - pb[None, :, 0], pa[:, None, 1] - pb[None, :, 1]).min()
                        conflict[a, b] = conflict[b, a] = d < CONFLICT_DISTANCE_M
        self.lane_conflict = conflict

    def lane_pose(self, lane: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poses of vehicles at arc length ``s`` (>= 0) on ``lane`` (int arrays of equal shape ``(n,)``).

        Returns ``(xy, j)``: world positions ``(n, 2)`` (linear interpolation between samples) and the
        index ``j`` of each vehicle's segment start in the flat arrays, so ``lane_yaw[j]``,
        ``lane_cos[j]``, ``lane_sin[j]`` give its heading.
        """
        k = s * self.lane_inv_ds[lane]
        i = k.astype(np.int64)
        np.minimum(i, self.lane_last_seg[lane], out=i)
        j = self.lane_offset[lane] + i
        xy = self.lane_points[j] + self.lane_delta[j] * (k - i)[:, None]
        return xy, j

    # ------------------------------------------------------------------------------------------
    # Routes on the lane graph
    # ------------------------------------------------------------------------------------------
    def shortest_path(self, start_lane: int, goal_lane: int) -> list[int] | None:
        """Lane ids from ``start_lane`` to ``goal_lane`` (Dijkstra on lane lengths), or None."""
        dist = {start_lane: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, start_lane)]
        while heap:
            d, u = heapq.heappop(heap)
            if u == goal_lane:
                path = [u]
                while path[-1] != start_lane:
                    path.append(prev[path[-1]])
                return path[::-1]
            if d > dist.get(u, math.inf):
                continue
            for v in self.lanes[u].successors:
                nd = d + self.lane_length[u]
                if nd < dist.get(v, math.inf):
                    dist[v], prev[v] = nd, u
                    heapq.heappush(heap, (nd, v))
        return None

    def path_polyline(self, lanes: list[int], start_s: float, end_s: float) -> np.ndarray:
        """Centre-line polyline ``(M, 2)`` along ``lanes`` from ``start_s`` on the first to ``end_s`` on the last."""
        parts = []
        for k, lid in enumerate(lanes):
            pts = self.lanes[lid].points
            cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
            lo = start_s if k == 0 else 0.0
            hi = end_s if k == len(lanes) - 1 else cum[-1]
            inner = pts[(cum > lo) & (cum < hi)]
            ends = [np.interp([lo, hi], cum, pts[:, c]) for c in (0, 1)]
            parts += [np.array([[ends[0][0], ends[1][0]]]), inner, np.array([[ends[0][1], ends[1][1]]])]
        return np.concatenate(parts)

    def default_route(self) -> tuple[list[int], float, float]:
        """Lane ids, start offset and end offset of the fixed default route (see ``DEFAULT_ROUTE_NODES``)."""
        nodes = [self.grid_index[g] for g in DEFAULT_ROUTE_NODES]
        roads = [self.road_lane[(a, b)] for a, b in zip(nodes[:-1], nodes[1:])]
        lanes = [roads[0]]
        for a, b in zip(roads[:-1], roads[1:]):
            lanes += [self.connector[(a, b)], b]
        return lanes, DEFAULT_ROUTE_START_M, DEFAULT_ROUTE_END_M

    def random_route(
        self, rng: np.random.Generator, min_length_m: float = 100.0, max_length_m: float = 300.0
    ) -> tuple[list[int], float, float]:
        """A seeded random start/goal pair on road lanes, planned on the lane graph.

        The length is kept to ``[min_length_m, max_length_m]`` so that, like the default route, it can be
        driven at 30 km/h within the default 1000-step limit.
        """
        roads = np.flatnonzero(self.lane_kind == 0)
        for _ in range(200):
            a, b = (int(x) for x in rng.choice(roads, size=2))
            sa = float(rng.uniform(2.0, max(2.5, self.lane_length[a] - 10.0)))
            sb = float(rng.uniform(5.0, max(5.5, self.lane_length[b] - 2.0)))
            path = self.shortest_path(a, b)
            if path is None or (a == b and sb <= sa + 1.0):
                continue
            length = float(np.sum(self.lane_length[path[:-1]])) - sa + sb
            if min_length_m <= length <= max_length_m:
                return path, sa, sb
        raise RuntimeError("could not sample a random route (check min/max length)")

    # ------------------------------------------------------------------------------------------
    # Raster
    # ------------------------------------------------------------------------------------------
    def _build_raster(self) -> None:
        res = RASTER_RES_M
        self.res_m = res
        # Half-cell offset: road centre lines (whole metres) fall on cell centres, so markings are symmetric.
        self.origin_x = min(_XS) - MARGIN_M - 0.5 * res
        self.origin_y = min(_YS) - MARGIN_M - 0.5 * res
        cols = int(math.ceil((max(_XS) - min(_XS) + 2 * MARGIN_M) / res))
        rows = int(math.ceil((max(_YS) - min(_YS) + 2 * MARGIN_M) / res))
        self.shape = (rows, cols)

        # Road centre lines: straight through junctions and pass-through joints, arcs round corners.
        centre = np.zeros(self.shape, dtype=bool)
        samples = []
        for a, b in self.edges:
            pa, pb = self.nodes[a], self.nodes[b]
            d = (pb - pa) / np.hypot(*(pb - pa))
            ta = CORNER_RADIUS_M if self.node_kind[a] == "corner" else 0.0
            tb = CORNER_RADIUS_M if self.node_kind[b] == "corner" else 0.0
            samples.append(_line(pa + d * ta, pb - d * tb))
        for k, kind in enumerate(self.node_kind):
            if kind == "corner":
                n0, n1 = self.neighbours[k]
                d0 = (self.nodes[k] - self.nodes[n0]) / np.hypot(*(self.nodes[k] - self.nodes[n0]))
                d1 = (self.nodes[n1] - self.nodes[k]) / np.hypot(*(self.nodes[n1] - self.nodes[k]))
                pts, _ = _arc(self.nodes[k] - d0 * CORNER_RADIUS_M, d0, self.nodes[k] + d1 * CORNER_RADIUS_M, d1)
                samples.append(pts)
        dense, arc = [], []
        for pts in samples:  # densify to half a cell so the rasterised line has no gaps
            s0 = 0.0
            for p0, p1 in zip(pts[:-1], pts[1:]):
                seg = float(np.hypot(*(p1 - p0)))
                n = max(1, int(math.ceil(seg / (0.5 * res))))
                t = np.linspace(0, 1, n + 1)
                dense.append(p0 + (p1 - p0) * t[:, None])
                arc.append(s0 + seg * t)
                s0 += seg
        dense, arc = np.concatenate(dense), np.concatenate(arc)
        r, c = self.world_to_cell(dense[:, 0], dense[:, 1])
        centre[r, c] = True
        centre_arc = np.zeros(self.shape, dtype=np.float32)
        centre_arc[r, c] = arc
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
        for k, (jx, jy) in zip(self.junction_nodes, self.junction_xy):
            r0, r1 = np.searchsorted(yy, [jy - JUNCTION_RADIUS_M, jy + JUNCTION_RADIUS_M])
            c0, c1 = np.searchsorted(xx, [jx - JUNCTION_RADIUS_M, jx + JUNCTION_RADIUS_M])
            gx, gy = np.meshgrid(xx[c0:c1] - jx, yy[r0:r1] - jy)
            disc = np.hypot(gx, gy) <= JUNCTION_RADIUS_M
            open_dirs = {tuple(np.sign(self.nodes[n] - self.nodes[k]).astype(int)) for n in self.neighbours[k]}
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
        line = road & (centre & ~in_junction)
        line |= road & (to_edge > EDGE_LINE_BAND_M[0]) & (to_edge <= 0.5 * (EDGE_LINE_BAND_M[0] + EDGE_LINE_BAND_M[1]))
        line[[0, -1], :] = False
        line[:, [0, -1]] = False
        self.lane_line = line

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

    @property
    def size_m(self) -> tuple[float, float]:
        """Extent of the road network (x, y), m."""
        return max(_XS) - min(_XS), max(_YS) - min(_YS)


@functools.lru_cache(maxsize=1)
def get_town_map() -> TownMap:
    """The process-wide town (built on first use, ~1 s; immutable afterwards)."""
    return TownMap()

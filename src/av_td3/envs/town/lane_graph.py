"""The town's lane graph: one lane per direction of every road edge, connector lanes through junctions
and round corners, flattened into arrays that traffic reads for all vehicles at once.

Every directed road edge has one lane (centre 1.75 m right of the road centre line). Lanes stop
``JUNCTION_RADIUS_M`` before a junction node and ``CORNER_RADIUS_M`` before a corner node; connector
lanes (arcs or straight lines) join them through junctions (straight, left, right; no U-turns) and round
corners. All lane centre lines are resampled at ~``LANE_DS_M`` and concatenated into flat arrays so that
traffic can look up positions for all vehicles at once (``LaneGraph.lane_pose``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from av_td3.envs.town.layout import CORNER_RADIUS_M, JUNCTION_RADIUS_M, LANE_WIDTH_M, RoadLayout, arc, line

__all__ = ["Lane", "LaneGraph", "CONFLICT_DISTANCE_M"]

#: Junction connectors whose centre lines come closer than this conflict (one may be used at a time), m.
CONFLICT_DISTANCE_M = 2.5


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


class LaneGraph:
    """Lanes of a ``RoadLayout`` and their flat arrays (see the module docstring).

    Attributes:
        layout: the road layout.  lanes: ``Lane`` objects by id.
        road_lane: directed edge ``(a, b)`` -> road lane id.  connector: ``(lane in, lane out)`` -> connector id.
        Flat arrays over lanes ``(L,)``: ``lane_length`` (m), ``lane_kind`` (0 road, 1 junction, 2 corner),
        ``lane_junction`` / ``lane_end_junction`` (junction index or -1), ``lane_approach``,
        ``lane_speed_limit`` (m/s), ``successors`` ``(L, max_successors)`` (-1 padded), ``num_successors``,
        ``first_successor``, ``lane_conflict`` ``(L, L)`` bool. Over all samples: ``lane_points`` ``(P, 2)``,
        ``lane_yaw``/``lane_cos``/``lane_sin``.
    """

    def __init__(self, layout: RoadLayout):
        self.layout = layout
        self.junction_xy = layout.junction_xy
        self._build_lanes()
        self._build_flat_arrays()

    def _trim(self, node: int) -> float:
        return {"junction": JUNCTION_RADIUS_M, "corner": CORNER_RADIUS_M, "straight": 0.0}[self.layout.node_kind[node]]

    def _lane_ends(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start point, end point and unit direction of the lane from node a to node b."""
        pa, pb = self.layout.nodes[a], self.layout.nodes[b]
        d = (pb - pa) / np.hypot(*(pb - pa))
        right = np.array([d[1], -d[0]]) * (0.5 * LANE_WIDTH_M)
        return pa + d * self._trim(a) + right, pb - d * self._trim(b) + right, d

    def _build_lanes(self) -> None:
        layout = self.layout
        lanes: list[Lane] = []
        self.road_lane: dict[tuple[int, int], int] = {}
        for a, b in layout.edges:
            for u, v in ((a, b), (b, a)):
                p0, p1, _ = self._lane_ends(u, v)
                self.road_lane[(u, v)] = len(lanes)
                lanes.append(Lane(len(lanes), "road", line(p0, p1), node=v))
        self.connector: dict[tuple[int, int], int] = {}
        for (u, v), lin in list(self.road_lane.items()):
            _, p0, d0 = self._lane_ends(u, v)
            for w in layout.neighbours[v]:
                if w == u:
                    continue  # no U-turns
                lout = self.road_lane[(v, w)]
                p1, _, d1 = self._lane_ends(v, w)
                if layout.node_kind[v] == "straight":
                    lanes[lin].successors.append(lout)
                    continue
                pts, turn = arc(p0, d0, p1, d1)
                kind = "junction" if layout.node_kind[v] == "junction" else "corner"
                cid = len(lanes)
                lanes.append(Lane(cid, kind, pts, node=v, approach=lin if kind == "junction" else -1, turn=turn))
                lanes[cid].successors.append(lout)
                lanes[lin].successors.append(cid)
                self.connector[(lin, lout)] = cid
        self.lanes = lanes

    def _build_flat_arrays(self) -> None:
        """Concatenate lane samples so positions of many vehicles are one gather (see ``lane_pose``)."""
        junction_of_node = self.layout.junction_of_node
        n = len(self.lanes)
        self.num_lanes = n
        self.lane_length = np.array([ln.length for ln in self.lanes])
        self.lane_npts = np.array([len(ln.points) for ln in self.lanes], dtype=np.int64)
        self.lane_offset = np.concatenate([[0], np.cumsum(self.lane_npts)[:-1]]).astype(np.int64)
        self.lane_ds = self.lane_length / (self.lane_npts - 1)
        self.lane_kind = np.array([{"road": 0, "junction": 1, "corner": 2}[ln.kind] for ln in self.lanes])
        self.lane_junction = np.array(
            [junction_of_node[ln.node] if ln.kind == "junction" else -1 for ln in self.lanes], dtype=np.int64
        )
        #: For road lanes that end at a junction: that junction's index, else -1.
        self.lane_end_junction = np.array(
            [junction_of_node[ln.node] if ln.kind == "road" else -1 for ln in self.lanes], dtype=np.int64
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
        for j in range(len(self.layout.junction_nodes)):
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

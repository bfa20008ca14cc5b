"""Routes on the town's lane graph: shortest paths, the fixed default route, seeded random routes, and
the centre-line polyline along a route (what ``envs.route.Route`` is built from).

A route is ``(lanes, start_s, end_s)``: lane ids in driving order, the start offset on the first lane
and the end offset on the last, m.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from av_td3.envs.town.lane_graph import LaneGraph

__all__ = ["shortest_path", "path_polyline", "default_route", "random_route", "DEFAULT_ROUTE_NODES"]

#: The default route: grid nodes visited, start offset on the first lane, end offset on the last lane.
#: East along the south road, left at a T junction, right at a four-way, straight through the next: ~284 m.
DEFAULT_ROUTE_NODES = ((0, 0), (1, 0), (1, 1), (2, 1), (3, 1))
DEFAULT_ROUTE_START_M = 2.0
DEFAULT_ROUTE_END_M = 10.0


def shortest_path(graph: LaneGraph, start_lane: int, goal_lane: int) -> list[int] | None:
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
        for v in graph.lanes[u].successors:
            nd = d + graph.lane_length[u]
            if nd < dist.get(v, math.inf):
                dist[v], prev[v] = nd, u
                heapq.heappush(heap, (nd, v))
    return None


def path_polyline(graph: LaneGraph, lanes: list[int], start_s: float, end_s: float) -> np.ndarray:
    """Centre-line polyline ``(M, 2)`` along ``lanes`` from ``start_s`` on the first to ``end_s`` on the last."""
    parts = []
    for k, lid in enumerate(lanes):
        pts = graph.lanes[lid].points
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
        lo = start_s if k == 0 else 0.0
        hi = end_s if k == len(lanes) - 1 else cum[-1]
        inner = pts[(cum > lo) & (cum < hi)]
        ends = [np.interp([lo, hi], cum, pts[:, c]) for c in (0, 1)]
        parts += [np.array([[ends[0][0], ends[1][0]]]), inner, np.array([[ends[0][1], ends[1][1]]])]
    return np.concatenate(parts)


def default_route(graph: LaneGraph) -> tuple[list[int], float, float]:
    """Lane ids, start offset and end offset of the fixed default route (see ``DEFAULT_ROUTE_NODES``)."""
    nodes = [graph.layout.grid_index[g] for g in DEFAULT_ROUTE_NODES]
    roads = [graph.road_lane[(a, b)] for a, b in zip(nodes[:-1], nodes[1:])]
    lanes = [roads[0]]
    for a, b in zip(roads[:-1], roads[1:]):
        lanes += [graph.connector[(a, b)], b]
    return lanes, DEFAULT_ROUTE_START_M, DEFAULT_ROUTE_END_M


def random_route(
    graph: LaneGraph, rng: np.random.Generator, min_length_m: float = 100.0, max_length_m: float = 300.0
) -> tuple[list[int], float, float]:
    """A seeded random start/goal pair on road lanes, planned on the lane graph.

    The length is kept to ``[min_length_m, max_length_m]`` so that, like the default route, it can be
    driven at 30 km/h within the default 1000-step limit.
    """
    roads = np.flatnonzero(graph.lane_kind == 0)
    for _ in range(200):
        a, b = (int(x) for x in rng.choice(roads, size=2))
        sa = float(rng.uniform(2.0, max(2.5, graph.lane_length[a] - 10.0)))
        sb = float(rng.uniform(5.0, max(5.5, graph.lane_length[b] - 2.0)))
        path = shortest_path(graph, a, b)
        if path is None or (a == b and sb <= sa + 1.0):
            continue
        length = float(np.sum(graph.lane_length[path[:-1]])) - sa + sb
        if min_length_m <= length <= max_length_m:
            return path, sa, sb
    raise RuntimeError("could not sample a random route (check min/max length)")

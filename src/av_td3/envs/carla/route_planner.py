"""Route planning on the town's road graph, built from ``Map.get_topology()`` and ``Waypoint.next()``.

The pip ``carla`` wheel has no ``agents`` package (no ``GlobalRoutePlanner``), so this module builds
its own graph:

* ``Map.get_topology()`` returns pairs ``(entry, exit)`` of waypoints: a lane (section) starting at
  ``entry`` that leads to the lane starting at ``exit``. Nodes are those lane-start waypoints,
  merged by LOCATION (within ``NODE_MERGE_M``), as CARLA's own ``GlobalRoutePlanner`` does: on the
  real Town01 one exit (road 273, lane 1, a junction connector lying on top of road 257's) has a
  ``Waypoint.id`` that no pair's entry has, although road 257's entry starts at the same point, so
  ids alone would leave it a dead end. Each edge carries the lane's centre line sampled every
  ``sample_m`` metres by walking ``Waypoint.next()``, and its length.
* A lane that is only some pair's exit (a true dead end) is traced to the end of ITS lane (road and
  lane id unchanged), never on into whatever ``next()`` leads to.
* Routes are shortest paths (Dijkstra on length) between the edge a start position lies on and the
  edge a goal lies on, then resampled every ``spacing_m`` metres (``route.resample_polyline``).

Everything here is in CARLA's world frame: x, y in metres, yaw in degrees, with CARLA's left-handed
convention (x forward/east, y right/south in map view, yaw clockwise in map view). The env converts
to the route module's frame.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from av_td3.envs.route import resample_polyline

#: Lane-start waypoints closer than this are one graph node, m (lanes that start at one point are
#: successors of the same lanes; distinct lanes' starts are a lane width, >= 2.5 m, apart).
NODE_MERGE_M = 0.5


@dataclass
class Edge:
    """One lane traversal ``entry -> exit`` (graph nodes); ``points`` is its centre line ``(K, 2)``
    (x, y), m; ``lane`` the ``(road_id, lane_id)`` it starts on."""

    entry: int
    exit: int
    points: np.ndarray
    length_m: float
    lane: tuple[int, int] = (0, 0)


@dataclass
class PlannedRoute:
    """A route in CARLA's world frame.

    Attributes:
        points: ``(M, 2)`` float64 centre-line points (x, y), m, ``spacing_m`` apart, start first.
        start_yaw_deg: CARLA yaw (degrees) of the first segment: the ego's spawn heading.
        length_m: polyline length, m.
    """

    points: np.ndarray
    start_yaw_deg: float
    length_m: float


def polyline_length(points: np.ndarray) -> float:
    return float(np.sum(np.hypot(*np.diff(points, axis=0).T))) if len(points) > 1 else 0.0


def _xy(waypoint: Any) -> tuple[float, float]:
    loc = waypoint.transform.location
    return float(loc.x), float(loc.y)


def _lane_key(waypoint: Any) -> tuple[int, int]:
    return int(getattr(waypoint, "road_id", 0)), int(getattr(waypoint, "lane_id", 0))


def walk_lane(entry: Any, exit: Any | None, sample_m: float, max_length_m: float = 2000.0) -> list[Any]:
    """Waypoints from ``entry`` along its lane every ``sample_m`` m until ``exit``, or, when ``exit`` is
    None, until the end of ``entry``'s own lane (same road and lane id).

    At a fork ``next()`` returns several candidates; the one nearest ``exit`` is followed.
    """
    out = [entry]
    w = entry
    ex = _xy(exit) if exit is not None else None
    for _ in range(int(max_length_m / sample_m) + 1):
        if ex is not None and math.dist(_xy(w), ex) <= sample_m * 1.01:
            break
        candidates = w.next(sample_m)
        if ex is None:  # a dead end: its own lane only
            candidates = [c for c in candidates if _lane_key(c) == _lane_key(entry)]
        if not candidates:
            break
        w = min(candidates, key=lambda c: math.dist(_xy(c), ex)) if ex is not None else candidates[0]
        out.append(w)
    if exit is not None and math.dist(_xy(out[-1]), _xy(exit)) > 1e-3:
        out.append(exit)
    return out


class RoutePlanner:
    """Road graph of one ``carla.Map`` and shortest-path routes on it.

    Args:
        carla_map: ``carla.Map`` (or a stand-in with ``get_topology`` / ``Waypoint.next``).
        spacing_m: distance between the returned route points (``env.waypoint_spacing_m``), m.
        sample_m: step used to trace lanes while building the graph, m (1 m follows junction curves).
    """

    def __init__(self, carla_map: Any, spacing_m: float, sample_m: float = 1.0):
        self.spacing_m = float(spacing_m)
        self.sample_m = float(sample_m)
        self.nodes: dict[int, int] = {}  # Waypoint.id -> node
        self._node_xyz: list[tuple[float, float, float]] = []  # node -> location, m
        self.edges: list[Edge] = []
        self._build(carla_map.get_topology())
        # flat index of every traced point, for locating positions on the graph
        self._pts = np.concatenate([e.points for e in self.edges])
        self._edge_of = np.concatenate([np.full(len(e.points), i) for i, e in enumerate(self.edges)])
        self._idx_of = np.concatenate([np.arange(len(e.points)) for e in self.edges])
        heads = []
        for e in self.edges:
            d = np.diff(e.points, axis=0)
            d = np.vstack([d, d[-1:]]) if len(d) else np.array([[1.0, 0.0]])
            heads.append(np.arctan2(d[:, 1], d[:, 0]))
        self._heading = np.concatenate(heads)
        self._dijkstra_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._out: list[list[int]] = [[] for _ in self._node_xyz]
        for i, e in enumerate(self.edges):
            self._out[e.entry].append(i)

    # --- graph -------------------------------------------------------------------------------------
    def _node(self, waypoint: Any) -> int:
        """Graph node of a lane-start waypoint: by id, else an existing node within ``NODE_MERGE_M``."""
        wid = int(waypoint.id)
        if wid in self.nodes:
            return self.nodes[wid]
        loc = waypoint.transform.location
        xyz = (float(loc.x), float(loc.y), float(getattr(loc, "z", 0.0)))
        node = next((k for k, p in enumerate(self._node_xyz) if math.dist(p, xyz) <= NODE_MERGE_M), None)
        if node is None:
            node = len(self._node_xyz)
            self._node_xyz.append(xyz)
        self.nodes[wid] = node
        return node

    def _add_edge(self, entry: Any, exit: Any | None) -> None:
        wps = walk_lane(entry, exit, self.sample_m)
        if len(wps) < 2:
            return
        pts = np.array([_xy(w) for w in wps], dtype=np.float64)
        end = exit if exit is not None else wps[-1]
        self.edges.append(
            Edge(self._node(entry), self._node(end), pts, polyline_length(pts), _lane_key(entry))
        )

    def _build(self, topology: Sequence[tuple[Any, Any]]) -> None:
        if not topology:
            raise ValueError("the map has an empty topology (no drivable lanes)")
        # entries first: an exit at an entry's location joins that node
        entries = {self._node(entry) for entry, _ in topology}
        exits = {}
        for entry, exit in topology:
            self._add_edge(entry, exit)
            exits.setdefault(self._node(exit), exit)
        # A lane without successors may appear only as some pair's exit: trace it to the end of its
        # lane, so that routes can finish on it.
        for node, w in exits.items():
            if node not in entries:
                self._add_edge(w, None)

    def _dijkstra(self, source: int) -> tuple[np.ndarray, np.ndarray]:
        """Shortest distances (m) from node ``source`` to every node, and the last edge on each path (-1: none).

        Cached per source: the graph never changes, and every reset asks again.
        """
        if source in self._dijkstra_cache:
            return self._dijkstra_cache[source]
        dist = np.full(len(self._node_xyz), np.inf)
        via = np.full(len(self._node_xyz), -1)
        dist[source] = 0.0
        heap = [(0.0, source)]
        while heap:
            d, n = heapq.heappop(heap)
            if d > dist[n]:
                continue
            for ei in self._out[n]:
                e = self.edges[ei]
                nd = d + e.length_m
                if nd < dist[e.exit]:
                    dist[e.exit], via[e.exit] = nd, ei
                    heapq.heappush(heap, (nd, e.exit))
        self._dijkstra_cache[source] = (dist, via)
        return dist, via

    # --- positions on the graph ------------------------------------------------------------------
    def locate(self, x: float, y: float, yaw_deg: float | None = None) -> tuple[int, int]:
        """``(edge, point index)`` of the traced point nearest (x, y) whose lane runs within 90 degrees of
        ``yaw_deg`` (when given: a spawn point must not snap onto the opposite lane)."""
        d2 = (self._pts[:, 0] - x) ** 2 + (self._pts[:, 1] - y) ** 2
        if yaw_deg is not None:
            dh = np.abs((self._heading - math.radians(yaw_deg) + math.pi) % (2 * math.pi) - math.pi)
            d2 = np.where(dh <= math.pi / 2, d2, np.inf)
        k = int(np.argmin(d2))
        if not np.isfinite(d2[k]):
            raise ValueError(f"no lane runs near ({x:.1f}, {y:.1f}) with yaw {yaw_deg}")
        return int(self._edge_of[k]), int(self._idx_of[k])

    def _start_options(self, located: tuple[int, int]) -> list[tuple[int, int]]:
        """A position on a lane with several successors lies on one edge per successor (the topology
        lists one pair per successor, and their traced prefixes coincide): all of them are options."""
        e, i = located
        return [(k, i) for k in self._out[self.edges[e].entry] if i < len(self.edges[k].points) - 1] or [located]

    def _shortest(self, start: tuple[int, int], goal: tuple[int, int]) -> tuple[float, int, list[int] | None]:
        """``(length m, start edge, path edges)`` of the shortest way from ``start`` to ``goal``; path
        None means "ahead on the start's own lane"; length ``inf`` when unreachable."""
        eg, i_g = goal
        best: tuple[float, int, list[int] | None] = (math.inf, start[0], None)
        for es, i_s in self._start_options(start):
            if self.edges[es].entry == self.edges[eg].entry and i_g > i_s:
                length = polyline_length(self.edges[es].points[i_s:i_g + 1])
                path = None
            else:
                dist, via = self._dijkstra(self.edges[es].exit)
                target = self.edges[eg].entry
                if not np.isfinite(dist[target]):
                    continue
                head = polyline_length(self.edges[es].points[i_s:])
                length = head + dist[target] + polyline_length(self.edges[eg].points[:i_g + 1])
                path, node = [], target
                while node != self.edges[es].exit:
                    path.append(int(via[node]))
                    node = self.edges[path[-1]].entry
                path.reverse()
            if length < best[0]:
                best = (length, es, path)
        return best

    # --- routes ------------------------------------------------------------------------------------
    def plan(self, start_xy: tuple[float, float], goal_xy: tuple[float, float], start_yaw_deg: float | None = None,
             goal_yaw_deg: float | None = None) -> PlannedRoute:
        """Shortest route from ``start_xy`` to ``goal_xy`` (CARLA world frame, m; yaws in CARLA degrees).

        Raises:
            ValueError: the goal cannot be reached from the start (one-way lanes).
        """
        start = self.locate(*start_xy, start_yaw_deg)
        eg, i_g = self.locate(*goal_xy, goal_yaw_deg)
        length, es, path = self._shortest(start, (eg, i_g))
        if not math.isfinite(length):
            raise ValueError(f"no route from {start_xy} to {goal_xy}")
        i_s = start[1]
        if path is None:
            pts = self.edges[es].points[i_s:i_g + 1]
        else:
            parts = [self.edges[es].points[i_s:]]
            parts += [self.edges[ei].points[1:] for ei in path]
            parts.append(self.edges[eg].points[1:i_g + 1])
            pts = np.concatenate(parts)
        if polyline_length(pts) < self.spacing_m:
            raise ValueError(f"route from {start_xy} to {goal_xy} is shorter than one waypoint spacing")
        pts = resample_polyline(pts, self.spacing_m)
        yaw = math.degrees(math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0]))
        return PlannedRoute(pts, yaw, polyline_length(pts))

    def route_lengths_from(self, start: Any, goals: Sequence[Any]) -> np.ndarray:
        """Route length (m, ``inf`` if unreachable or the same place) from transform ``start`` to each of ``goals``."""
        s = self.locate(start.location.x, start.location.y, start.rotation.yaw)
        out = np.full(len(goals), np.inf)
        for k, g in enumerate(goals):
            loc = self.locate(g.location.x, g.location.y, g.rotation.yaw)
            if loc != s:
                out[k] = self._shortest(s, loc)[0]
        return out

    def default_route(self, spawn_points: Sequence[Any], start_index: int, length_m: float) -> PlannedRoute:
        """From spawn point ``start_index`` (modulo their number) to the spawn point whose route length is
        nearest ``length_m`` (ties: the lower index). The same route every episode."""
        if not spawn_points:
            raise ValueError("the map has no spawn points")
        start = spawn_points[start_index % len(spawn_points)]
        lengths = self.route_lengths_from(start, spawn_points)
        if not np.isfinite(lengths).any():
            raise ValueError(f"no spawn point can be reached from spawn point {start_index}")
        goal = spawn_points[int(np.argmin(np.abs(lengths - length_m)))]
        return self._plan_transforms(start, goal)

    def random_route(self, spawn_points: Sequence[Any], rng: np.random.Generator, length_m: float) -> PlannedRoute:
        """A seeded random start, and a goal drawn among spawn points whose route length lies within
        ``[0.5, 1.5] * length_m`` (the nearest to ``length_m`` if none does)."""
        if not spawn_points:
            raise ValueError("the map has no spawn points")
        for _ in range(20):  # a start from which nothing is reachable is redrawn
            start = spawn_points[int(rng.integers(len(spawn_points)))]
            lengths = self.route_lengths_from(start, spawn_points)
            if np.isfinite(lengths).any():
                break
        else:
            raise ValueError("no two spawn points are connected")
        ok = np.flatnonzero((lengths >= 0.5 * length_m) & (lengths <= 1.5 * length_m))
        k = int(rng.choice(ok)) if len(ok) else int(np.argmin(np.abs(lengths - length_m)))
        return self._plan_transforms(start, spawn_points[k])

    def _plan_transforms(self, start: Any, goal: Any) -> PlannedRoute:
        return self.plan(
            (start.location.x, start.location.y), (goal.location.x, goal.location.y),
            start.rotation.yaw, goal.rotation.yaw,
        )

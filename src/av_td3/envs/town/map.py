"""The town: its road layout, lane graph, routes and material raster, built once per process.

``TownMap`` composes the parts, each in its own module:

* ``layout.RoadLayout``: the Town01-like grid of junction / corner / straight nodes and road edges;
* ``lane_graph.LaneGraph``: lanes, connectors and the flat arrays traffic reads (``traffic.py``);
* ``routing``: shortest paths, the default route, seeded random routes, the polyline along a route;
* ``raster.Raster``: the material grid cameras sample and the lane boundaries events test.

The map is immutable and built once per process (``get_town_map()``, ~1 s), then shared by every env.
"""

from __future__ import annotations

import functools

import numpy as np

from av_td3.envs.town import routing
from av_td3.envs.town.lane_graph import Lane, LaneGraph
from av_td3.envs.town.layout import JUNCTION_RADIUS_M, LANE_WIDTH_M, RoadLayout
from av_td3.envs.town.raster import CENTRE_LINE, EDGE_LINE, GRASS, MATERIALS, ROAD, SIDEWALK, Raster

__all__ = [
    "TownMap",
    "get_town_map",
    "Lane",
    "GRASS",
    "SIDEWALK",
    "ROAD",
    "EDGE_LINE",
    "CENTRE_LINE",
    "MATERIALS",
    "LANE_WIDTH_M",
    "JUNCTION_RADIUS_M",
]


class TownMap:
    """The town's parts (see the module docstring) and its routes.

    Attributes:
        layout: nodes and road edges.  graph: the lane graph (traffic).  raster: the material raster
        (cameras, events).
    """

    def __init__(self):
        self.layout = RoadLayout()
        self.graph = LaneGraph(self.layout)
        self.raster = Raster(self.layout)

    def shortest_path(self, start_lane: int, goal_lane: int) -> list[int] | None:
        """Lane ids from ``start_lane`` to ``goal_lane`` (Dijkstra on lane lengths), or None."""
        return routing.shortest_path(self.graph, start_lane, goal_lane)

    def path_polyline(self, lanes: list[int], start_s: float, end_s: float) -> np.ndarray:
        """Centre-line polyline ``(M, 2)`` along ``lanes`` from ``start_s`` on the first to ``end_s`` on the last."""
        return routing.path_polyline(self.graph, lanes, start_s, end_s)

    def default_route(self) -> tuple[list[int], float, float]:
        """Lane ids, start offset and end offset of the fixed default route."""
        return routing.default_route(self.graph)

    def random_route(
        self, rng: np.random.Generator, min_length_m: float = 100.0, max_length_m: float = 300.0
    ) -> tuple[list[int], float, float]:
        """A seeded random route of ``[min_length_m, max_length_m]`` (``routing.random_route``)."""
        return routing.random_route(self.graph, rng, min_length_m, max_length_m)


@functools.lru_cache(maxsize=1)
def get_town_map() -> TownMap:
    """The process-wide town (built on first use, ~1 s; immutable afterwards)."""
    return TownMap()

"""In-process stand-in for a CARLA 0.9.16 server, its client, Traffic Manager, actors and sensors.

WHY: a CARLA server needs a GPU and a docker engine; neither exists on CI or on development machines,
so no server can run here. The CARLA env's tests run against this stand-in instead. It is NOT a
simulator and proves nothing about CARLA's physics or rendering; it reproduces the API SUBSET the env
uses (names, argument order, return types, the error messages of time-outs and failed spawns,
synchronous ticking, sensor callbacks) so that the env's logic (connection, settings, spawning,
accounting, sensors -> observations, frames, faults) is tested honestly.

Value types are the real ``carla`` ones (Location, Rotation, Transform, Vector3D, VehicleControl,
WorldSettings) when ``import carla`` works, else small look-alikes with the same fields. Commands,
blueprints, actors, map and waypoints are stand-ins (the real command types only accept real actors).

Use::

    server = StandinServer()                          # a "server" on localhost:2000, map Town10HD_Opt
    env = CarlaEnv(client_factory=server, config=cfg) # the server is the client factory; it also
                                                      # carries the matching ``carla_module``

Geometry is in CARLA's frame (left-handed: x east, y south in map view, yaw degrees clockwise).
Vehicles without autopilot move with a kinematic bicycle model driven by ``apply_control``; autopilot
vehicles follow their lane centre at ``npc_speed_mps``. Sensors: the camera returns ``image_fn(frame,
camera)`` as BGRA; collision = another vehicle's centre within ``collision_distance_m``; lane invasion
= the ego's nearest lane changed outside junctions; obstacle = nearest vehicle ahead in a 1.5 m
corridor within the sensor's range.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import threading
import types
from typing import Any, Callable, Iterable

import numpy as np

# ------------------------------------------------------------------------------------------------
# Value types: the real ones when available
# ------------------------------------------------------------------------------------------------
try:
    import carla as _carla

    Vector3D = _carla.Vector3D
    Location = _carla.Location
    Rotation = _carla.Rotation
    Transform = _carla.Transform
    VehicleControl = _carla.VehicleControl
    WorldSettings = _carla.WorldSettings
    REAL_VALUE_TYPES = True
except ImportError:  # CI installs only the dev extra
    REAL_VALUE_TYPES = False

    class Vector3D:  # type: ignore[no-redef]
        def __init__(self, x: float = 0.0, y: float = 0.0, z: float = 0.0):
            self.x, self.y, self.z = float(x), float(y), float(z)

        def length(self) -> float:
            return math.sqrt(self.x**2 + self.y**2 + self.z**2)

        def distance(self, other: "Vector3D") -> float:
            return math.sqrt((self.x - other.x) ** 2 + (self.y - other.y) ** 2 + (self.z - other.z) ** 2)

        def __repr__(self) -> str:
            return f"{type(self).__name__}(x={self.x:.6f}, y={self.y:.6f}, z={self.z:.6f})"

    class Location(Vector3D):  # type: ignore[no-redef]
        pass

    class Rotation:  # type: ignore[no-redef]
        def __init__(self, pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0):
            self.pitch, self.yaw, self.roll = float(pitch), float(yaw), float(roll)

    class Transform:  # type: ignore[no-redef]
        def __init__(self, location: Any = None, rotation: Any = None):
            self.location = location if location is not None else Location()
            self.rotation = rotation if rotation is not None else Rotation()

        def get_forward_vector(self) -> Vector3D:
            y = math.radians(self.rotation.yaw)
            return Vector3D(math.cos(y), math.sin(y), 0.0)

    class VehicleControl:  # type: ignore[no-redef]
        def __init__(self, throttle=0.0, steer=0.0, brake=0.0, hand_brake=False, reverse=False,
                     manual_gear_shift=False, gear=0):
            self.throttle, self.steer, self.brake = float(throttle), float(steer), float(brake)
            self.hand_brake, self.reverse = bool(hand_brake), bool(reverse)
            self.manual_gear_shift, self.gear = bool(manual_gear_shift), int(gear)

    class WorldSettings:  # type: ignore[no-redef]
        def __init__(self, synchronous_mode=False, no_rendering_mode=False, fixed_delta_seconds=None):
            self.synchronous_mode = bool(synchronous_mode)
            self.no_rendering_mode = bool(no_rendering_mode)
            self.fixed_delta_seconds = fixed_delta_seconds


def copy_settings(s: Any) -> Any:
    return WorldSettings(
        synchronous_mode=bool(s.synchronous_mode),
        no_rendering_mode=bool(s.no_rendering_mode),
        fixed_delta_seconds=float(s.fixed_delta_seconds or 0.0),
    )


def settings_tuple(s: Any) -> tuple:
    return (bool(s.synchronous_mode), bool(s.no_rendering_mode), float(s.fixed_delta_seconds or 0.0))


def timeout_error(timeout_s: float, host: str, port: int) -> RuntimeError:
    """The exact error the real client raises when the server does not answer in time."""
    return RuntimeError(
        f"time-out of {int(round(timeout_s * 1000))}ms while waiting for the simulator, "
        f"make sure the simulator is ready and connected to {host}:{port}"
    )


# ------------------------------------------------------------------------------------------------
# Commands (carla.command subset)
# ------------------------------------------------------------------------------------------------
class FutureActor:
    """Placeholder for "the actor spawned by the parent command"."""


class _Command:
    def __init__(self) -> None:
        self.chained: list[_Command] = []

    def then(self, command: "_Command") -> "_Command":
        self.chained.append(command)
        return self


class SpawnActor(_Command):
    def __init__(self, blueprint: Any, transform: Any, parent: Any = None):
        super().__init__()
        self.blueprint, self.transform, self.parent = blueprint, transform, parent


class SetAutopilot(_Command):
    def __init__(self, actor: Any, enabled: bool, port: int = 8000):
        super().__init__()
        self.actor, self.enabled, self.port = actor, bool(enabled), int(port)


class DestroyActor(_Command):
    def __init__(self, actor: Any):
        super().__init__()
        self.actor_id = int(getattr(actor, "id", actor))


class Response:
    def __init__(self, actor_id: int = 0, error: str = ""):
        self.actor_id, self.error = int(actor_id), str(error)

    def has_error(self) -> bool:
        return bool(self.error)


class LaneType:
    Driving = 2
    Any = -2


# ------------------------------------------------------------------------------------------------
# Blueprints
# ------------------------------------------------------------------------------------------------
class ActorAttribute:
    def __init__(self, id: str, value: str):
        self.id, self._value = id, str(value)

    def as_int(self) -> int:
        return int(float(self._value))

    def as_float(self) -> float:
        return float(self._value)

    def as_str(self) -> str:
        return self._value

    def __str__(self) -> str:
        return self._value


class ActorBlueprint:
    def __init__(self, id: str, **attributes: Any):
        self.id = id
        self._attributes = {k: ActorAttribute(k, v) for k, v in attributes.items()}

    def has_attribute(self, id: str) -> bool:
        return id in self._attributes

    def get_attribute(self, id: str) -> ActorAttribute:
        return self._attributes[id]

    def set_attribute(self, id: str, value: str) -> None:
        if id not in self._attributes:
            raise IndexError(f"blueprint {self.id!r} has no attribute {id!r}")  # like the real one
        self._attributes[id] = ActorAttribute(id, value)

    def copy(self) -> "ActorBlueprint":
        bp = ActorBlueprint(self.id)
        bp._attributes = dict(self._attributes)
        return bp


class BlueprintLibrary:
    def __init__(self, blueprints: Iterable[ActorBlueprint]):
        self._bps = list(blueprints)

    def find(self, id: str) -> ActorBlueprint:
        for bp in self._bps:
            if bp.id == id:
                return bp.copy()
        raise IndexError(f"blueprint {id!r} not found")

    def filter(self, pattern: str) -> "BlueprintLibrary":
        return BlueprintLibrary(bp.copy() for bp in self._bps if fnmatch.fnmatch(bp.id, pattern))

    def __iter__(self):
        return iter(self._bps)

    def __len__(self) -> int:
        return len(self._bps)


def default_library() -> BlueprintLibrary:
    vehicle = dict(role_name="", number_of_wheels=4, color="0,0,0")
    return BlueprintLibrary(
        [
            ActorBlueprint("vehicle.tesla.model3", **vehicle),
            ActorBlueprint("vehicle.audi.a2", **vehicle),
            ActorBlueprint("vehicle.lincoln.mkz_2020", **vehicle),
            ActorBlueprint("vehicle.bh.crossbike", role_name="", number_of_wheels=2),
            ActorBlueprint("sensor.camera.rgb", image_size_x=800, image_size_y=600, fov=90, sensor_tick=0.0, role_name=""),
            ActorBlueprint("sensor.other.collision", role_name=""),
            ActorBlueprint("sensor.other.lane_invasion", role_name=""),
            ActorBlueprint("sensor.other.obstacle", distance=5, hit_radius=0.5, only_dynamics="false",
                           debug_linetrace="false", sensor_tick=0.0, role_name=""),
        ]
    )


# ------------------------------------------------------------------------------------------------
# Map: directed lanes (centre polylines) with successors; waypoints are (lane, s)
# ------------------------------------------------------------------------------------------------
class Lane:
    def __init__(self, index: int, points: np.ndarray, road_id: int, lane_id: int, is_junction: bool = False,
                 width: float = 3.5):
        self.index, self.road_id, self.lane_id = index, road_id, lane_id
        self.is_junction, self.width = is_junction, width
        self.points = np.asarray(points, dtype=np.float64)
        seg = np.hypot(*np.diff(self.points, axis=0).T)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.length = float(self.cum[-1])
        self.successors: list[int] = []

    def pose(self, s: float) -> tuple[float, float, float]:
        s = float(np.clip(s, 0.0, self.length))
        i = int(np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.points) - 2))
        a, b = self.points[i], self.points[i + 1]
        t = (s - self.cum[i]) / max(self.cum[i + 1] - self.cum[i], 1e-9)
        p = a + (b - a) * t
        return float(p[0]), float(p[1]), math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


class Waypoint:
    def __init__(self, map_: "StandinMap", lane: Lane, s: float):
        self._map, self._lane, self.s = map_, lane, float(s)
        x, y, yaw = lane.pose(s)
        self.transform = Transform(Location(x=x, y=y, z=0.0), Rotation(yaw=yaw))
        self.id = lane.index * 1_000_000_000 + int(round(self.s / 0.02))  # 2 cm precision, like CARLA
        self.road_id, self.section_id, self.lane_id = lane.road_id, 0, lane.lane_id
        self.lane_width, self.is_junction = lane.width, lane.is_junction

    def next(self, distance: float) -> list["Waypoint"]:
        return self._map._advance(self._lane, self.s, float(distance))


class StandinMap:
    """A hand-made town: lanes with successors, spawn points, ``get_topology`` / ``get_waypoint``."""

    def __init__(self, name: str, lanes: list[Lane], spawn_points: list[Any]):
        self.name = name
        self.lanes = lanes
        self._spawn_points = spawn_points
        a, b, lane_of, s0 = [], [], [], []
        for lane in lanes:
            a.append(lane.points[:-1])
            b.append(lane.points[1:])
            lane_of.append(np.full(len(lane.points) - 1, lane.index))
            s0.append(lane.cum[:-1])
        self._a, self._b = np.concatenate(a), np.concatenate(b)
        self._lane_of, self._s0 = np.concatenate(lane_of), np.concatenate(s0)
        d = self._b - self._a
        self._len = np.hypot(d[:, 0], d[:, 1])
        self._dir = d / self._len[:, None]

    def _advance(self, lane: Lane, s: float, d: float) -> list[Waypoint]:
        if s + d <= lane.length + 1e-9:
            return [Waypoint(self, lane, s + d)]
        rest = s + d - lane.length
        out: list[Waypoint] = []
        for k in lane.successors:
            out.extend(self._advance(self.lanes[k], 0.0, rest))
        return out

    def get_topology(self) -> list[tuple[Waypoint, Waypoint]]:
        out = []
        for lane in self.lanes:
            if lane.successors:
                out.extend((Waypoint(self, lane, 0.0), Waypoint(self, self.lanes[k], 0.0)) for k in lane.successors)
            else:
                out.append((Waypoint(self, lane, 0.0), Waypoint(self, lane, lane.length)))
        return out

    def get_spawn_points(self) -> list[Any]:
        return [Transform(Location(x=t.location.x, y=t.location.y, z=t.location.z), Rotation(yaw=t.rotation.yaw))
                for t in self._spawn_points]

    def project(self, x: float, y: float) -> tuple[Lane, float, float]:
        """Nearest lane, its s and the planar distance to its centre line."""
        rx, ry = x - self._a[:, 0], y - self._a[:, 1]
        t = np.clip(rx * self._dir[:, 0] + ry * self._dir[:, 1], 0.0, self._len)
        ex, ey = rx - t * self._dir[:, 0], ry - t * self._dir[:, 1]
        d2 = ex * ex + ey * ey
        k = int(np.argmin(d2))
        return self.lanes[int(self._lane_of[k])], float(self._s0[k] + t[k]), float(math.sqrt(d2[k]))

    def get_waypoint(self, location: Any, project_to_road: bool = True, lane_type: Any = LaneType.Driving):
        lane, s, dist = self.project(float(location.x), float(location.y))
        if not project_to_road and dist > lane.width / 2:
            return None
        return Waypoint(self, lane, s)


def grid_town(nx: int = 3, ny: int = 2, block_m: float = 100.0, lane_width: float = 3.5,
              junction_m: float = 8.0, spawn_every_m: float = 25.0, name: str = "Carla/Maps/Town01") -> StandinMap:
    """A right-hand-traffic grid town in CARLA's frame: ``nx * ny`` intersections ``block_m`` apart,
    two-way streets (one lane per direction), junction lanes for every turn but U-turns, spawn points
    every ``spawn_every_m`` along the streets."""
    nodes = {(i, j): np.array([i * block_m, j * block_m]) for i in range(nx) for j in range(ny)}
    streets = [((i, j), (i + 1, j)) for i in range(nx - 1) for j in range(ny)]
    streets += [((i, j), (i, j + 1)) for i in range(nx) for j in range(ny - 1)]
    lanes: list[Lane] = []
    into: dict[tuple, list[tuple[int, tuple]]] = {n: [] for n in nodes}  # node -> (lane, from node)
    out_of: dict[tuple, list[tuple[int, tuple]]] = {n: [] for n in nodes}  # node -> (lane, to node)
    spawn_points = []
    for road_id, (u, v) in enumerate(streets):
        for lane_id, (p, q) in ((-1, (u, v)), (1, (v, u))):
            a, b = nodes[p], nodes[q]
            d = (b - a) / np.linalg.norm(b - a)
            right = np.array([-d[1], d[0]])  # CARLA: +y is right of a vehicle heading +x
            start = a + d * junction_m + right * lane_width / 2
            end = b - d * junction_m + right * lane_width / 2
            n = max(int(np.linalg.norm(end - start) // 5.0), 1)
            lane = Lane(len(lanes), np.linspace(start, end, n + 1), road_id, lane_id, width=lane_width)
            lanes.append(lane)
            into[q].append((lane.index, p))
            out_of[p].append((lane.index, q))
            yaw = math.degrees(math.atan2(d[1], d[0]))
            for s in np.arange(spawn_every_m / 2, lane.length - 1.0, spawn_every_m):
                x, y, _ = lane.pose(s)
                spawn_points.append(Transform(Location(x=x, y=y, z=0.3), Rotation(yaw=yaw)))
    road_id = 1000
    for node, incoming in into.items():
        for li, came_from in incoming:
            for lo, goes_to in out_of[node]:
                if goes_to == came_from:
                    continue  # no U-turns
                p0, p2 = lanes[li].points[-1], lanes[lo].points[0]
                d0 = p0 - lanes[li].points[-2]
                d2 = lanes[lo].points[1] - p2
                d0, d2 = d0 / np.linalg.norm(d0), d2 / np.linalg.norm(d2)
                det = d0[0] * -d2[1] - d0[1] * -d2[0]
                if abs(det) < 1e-9:  # straight on
                    ctrl = (p0 + p2) / 2
                else:  # corner: where the two lane lines meet
                    t = ((p2 - p0)[0] * -d2[1] - (p2 - p0)[1] * -d2[0]) / det
                    ctrl = p0 + d0 * t
                ts = np.linspace(0.0, 1.0, 9)[:, None]
                pts = (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * ctrl + ts**2 * p2
                conn = Lane(len(lanes), pts, road_id, -1, is_junction=True, width=lane_width)
                road_id += 1
                conn.successors = [lo]
                lanes[li].successors.append(conn.index)
                lanes.append(conn)
    return StandinMap(name, lanes, spawn_points)


# ------------------------------------------------------------------------------------------------
# Actors and sensors
# ------------------------------------------------------------------------------------------------
class BoundingBox:
    def __init__(self, extent: Any, location: Any = None):
        self.extent, self.location = extent, location if location is not None else Location()


class Actor:
    def __init__(self, server: "StandinServer", actor_id: int, blueprint: ActorBlueprint, transform: Any,
                 parent: "Actor | None" = None):
        self._server, self.id, self.type_id = server, actor_id, blueprint.id
        self.attributes = {k: str(v) for k, v in blueprint._attributes.items()}
        self.parent = parent
        self._transform = Transform(Location(x=transform.location.x, y=transform.location.y, z=transform.location.z),
                                    Rotation(pitch=transform.rotation.pitch, yaw=transform.rotation.yaw,
                                             roll=transform.rotation.roll))
        self.is_alive = True

    def get_transform(self) -> Any:
        t = self._transform
        if self.parent is None:
            return Transform(Location(x=t.location.x, y=t.location.y, z=t.location.z),
                             Rotation(pitch=t.rotation.pitch, yaw=t.rotation.yaw, roll=t.rotation.roll))
        p = self.parent.get_transform()
        yaw = math.radians(p.rotation.yaw)
        x = p.location.x + t.location.x * math.cos(yaw) - t.location.y * math.sin(yaw)
        y = p.location.y + t.location.x * math.sin(yaw) + t.location.y * math.cos(yaw)
        return Transform(Location(x=x, y=y, z=p.location.z + t.location.z),
                         Rotation(pitch=t.rotation.pitch, yaw=p.rotation.yaw + t.rotation.yaw))

    def get_location(self) -> Any:
        return self.get_transform().location

    def get_velocity(self) -> Any:
        return Vector3D()

    def destroy(self) -> bool:
        self._server._rpc()
        self._server.single_destroys += 1
        return self._server._destroy(self.id)


class Vehicle(Actor):
    LENGTH_M, WIDTH_M, WHEELBASE_M, MAX_STEER_DEG = 4.8, 2.0, 2.9, 70.0
    TRACK_M, WHEEL_RADIUS_M = 1.6, 0.35

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.bounding_box = BoundingBox(Vector3D(x=self.LENGTH_M / 2, y=self.WIDTH_M / 2, z=0.75), Location(z=0.75))
        self.control = VehicleControl()
        self.speed = 0.0
        self.autopilot_port: int | None = None
        self._lane_state: tuple[int, float] | None = None
        self.controls_applied: list[Any] = []

    def apply_control(self, control: Any) -> None:
        self._server._rpc()
        self.control = control
        self.controls_applied.append(control)

    def get_control(self) -> Any:
        return self.control

    def get_physics_control(self) -> Any:
        """Only ``wheels`` (FL, FR, RL, RR), each with ``max_steer_angle`` (deg, rear 0) and ``position``:
        the wheel's world position in CENTIMETRES, as CARLA 0.9.x reports it."""
        self._server._rpc()
        t = self.get_transform()
        yaw = math.radians(t.rotation.yaw)
        wheels = []
        for fwd, steer in ((self.WHEELBASE_M / 2, self.MAX_STEER_DEG), (-self.WHEELBASE_M / 2, 0.0)):
            for side in (-self.TRACK_M / 2, self.TRACK_M / 2):  # left is -y in CARLA's left-handed frame
                x = t.location.x + fwd * math.cos(yaw) - side * math.sin(yaw)
                y = t.location.y + fwd * math.sin(yaw) + side * math.cos(yaw)
                position = Vector3D(x=100 * x, y=100 * y, z=100 * (t.location.z + self.WHEEL_RADIUS_M))
                wheels.append(types.SimpleNamespace(max_steer_angle=steer, position=position))
        return types.SimpleNamespace(wheels=wheels)

    def set_autopilot(self, enabled: bool = True, port: int = 8000) -> None:
        self._server._rpc()
        self._server._set_autopilot(self, enabled, port)

    def set_transform(self, transform: Any) -> None:
        self._transform = Transform(Location(x=transform.location.x, y=transform.location.y, z=transform.location.z),
                                    Rotation(yaw=transform.rotation.yaw))

    def set_target_velocity(self, velocity: Any) -> None:
        self.speed = math.hypot(velocity.x, velocity.y)
        if self.speed > 0:
            self._transform.rotation.yaw = math.degrees(math.atan2(velocity.y, velocity.x))

    def get_velocity(self) -> Any:
        yaw = math.radians(self._transform.rotation.yaw)
        return Vector3D(x=self.speed * math.cos(yaw), y=self.speed * math.sin(yaw), z=0.0)


class Sensor(Actor):
    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.callback: Callable[[Any], None] | None = None
        self.stop_calls = 0

    @property
    def is_listening(self) -> bool:
        return self.callback is not None

    def listen(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback

    def stop(self) -> None:
        self.callback = None
        self.stop_calls += 1


class SensorData:
    def __init__(self, frame: int, timestamp: float, transform: Any, **fields: Any):
        self.frame, self.timestamp, self.transform = frame, timestamp, transform
        self.__dict__.update(fields)


#: What a released image's memory holds in the stand-in (the real client frees it; it is then reused).
FREED_BYTE = 0xCD


class Image(SensorData):
    """A camera image whose ``raw_data`` dies with it, like ``carla.Image``'s: a memoryview into a
    buffer the image owns, holding no reference to the image. When the image is released the buffer
    is overwritten with ``FREED_BYTE`` (the real client frees it and the allocator reuses it), so a
    numpy view kept past the image's life shows garbage here as it does with CARLA."""

    def __init__(self, frame: int, timestamp: float, transform: Any, bgra: np.ndarray, **fields: Any):
        super().__init__(frame, timestamp, transform, **fields)
        self._buffer = bytearray(bgra.tobytes())

    @property
    def raw_data(self) -> memoryview:
        return memoryview(self._buffer)

    def __del__(self) -> None:
        self._buffer[:] = bytes([FREED_BYTE]) * len(self._buffer)


class ActorList(list):
    def filter(self, pattern: str) -> "ActorList":
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))

    def find(self, actor_id: int) -> Any:
        return next((a for a in self if a.id == actor_id), None)


# ------------------------------------------------------------------------------------------------
# Traffic Manager, world, client, server
# ------------------------------------------------------------------------------------------------
class TrafficManager:
    """A Traffic Manager. Like the real client's, it belongs to the client PROCESS (one per port, kept in
    ``StandinServer.client_tms``, which survives ``restart()``) until ``shut_down()``; one created
    before the server restarted is bound to the dead server: its calls fail with the real bind error."""

    def __init__(self, server: "StandinServer", port: int):
        self._server, self.port = server, port
        self.epoch = server.epoch  # which server life it is bound to
        self.synchronous = False
        self.seed: int | None = None
        self.rng = np.random.default_rng(0)
        self.is_shut_down = False

    def _rpc(self) -> None:
        self._server._rpc()
        if self.is_shut_down or self.epoch != self._server.epoch:
            raise RuntimeError("trying to create rpc server for traffic manager; but the system failed to "
                               "create because of bind error.")

    def get_port(self) -> int:
        return self.port

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        self._rpc()
        self.synchronous = bool(mode_switch)

    def set_random_device_seed(self, value: int) -> None:
        self._rpc()
        self.seed = int(value)
        self.rng = np.random.default_rng(self.seed)

    def shut_down(self) -> None:
        """Client side: releases the port's TM of this process (no server call, works when it is gone)."""
        if not self.is_shut_down:
            self.is_shut_down = True
            self._server.tm_shutdowns += 1
        if self._server.client_tms.get(self.port) is self:
            del self._server.client_tms[self.port]


class World:
    def __init__(self, server: "StandinServer"):
        self._server = server

    def get_settings(self) -> Any:
        self._server._rpc()
        return copy_settings(self._server.settings)

    def apply_settings(self, settings: Any) -> int:
        self._server._rpc()
        self._server.settings = copy_settings(settings)
        self._server.settings_history.append(settings_tuple(settings))
        return self._server.frame

    def get_map(self) -> StandinMap:
        self._server._rpc()
        return self._server.map

    def get_blueprint_library(self) -> BlueprintLibrary:
        self._server._rpc()
        return self._server.library

    def spawn_actor(self, blueprint: Any, transform: Any, attach_to: Any = None, attachment_type: Any = None) -> Actor:
        self._server._rpc()
        actor = self._server._spawn(blueprint, transform, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, blueprint: Any, transform: Any, attach_to: Any = None, attachment_type: Any = None):
        self._server._rpc()
        return self._server._spawn(blueprint, transform, attach_to)

    def get_actors(self, actor_ids: list[int] | None = None) -> ActorList:
        self._server._rpc()
        alive = self._server.actors
        if actor_ids is None:
            return ActorList(alive.values())
        return ActorList(alive[i] for i in actor_ids if i in alive)

    def tick(self, seconds: float = 10.0) -> int:
        self._server._rpc()
        return self._server._tick(seconds)


class Client:
    def __init__(self, server: "StandinServer | None", host: str, port: int, timeout_s: float):
        self._server, self.host, self.port, self.timeout_s = server, host, port, timeout_s

    def _timeout(self) -> RuntimeError:
        """The real client blocks for its whole time-out before it raises (see ``StandinServer.timeout_wait``)."""
        if self._server is not None and self._server.timeout_wait is not None:
            self._server.timeout_wait(self.timeout_s)
        return timeout_error(self.timeout_s, self.host, self.port)

    def _rpc(self) -> "StandinServer":
        if self._server is None or not self._server.up:
            raise self._timeout()
        self._server.rpc_timeout_s = self.timeout_s
        return self._server

    def set_timeout(self, seconds: float) -> None:
        self.timeout_s = float(seconds)

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_server_version(self) -> str:
        server = self._rpc()
        if server.refuse_next > 0:
            server.refuse_next -= 1
            raise self._timeout()
        server.connections += 1
        return "0.9.16"

    def get_world(self) -> World:
        return self._rpc().world

    def get_available_maps(self) -> list[str]:
        self._rpc()
        return ["/Game/Carla/Maps/Town01", "/Game/Carla/Maps/Town10HD_Opt"]

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers: Any = None) -> World:
        return self._rpc()._load(map_name, reset_settings, self.timeout_s)

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        server, port = self._rpc(), int(client_connection)
        tm = server.client_tms.get(port)  # the process's TM of that port, even if bound to a dead server
        if tm is None:
            tm = server.client_tms[port] = TrafficManager(server, port)
        if tm.epoch == server.epoch:
            server.tms[port] = tm
        return tm

    def apply_batch_sync(self, commands: list[Any], do_tick: bool = False) -> list[Response]:
        server = self._rpc()
        server.batches += 1
        destroy_ids = [int(c.actor_id) for c in commands if type(c).__name__ == "DestroyActor"]
        if destroy_ids:
            server.destroy_batches.append(destroy_ids)
        out = [server._execute(c) for c in commands]
        if do_tick:
            server._tick(self.timeout_s)
        return out

    def apply_batch(self, commands: list[Any], do_tick: bool = False) -> None:
        self.apply_batch_sync(commands, do_tick)


class StandinServer:
    """One stand-in server at ``host:port``, and the client factory that reaches it.

    Fault injection:
        ``fail_ticks(n)``: the next n ``World.tick`` calls raise the real time-out ``RuntimeError``.
        ``crash()`` / ``restart()``: every call times out / a fresh server (actors gone, default settings).
        ``refuse_next``: the next n connection attempts time out.
        ``timeout_wait``: None, or a callable given the client's time-out (s) before every time-out error
            is raised, as the real client blocks that long: pass ``FakeClock().block`` to account for
            the time a connection costs without waiting for it.
        ``sensor_delay_s``: deliver sensor data from a timer thread this late (CARLA's data is async).

    Accounting: ``destroy_batches`` lists the actor ids of every batch of ``DestroyActor``;
    ``single_destroys`` counts ``Actor.destroy()`` calls (one RPC each); ``destroyed_listening``
    counts sensors destroyed while still listening (not ``stop()``ped first).
    """

    carla_module = types.SimpleNamespace(
        Location=Location, Rotation=Rotation, Transform=Transform, Vector3D=Vector3D,
        VehicleControl=VehicleControl, WorldSettings=WorldSettings, LaneType=LaneType,
        command=types.SimpleNamespace(SpawnActor=SpawnActor, SetAutopilot=SetAutopilot, DestroyActor=DestroyActor,
                                      FutureActor=FutureActor, Response=Response),
    )

    def __init__(self, host: str = "localhost", port: int = 2000, map_factory: Callable[[str], StandinMap] | None = None,
                 initial_map: str = "Town10HD_Opt"):
        self.host, self.port = host, port
        self._map_factory = map_factory or (lambda name: grid_town(name=f"Carla/Maps/{name}"))
        self.library = default_library()
        self.image_fn: Callable[[int, Sensor], np.ndarray] = default_image
        self.npc_speed_mps = 6.0
        self.collision_distance_m = 3.0
        self.physics = True  # False: the ego stays where set_transform / set_target_velocity put it
        self.sensor_delay_s = 0.0
        self.refuse_next = 0
        self.timeout_wait: Callable[[float], None] | None = None
        self._fail_ticks = 0
        self._ids = itertools.count(1)
        self.up = True
        self.connections = 0
        self.factory_calls: list[tuple[str, int, float]] = []
        self.rpc_timeout_s = 0.0
        self.loads: list[tuple[str, float]] = []  # (map name, client time-out) of every load_world
        self.settings_history: list[tuple] = []  # settings_tuple of every apply_settings
        self.epoch = 0  # server lives: restart() starts a new one
        self.client_tms: dict[int, TrafficManager] = {}  # the client process's TM per port (see TrafficManager)
        self.tm_shutdowns = 0
        self.log: list[tuple[str, int]] = []  # ("spawn" | "destroy" | "tick", actor id or frame), in order
        self._reset_state(initial_map)

    def _reset_state(self, map_name: str) -> None:
        self.map = self._map_factory(map_name)
        self.world = World(self)
        self.settings = WorldSettings()
        self.actors: dict[int, Actor] = {}
        self.tms: dict[int, TrafficManager] = {}
        self.frame = 0
        self.ticks = 0
        self.async_ticks = 0
        self.tm_async_ticks = 0
        self.batches = 0
        self.destroy_batches: list[list[int]] = []  # actor ids of each batch of DestroyActor commands
        self.single_destroys = 0  # Actor.destroy() calls: one RPC per actor
        self.spawned = 0
        self.destroyed = 0
        self.destroyed_listening = 0  # sensors destroyed without stop(): the pitfall the env must avoid
        self._pending_collisions: list[int] = []
        self._pending_invasions: list[int] = []
        self._last_lane: dict[int, tuple[int, int]] = {}

    def __deepcopy__(self, memo: dict) -> "StandinServer":
        return self  # a server is a shared resource (gymnasium deep-copies env kwargs such as the factory)

    # --- the client factory ------------------------------------------------------------------------
    def __call__(self, host: str, port: int, timeout_s: float) -> Client:
        self.factory_calls.append((host, port, timeout_s))
        return Client(self if int(port) == self.port else None, host, port, timeout_s)

    # --- fault injection ---------------------------------------------------------------------------
    def fail_ticks(self, n: int = 1) -> None:
        self._fail_ticks = n

    def crash(self) -> None:
        self.up = False

    def restart(self, map_name: str = "Town10HD_Opt") -> None:
        self.up = True
        self.epoch += 1
        self._reset_state(map_name)

    def inject_collision(self, actor_id: int) -> None:
        self._pending_collisions.append(actor_id)

    def inject_lane_invasion(self, actor_id: int) -> None:
        self._pending_invasions.append(actor_id)

    # --- queries for tests -------------------------------------------------------------------------
    def vehicles(self) -> list[Vehicle]:
        return [a for a in self.actors.values() if isinstance(a, Vehicle)]

    def sensors(self) -> list[Sensor]:
        return [a for a in self.actors.values() if isinstance(a, Sensor)]

    def hero(self) -> Vehicle | None:
        """The env's ego (role name ``av_td3_ego_<TM port>``)."""
        return next((v for v in self.vehicles() if v.attributes.get("role_name", "").startswith("av_td3_ego_")), None)

    # --- internals -----------------------------------------------------------------------------------
    def _rpc(self) -> None:
        if not self.up:
            raise timeout_error(self.rpc_timeout_s or 10.0, self.host, self.port)

    def _load(self, map_name: str, reset_settings: bool, timeout_s: float) -> World:
        settings = self.settings
        self.loads.append((map_name, timeout_s))
        tms = self.tms
        self._reset_state(map_name)
        self.tms = tms  # TM instances survive a load, like the real ones
        if not reset_settings:
            self.settings = settings
        return self.world

    def _spawn(self, blueprint: ActorBlueprint, transform: Any, attach_to: Any) -> Actor | None:
        parent = attach_to
        if blueprint.id.startswith("vehicle."):
            for v in self.vehicles():  # footprints overlap (in the other vehicle's frame)
                dx = transform.location.x - v._transform.location.x
                dy = transform.location.y - v._transform.location.y
                yaw = math.radians(v._transform.rotation.yaw)
                along = dx * math.cos(yaw) + dy * math.sin(yaw)
                across = -dx * math.sin(yaw) + dy * math.cos(yaw)
                if abs(along) < Vehicle.LENGTH_M and abs(across) < Vehicle.WIDTH_M:
                    return None
            actor: Actor = Vehicle(self, next(self._ids), blueprint, transform)
        else:
            if parent is not None and parent.id not in self.actors:
                raise RuntimeError("unable to attach actor: parent not found")
            actor = Sensor(self, next(self._ids), blueprint, transform, parent)
        self.actors[actor.id] = actor
        self.spawned += 1
        self.log.append(("spawn", actor.id))
        return actor

    def _destroy(self, actor_id: int) -> bool:
        actor = self.actors.pop(int(actor_id), None)
        if actor is None:
            return False
        if isinstance(actor, Sensor) and actor.is_listening:
            self.destroyed_listening += 1
        actor.is_alive = False
        self.destroyed += 1
        self.log.append(("destroy", int(actor_id)))
        return True

    def _set_autopilot(self, vehicle: Vehicle, enabled: bool, port: int) -> None:
        if enabled:
            vehicle.autopilot_port = port
            lane, s, _ = self.map.project(vehicle._transform.location.x, vehicle._transform.location.y)
            vehicle._lane_state = (lane.index, s)
            if port not in self.tms:
                self.tms[port] = self.client_tms.setdefault(port, TrafficManager(self, port))
        else:
            vehicle.autopilot_port, vehicle._lane_state = None, None

    def _execute(self, command: Any, future: Actor | None = None) -> Response:
        if isinstance(command, SpawnActor):
            parent = command.parent
            actor = self._spawn(command.blueprint, command.transform, parent)
            if actor is None:
                return Response(error="Spawn failed because of collision at spawn position")
            for c in command.chained:
                self._execute(c, future=actor)
            return Response(actor_id=actor.id)
        if isinstance(command, SetAutopilot):
            target = future if command.actor is FutureActor else self.actors.get(int(getattr(command.actor, "id", command.actor)))
            if not isinstance(target, Vehicle):
                return Response(error="unable to set autopilot: not found")
            self._set_autopilot(target, command.enabled, command.port)
            return Response(actor_id=target.id)
        actor_id = getattr(command, "actor_id", None)  # DestroyActor, stand-in or real
        if actor_id is not None and type(command).__name__ == "DestroyActor":
            if self._destroy(actor_id):
                return Response(actor_id=actor_id)
            return Response(actor_id=actor_id, error="unable to destroy actor: not found")
        raise TypeError(f"the stand-in does not implement command {type(command).__name__}")

    def _tick(self, seconds: float) -> int:
        if self._fail_ticks > 0:
            self._fail_ticks -= 1
            raise timeout_error(seconds, self.host, self.port)
        if not self.settings.synchronous_mode:
            self.async_ticks += 1
        dt = float(self.settings.fixed_delta_seconds or 0.05)
        self.frame += 1
        self.ticks += 1
        self.log.append(("tick", self.frame))
        for v in self.vehicles():
            if v.autopilot_port is not None:
                tm = self.tms.get(v.autopilot_port)
                if tm is None or not tm.synchronous:
                    self.tm_async_ticks += 1
                self._drive_npc(v, dt, tm)
            elif self.physics:
                self._drive_bicycle(v, dt)
        self._emit_sensor_data(dt)
        return self.frame

    def _drive_npc(self, v: Vehicle, dt: float, tm: TrafficManager | None) -> None:
        lane_index, s = v._lane_state
        lane, s = self.map.lanes[lane_index], s + self.npc_speed_mps * dt
        while s > lane.length:
            if not lane.successors:
                s = lane.length
                break
            s -= lane.length
            k = int(tm.rng.integers(len(lane.successors))) if tm is not None else 0
            lane = self.map.lanes[lane.successors[k]]
        x, y, yaw = lane.pose(s)
        v._lane_state = (lane.index, s)
        v._transform = Transform(Location(x=x, y=y, z=v._transform.location.z), Rotation(yaw=yaw))
        v.speed = self.npc_speed_mps

    def _drive_bicycle(self, v: Vehicle, dt: float) -> None:
        c = v.control
        accel = 4.0 * float(c.throttle) - 8.0 * float(c.brake)
        v.speed = max(0.0, v.speed + accel * dt)
        steer = math.radians(float(c.steer) * Vehicle.MAX_STEER_DEG / 2)
        yaw = math.radians(v._transform.rotation.yaw)
        yaw += v.speed / Vehicle.WHEELBASE_M * math.tan(steer) * dt  # CARLA: steer > 0 turns right = yaw grows
        loc = v._transform.location
        v._transform = Transform(
            Location(x=loc.x + v.speed * math.cos(yaw) * dt, y=loc.y + v.speed * math.sin(yaw) * dt, z=loc.z),
            Rotation(yaw=math.degrees(yaw)),
        )

    def _emit_sensor_data(self, dt: float) -> None:
        timestamp = self.frame * dt
        deliveries = []
        for sensor in self.sensors():
            parent = sensor.parent
            if not sensor.is_listening or parent is None or parent.id not in self.actors:
                continue
            data = self._measure(sensor, parent, timestamp)
            deliveries.extend((sensor.callback, d) for d in data)
        self._pending_collisions.clear()
        self._pending_invasions.clear()
        for callback, data in deliveries:
            if self.sensor_delay_s > 0:
                threading.Timer(self.sensor_delay_s, callback, (data,)).start()
            else:
                callback(data)

    def _measure(self, sensor: Sensor, parent: Vehicle, timestamp: float) -> list[SensorData]:
        kind, frame, tr = sensor.type_id, self.frame, sensor.get_transform()
        if kind == "sensor.camera.rgb":
            w, h = int(sensor.attributes["image_size_x"]), int(sensor.attributes["image_size_y"])
            img = np.ascontiguousarray(self.image_fn(frame, sensor), dtype=np.uint8)
            assert img.shape == (h, w, 4), (img.shape, (h, w, 4))
            return [Image(frame, timestamp, tr, img, width=w, height=h, fov=float(sensor.attributes["fov"]))]
        pt = parent._transform
        others = [v for v in self.vehicles() if v.id != parent.id]
        if kind == "sensor.other.collision":
            hits = [v for v in others
                    if math.hypot(v._transform.location.x - pt.location.x, v._transform.location.y - pt.location.y)
                    < self.collision_distance_m]
            if parent.id in self._pending_collisions:
                hits = hits or [None]
            return [SensorData(frame, timestamp, tr, actor=parent, other_actor=o, normal_impulse=Vector3D()) for o in hits[:1]]
        if kind == "sensor.other.lane_invasion":
            lane, _, _ = self.map.project(pt.location.x, pt.location.y)
            key, last = (lane.road_id, lane.lane_id), self._last_lane.get(parent.id)
            crossed = last is not None and key != last and not lane.is_junction and last[0] < 1000
            self._last_lane[parent.id] = key
            if crossed or parent.id in self._pending_invasions:
                return [SensorData(frame, timestamp, tr, actor=parent, crossed_lane_markings=["Broken"])]
            return []
        if kind == "sensor.other.obstacle":
            rng = float(sensor.attributes["distance"])
            yaw = math.radians(pt.rotation.yaw)
            best = None
            for v in others:
                dx, dy = v._transform.location.x - tr.location.x, v._transform.location.y - tr.location.y
                fwd = dx * math.cos(yaw) + dy * math.sin(yaw)
                side = -dx * math.sin(yaw) + dy * math.cos(yaw)
                gap = fwd - Vehicle.LENGTH_M / 2
                if fwd > 0 and abs(side) < 1.5 and gap <= rng and (best is None or gap < best[0]):
                    best = (max(gap, 0.0), v)
            if best is None:
                return []
            return [SensorData(frame, timestamp, tr, actor=parent, other_actor=best[1], distance=best[0])]
        return []


class FakeClock:
    """Simulated time for connection tests: ``sleep`` (the env's backoff waits) and ``block`` (a
    client waiting out its time-out, ``StandinServer.timeout_wait``) advance ``now`` without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.blocked: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += float(seconds)

    def block(self, seconds: float) -> None:
        self.blocked.append(float(seconds))
        self.now += float(seconds)


class StandinCluster:
    """Several stand-in servers behind one client factory (one per port), for parallel envs."""

    carla_module = StandinServer.carla_module

    def __init__(self, servers: Iterable[StandinServer]):
        self.servers = {s.port: s for s in servers}

    def __deepcopy__(self, memo: dict) -> "StandinCluster":
        return self

    def __call__(self, host: str, port: int, timeout_s: float) -> Client:
        server = self.servers.get(int(port))
        if server is None:
            return Client(None, host, port, timeout_s)
        return server(host, port, timeout_s)


def default_image(frame: int, camera: Sensor) -> np.ndarray:
    """A BGRA frame whose grey level encodes the frame number (so frames are told apart)."""
    w, h = int(camera.attributes["image_size_x"]), int(camera.attributes["image_size_y"])
    img = np.full((h, w, 4), (frame * 7) % 256, dtype=np.uint8)
    img[..., 3] = 255
    return img


def ring_xodr(length_m: float = 120.0, width_m: float = 60.0, radius_m: float = 10.0, lane_width_m: float = 3.5) -> str:
    """A hand-made OpenDRIVE town for the REAL ``carla.Map(name, xodr)`` (which needs no server): a
    rounded rectangle of 8 roads (4 straights, 4 quarter arcs), one driving lane each way.

    OpenDRIVE is right-handed (y up), CARLA mirrors y: in CARLA the ring spans x in [0, length_m] and
    y in [-width_m, 0], and the right-hand lanes (id -1) of the bottom straight run along +x at y = +lane_width/2.
    """
    x, y, hdg = radius_m, 0.0, 0.0
    straights = [length_m - 2 * radius_m, width_m - 2 * radius_m] * 2
    roads = []
    for i in range(8):
        if i % 2:  # quarter arc, turning left in OpenDRIVE
            length = math.pi / 2 * radius_m
            geometry = f'<arc curvature="{1 / radius_m}"/>'
            cx, cy = x - math.sin(hdg) * radius_m, y + math.cos(hdg) * radius_m
            start = (x, y, hdg)
            hdg += math.pi / 2
            x, y = cx + math.sin(hdg) * radius_m, cy - math.cos(hdg) * radius_m
        else:
            length = straights[i // 2]
            geometry = "<line/>"
            start = (x, y, hdg)
            x, y = x + math.cos(hdg) * length, y + math.sin(hdg) * length
        lane = (
            '<lane id="{id}" type="driving" level="false"><link><predecessor id="{id}"/><successor id="{id}"/></link>'
            f'<width sOffset="0" a="{lane_width_m}" b="0" c="0" d="0"/>'
            '<roadMark sOffset="0" type="solid" width="0.15"/></lane>'
        )
        roads.append(
            f'<road name="r{i}" length="{length}" id="{i}" junction="-1">'
            f'<link><predecessor elementType="road" elementId="{(i - 1) % 8}" contactPoint="end"/>'
            f'<successor elementType="road" elementId="{(i + 1) % 8}" contactPoint="start"/></link>'
            f'<planView><geometry s="0" x="{start[0]}" y="{start[1]}" hdg="{start[2]}" length="{length}">{geometry}'
            f'</geometry></planView><lanes><laneSection s="0">'
            f'<left>{lane.format(id=1)}</left>'
            f'<center><lane id="0" type="driving" level="false"><roadMark sOffset="0" type="broken" width="0.15"/></lane></center>'
            f'<right>{lane.format(id=-1)}</right></laneSection></lanes></road>'
        )
    return ('<?xml version="1.0" standalone="yes"?><OpenDRIVE><header revMajor="1" revMinor="4" name="ring" version="1"/>'
            + "".join(roads) + "</OpenDRIVE>")


# ------------------------------------------------------------------------------------------------
# A stand-in server PROCESS, for the supervisor's tests
# ------------------------------------------------------------------------------------------------
def _msgpack_uint(data: bytes, i: int) -> tuple[bytes, int]:
    """The encoded msgpack unsigned int at ``data[i]`` (as bytes, to echo it) and the index after it."""
    size = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}.get(data[i], 1)
    return data[i:i + size], i + size


def _answer_version_requests(conn: Any, state: dict) -> None:
    """Answer the real client's ``get_server_version()`` (msgpack-rpc request ``[0, id, "version", args]``)
    with ``[1, id, nil, Response("0.9.16")]``, CARLA's framing of a string result, until hung."""
    import socket

    conn.settimeout(0.2)
    with conn:
        while True:
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            if state["hung"]:
                continue  # hung: the port stays open, nothing answers
            if len(data) < 3 or data[0] != 0x94 or data[1] != 0x00:
                return
            msgid, i = _msgpack_uint(data, 2)
            method = data[i + 1:i + 1 + (data[i] & 0x1F)]
            if method == b"version":
                conn.sendall(b"\x94\x01" + msgid + b"\xc0\x91\x92\x01\xa6" + b"0.9.16")
            else:
                return  # the stand-in process only tells its version


def serve_process(argv: list[str]) -> int:
    """Run as a CARLA server process would: ``python carla_standin.py -carla-rpc-port=P [CARLA flags]``.

    It answers the REAL ``carla.Client.get_server_version()`` on port P (nothing else). Test controls,
    through the environment (the supervisor passes it on): ``STANDIN_CHILD=1`` also starts a child
    process (like CarlaUE4.sh starts the engine) that sleeps until killed; ``STANDIN_PID_DIR``: write
    ``<port>.<pid>.pid`` files for the server and its child there; ``STANDIN_EXIT_AFTER=S``: exit with
    code 3 after S seconds; ``STANDIN_IGNORE_TERM=1``: ignore SIGTERM (only SIGKILL stops it).
    Signals: SIGUSR1 hangs it (the port stays open, no answers), SIGUSR2 makes it exit with code 3.
    """
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    port = next(int(a.split("=", 1)[1]) for a in argv if a.startswith("-carla-rpc-port="))
    state = {"hung": False}
    pid_dir = os.environ.get("STANDIN_PID_DIR")
    child = None
    if os.environ.get("STANDIN_CHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
    if pid_dir:
        for pid in [os.getpid()] + ([child.pid] if child else []):
            open(os.path.join(pid_dir, f"{port}.{pid}.pid"), "w").close()
    if os.environ.get("STANDIN_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: state.update(hung=True))
    signal.signal(signal.SIGUSR2, lambda *_: os._exit(3))
    exit_after = float(os.environ.get("STANDIN_EXIT_AFTER", "0") or 0)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    server.settimeout(0.1)
    print(f"stand-in CARLA server on port {port}, pid {os.getpid()}", flush=True)
    t0 = time.monotonic()
    while True:
        if exit_after and time.monotonic() - t0 > exit_after:
            print("stand-in CARLA server: exiting (STANDIN_EXIT_AFTER)", flush=True)
            os._exit(3)
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        threading.Thread(target=_answer_version_requests, args=(conn, state), daemon=True).start()


if __name__ == "__main__":
    import sys as _sys

    _sys.exit(serve_process(_sys.argv[1:]))

"""The ego's sensors and their observation managers: RGB camera -> grayscale frames, collision,
lane invasion and obstacle events.

CARLA delivers sensor data on its own threads through ``sensor.listen(callback)``. The callbacks here
only store what arrived (under a lock); the env's thread turns it into observations after each tick:
``wait_image(frame)`` blocks until the camera image of that simulation frame arrived, and
``pop_events(frame)`` returns the events of the simulation frames up to ``frame``.

Events are matched by ``event.frame``, not by when they arrive: an event of a later frame waits for
its step, and events of the frames before ``start_episode(frame)`` (the ego settling onto the road
during the reset's tick) are dropped even when they arrive late. An event of an earlier step of the
episode that arrives only after that step returned is counted in the next step (late, not lost) and
logged.

Memory: ``carla.Image.raw_data`` is a memoryview into the image's buffer that holds no reference to
the image; once the ``carla.Image`` is released the memory is freed and reused. Everything that
outlives the callback's image (``last_bgra`` for ``render()``) is therefore a copy.

Frames: the camera is mounted in the ego frame (x forward, y right, z up, metres; CARLA convention).

Destruction: each sensor is recorded in the env's ``ActorBook`` the moment it spawns; the env
``stop()``s the suite and then destroys the sensors in the same batch of ``carla.command.DestroyActor``
as its other actors (``ActorBook.destroy_all``). Sensors must be ``stop()``ped before they are
destroyed (a destroyed sensor that is still listening keeps its stream open on the server and the
client).
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from av_td3.envs.carla.actors import ActorBook, set_role_name
from av_td3.envs.carla.camera import CameraSpec

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights in CARLA's BGRA byte order (B, G, R).
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)


@functools.lru_cache(maxsize=16)
def area_resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix that averages input cells over each output cell (exact area resampling).

    Output cell i covers input interval ``[i * n_in / n_out, (i + 1) * n_in / n_out)``; each input
    cell contributes its overlap with that interval, rows sum to 1.
    """
    m = np.zeros((n_out, n_in), dtype=np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(math.floor(lo)), min(int(math.ceil(hi)), n_in)):
            m[i, j] = min(hi, j + 1) - max(lo, j)
    m /= m.sum(axis=1, keepdims=True)
    m.setflags(write=False)  # shared by every resizer (cached)
    return m


def _taps(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A banded resize matrix as ``(taps, n_out)`` input indices and weights (zero-padded)."""
    nz = [np.flatnonzero(row) for row in m]
    taps = max(len(k) for k in nz)
    idx = np.zeros((taps, len(m)), dtype=np.intp)
    w = np.zeros((taps, len(m)), dtype=np.float32)
    for i, k in enumerate(nz):
        idx[: len(k), i] = k
        w[: len(k), i] = m[i, k]
    return idx, w


class GrayscaleResizer:
    """BGRA ``(h, w, 4)`` uint8 camera image -> grayscale ``(H, W)`` uint8 (BT.601 luma, then area resize).

    The area resize is separable and banded (each output cell covers <= a few input cells), so it runs
    as a few element-wise multiply-adds instead of matrix products: BLAS would spread such small
    products over threads, which is far slower on a busy machine (several envs, a trainer).
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)
        self._row_idx, self._row_w = _taps(area_resize_matrix(out_hw[0], in_hw[0]))
        self._col_idx, self._col_w = _taps(area_resize_matrix(out_hw[1], in_hw[1]))

    def __call__(self, bgra: np.ndarray) -> np.ndarray:
        if bgra.shape[:2] != self.in_hw:
            raise ValueError(f"camera image is {bgra.shape[:2]}, expected {self.in_hw} (h, w)")
        c = bgra.astype(np.float32)
        gray = c[..., 0] * _LUMA_BGR[0] + c[..., 1] * _LUMA_BGR[1] + c[..., 2] * _LUMA_BGR[2]
        rows = sum(w[:, None] * gray[i] for i, w in zip(self._row_idx, self._row_w))
        out = sum(w[None, :] * rows[:, i] for i, w in zip(self._col_idx, self._col_w))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def image_to_bgra(image: Any) -> np.ndarray:
    """``carla.Image`` (raw_data: BGRA bytes, row-major) -> ``(height, width, 4)`` uint8 VIEW.

    The view is valid only while ``image`` is alive (``raw_data`` does not keep the image alive):
    copy what must outlive it.
    """
    return np.frombuffer(image.raw_data, dtype=np.uint8).reshape(int(image.height), int(image.width), 4)


@dataclass
class SensorEvents:
    """What the event sensors reported since the last ``pop_events()``.

    Attributes:
        collision: the ego hit something.
        collision_with: blueprint id of the other actor of the first collision ('' if none).
        lane_invasion: the ego crossed a lane marking.
        obstacle_distance_m: nearest obstacle ahead (obstacle sensor), m; ``inf`` if none was seen.
        obstacle_actor: the actor of that nearest obstacle (for its velocity -> time to collision), or None.
    """

    collision: bool = False
    collision_with: str = ""
    lane_invasion: bool = False
    obstacle_distance_m: float = math.inf
    obstacle_actor: Any = None

    def merge(self, other: "SensorEvents") -> None:
        """Add ``other`` (a later frame's events) to these: any collision / invasion, the nearest obstacle."""
        if other.collision and not self.collision:
            self.collision_with = other.collision_with
        self.collision = self.collision or other.collision
        self.lane_invasion = self.lane_invasion or other.lane_invasion
        if other.obstacle_distance_m < self.obstacle_distance_m:
            self.obstacle_distance_m, self.obstacle_actor = other.obstacle_distance_m, other.obstacle_actor


class SensorSuite:
    """Spawns the camera (unless ``camera`` is None), collision, lane-invasion and obstacle sensors on the ego.

    Args:
        world: the ``carla.World``.
        api: the ``carla`` module (or the stand-in's).
        ego: the vehicle to attach to.
        camera: camera spec, or None when the server does not render (no-rendering mode): frames are black.
        out_hw: grayscale frame size ``(H, W)`` of the contract.
        obstacle_distance_m: obstacle sensor range, m.
        obstacle_x_m: obstacle sensor mount ahead of the ego origin (its front bumper), m, so that the
            reported distance is a bumper-to-obstacle gap like ``task.StepEvents.obstacle_distance_m``.
        book: the env's actor account; every sensor is added the moment the server returns it, so the
            env's batch destroys it even when the suite is only half built (spawning failed part way).
        role_name: ``role_name`` attribute of every sensor (the env's ``RoleNames.sensor``).
    """

    def __init__(
        self,
        world: Any,
        api: Any,
        ego: Any,
        camera: CameraSpec | None,
        out_hw: tuple[int, int],
        obstacle_distance_m: float,
        obstacle_x_m: float = 2.4,
        *,
        book: ActorBook,
        role_name: str = "",
    ):
        self._lock = threading.Lock()
        self._images: "queue.Queue[Any]" = queue.Queue()
        self._events: dict[int, SensorEvents] = {}  # simulation frame -> its events, not yet popped
        self._floor_frame = -1  # events of this frame and earlier are dropped (see start_episode)
        self._popped_frame = -1  # the last frame whose events were popped
        self.late_events = 0  # events that arrived after their step had returned (counted one step late)
        self.sensors: list[Any] = []
        self.out_hw = tuple(out_hw)
        self.camera_spec = camera
        self.last_bgra: np.ndarray | None = None
        self._book = book
        self._role_name = role_name
        self._resize = GrayscaleResizer((camera.height, camera.width), out_hw) if camera else None
        library = world.get_blueprint_library()
        try:
            if camera is not None:
                bp = library.find("sensor.camera.rgb")
                bp.set_attribute("image_size_x", str(camera.width))
                bp.set_attribute("image_size_y", str(camera.height))
                bp.set_attribute("fov", str(camera.fov_deg))
                bp.set_attribute("sensor_tick", "0.0")  # one image per simulation step
                mount = api.Transform(api.Location(x=camera.x_m, z=camera.z_m), api.Rotation(pitch=camera.pitch_deg))
                self._attach(world, bp, mount, ego, self._images.put)
            self._attach(world, library.find("sensor.other.collision"), api.Transform(), ego, self._on_collision)
            self._attach(world, library.find("sensor.other.lane_invasion"), api.Transform(), ego, self._on_lane_invasion)
            bp = library.find("sensor.other.obstacle")
            bp.set_attribute("distance", str(obstacle_distance_m))
            bp.set_attribute("only_dynamics", "true")  # vehicles, not kerbs and walls
            bp.set_attribute("sensor_tick", "0.0")
            self._attach(world, bp, api.Transform(api.Location(x=obstacle_x_m, z=0.7)), ego, self._on_obstacle)
        except Exception:
            self.stop()  # half built: the spawned sensors are in the book; the env's next batch destroys them
            raise

    # --- construction / destruction -------------------------------------------------------------
    def _attach(self, world: Any, bp: Any, transform: Any, ego: Any, callback: Any) -> None:
        if self._role_name:
            set_role_name(bp, self._role_name)
        sensor = world.spawn_actor(bp, transform, attach_to=ego)
        self._book.add(sensor.id, sensor.type_id)
        self.sensors.append(sensor)
        sensor.listen(callback)

    def stop(self) -> None:
        """Stop every sensor's stream (client side; safe when the server is gone). The sensors are
        destroyed afterwards by the env, in its batch (``ActorBook.destroy_all``)."""
        for sensor in self.sensors:
            try:
                sensor.stop()
            except RuntimeError:
                pass

    # --- callbacks (CARLA's threads) -------------------------------------------------------------
    def _frame_events(self, event: Any) -> SensorEvents | None:
        """The (lock-held) record of ``event.frame``; None when that frame is before the episode."""
        frame = int(event.frame)
        if frame <= self._floor_frame:
            return None
        if frame <= self._popped_frame:
            self.late_events += 1
            logger.debug("CARLA: %s of frame %d arrived after its step; counted in the next step",
                         type(event).__name__, frame)
        return self._events.setdefault(frame, SensorEvents())

    def _on_collision(self, event: Any) -> None:
        with self._lock:
            rec = self._frame_events(event)
            if rec is None:
                return
            if not rec.collision:
                other = getattr(event, "other_actor", None)
                rec.collision_with = str(getattr(other, "type_id", "")) if other is not None else ""
            rec.collision = True

    def _on_lane_invasion(self, event: Any) -> None:
        with self._lock:
            rec = self._frame_events(event)
            if rec is not None:
                rec.lane_invasion = True

    def _on_obstacle(self, event: Any) -> None:
        with self._lock:
            rec = self._frame_events(event)
            d = float(event.distance)
            if rec is not None and d < rec.obstacle_distance_m:
                rec.obstacle_distance_m = d
                rec.obstacle_actor = event.other_actor

    # --- observation managers (env thread) -------------------------------------------------------
    def start_episode(self, frame: int) -> SensorEvents:
        """The episode starts after simulation frame ``frame`` (the reset's tick): returns that frame's
        events (for the obstacle ahead) and from now on drops every event of ``frame`` and earlier,
        also those that arrive later (the ego settling onto the road is no collision of the episode)."""
        events = self.pop_events(frame)
        with self._lock:
            self._floor_frame = max(self._floor_frame, int(frame))
        return events

    def pop_events(self, frame: int) -> SensorEvents:
        """Events of the simulation frames up to ``frame`` not popped yet, merged; later frames' stay."""
        out = SensorEvents()
        with self._lock:
            for f in sorted(k for k in self._events if k <= frame):
                out.merge(self._events.pop(f))
            self._popped_frame = max(self._popped_frame, int(frame))
        return out

    def wait_image(self, frame: int, timeout_s: float) -> np.ndarray:
        """Grayscale ``(H, W)`` uint8 frame of simulation frame ``frame`` (black without a camera).

        Raises:
            RuntimeError: no image of that frame arrived within ``timeout_s`` (treated as a server fault).
        """
        if self._resize is None:
            return np.zeros(self.out_hw, dtype=np.uint8)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                image = self._images.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise RuntimeError(f"camera image of frame {frame} did not arrive within {timeout_s:g} s") from None
            if int(image.frame) >= frame:  # older images were for frames already consumed
                # a copy: raw_data's memory is freed with the image, and render() reads this later
                self.last_bgra = image_to_bgra(image).copy()
                return self._resize(self.last_bgra)

    def last_rgb(self) -> np.ndarray | None:
        """Last camera image as ``(h, w, 3)`` RGB uint8 (for ``render()``), or None."""
        if self.last_bgra is None:
            return None
        return self.last_bgra[..., 2::-1].copy()

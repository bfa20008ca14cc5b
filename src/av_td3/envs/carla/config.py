"""The ``carla`` config section: where the CARLA 0.9.16 server is and how the env talks to it.

Every key is read by ``av_td3.envs.carla`` (the module that reads it is named in its description).
Keys shared with the town backend (route, waypoints, frame stack, image size, scenario, step limit)
live in the ``env`` section instead.
"""

from __future__ import annotations

from pydantic import Field

from av_td3.config_base import StrictModel
from av_td3.envs.sections import DrivingSections


class CarlaConfig(StrictModel):
    # --- server and connection (connection.py) -------------------------------------------------
    host: str = "localhost"
    port: int = Field(2000, ge=1, le=65535, description="RPC port of env index 0's server.")
    port_step: int = Field(
        3, ge=1, le=1000,
        description="Env index i talks to port + i * port_step (a server also holds port+1 and port+2).",
    )
    timeout_s: float = Field(
        10.0, gt=0,
        description="Time-out of the first connection in total (all its attempts and waits), of each reconnect "
        "attempt, tick and camera image, seconds.",
    )
    load_timeout_s: float = Field(120.0, gt=0, description="Time-out while the server loads the town, seconds.")
    retries: int = Field(
        3, ge=0, le=100,
        description="Connection attempts after the first: on the first connection (as many as fit in timeout_s "
        "with attempts of >= 1 s) and on a reconnect after a fault.",
    )
    backoff_s: float = Field(1.0, ge=0, le=600, description="Wait before retry k is backoff_s * 2**k, seconds.")

    # --- world settings and traffic manager (world.py) -----------------------------------------
    town: str = "Town01"
    no_rendering: bool = Field(
        False, description="Server skips rendering: no camera is spawned and image frames are black."
    )
    tm_port: int | None = Field(
        None, ge=1, le=65535,
        description="Traffic Manager port of env index 0; None = its server port + 6000. Env i adds i.",
    )
    tm_seed: int = Field(0, ge=0, description="Traffic Manager seed until reset(seed=...) gives one.")

    # --- actors (actors.py) --------------------------------------------------------------------
    ego_blueprint: str = "vehicle.tesla.model3"
    npc_filter: str = Field("vehicle.*", description="Blueprint pattern of NPC vehicles (4 wheels only).")
    npc_min_distance_m: float = Field(20.0, ge=0, description="No NPC spawns closer than this to the ego, m.")

    # --- sensors (sensors.py) ------------------------------------------------------------------
    # (camera.py: the defaults give the town's geometry; a policy trained in the town sees the same picture)
    camera_width: int | None = Field(
        None, ge=16, le=4096,
        description="RGB camera width, pixels; None = 2 x env.image_width. Must keep the image's aspect ratio.",
    )
    camera_height: int | None = Field(
        None, ge=16, le=4096,
        description="RGB camera height, pixels; None = 2 x env.image_height. Must keep the image's aspect ratio.",
    )
    camera_fov_deg: float = Field(90.0, gt=0, lt=180, description="Front camera horizontal FOV (the town's: 90), deg.")
    camera_x_m: float = Field(1.6, description="Front camera position ahead of the ego origin (the town's: 1.6), m.")
    camera_z_m: float = Field(1.5, description="Front camera height above the ego origin (the town's: 1.5), m.")
    bev_height_m: float = Field(
        30.0, gt=0,
        description="Height of the top-down camera (env.camera.view=bev), m; its FOV is set so that it covers "
        "the town's 10 m behind to 30 m ahead.",
    )
    obstacle_distance_m: float = Field(30.0, gt=0, le=200, description="Obstacle sensor range, m.")

    # --- routes (route_planner.py) -------------------------------------------------------------
    route_start_index: int = Field(0, ge=0, description="Spawn point where the default route starts.")
    route_length_m: float = Field(
        400.0, gt=10, description="Wanted route length; the goal is the spawn point whose route is nearest, m."
    )


class CarlaSections(DrivingSections):
    """What ``CarlaEnv`` reads: the shared ``env`` and ``reward`` sections and ``carla``."""

    carla: CarlaConfig = Field(default_factory=CarlaConfig)

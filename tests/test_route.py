"""Route maths: signed lateral deviation, heading-error wrap, vehicle-frame waypoints, monotone tracking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3.envs.route import Route, resample_polyline, world_to_vehicle


def _straight(yaw: float = 0.0, length: float = 100.0) -> Route:
    d = np.array([math.cos(yaw), math.sin(yaw)])
    return Route(np.stack([np.zeros(2), d * length]), spacing_m=2.0)


def test_lateral_deviation_is_signed_positive_right():
    east = _straight(0.0)
    # Facing east, south (y < 0) is to the right.
    assert east.project(10.0, -1.0, 0.0).lateral_m == pytest.approx(1.0)
    assert east.project(10.0, 1.0, 0.0).lateral_m == pytest.approx(-1.0)
    north = _straight(math.pi / 2)
    # Facing north, east (x > 0) is to the right.
    assert north.project(0.5, 10.0, math.pi / 2).lateral_m == pytest.approx(0.5)
    assert north.project(-0.5, 10.0, math.pi / 2).lateral_m == pytest.approx(-0.5)


@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-math.pi, math.pi),
    offset=st.floats(-5.0, 5.0),
    along=st.floats(1.0, 90.0),
    dyaw=st.floats(-3.0, 3.0),
)
def test_projection_is_rotation_invariant(yaw, offset, along, dyaw):
    route = _straight(yaw)
    right = np.array([math.sin(yaw), -math.cos(yaw)])
    p = np.array([math.cos(yaw), math.sin(yaw)]) * along + right * offset
    route.localize(p[0], p[1])  # tracking searches near the last match: start it at the pose
    proj = route.project(p[0], p[1], yaw + dyaw, update=False)
    assert proj.lateral_m == pytest.approx(offset, abs=1e-6)
    assert proj.progress_m == pytest.approx(along, abs=1e-6)
    assert proj.heading_error_rad == pytest.approx(dyaw, abs=1e-9)


def test_heading_error_wraps_to_minus_pi_pi():
    west = _straight(math.pi)  # tangent = +pi
    proj = west.project(-10.0, 0.0, -math.pi + 0.1)  # yaw -pi + 0.1 is 0.1 rad counter-clockwise of +pi
    assert proj.heading_error_rad == pytest.approx(0.1, abs=1e-9)
    proj = west.project(-10.0, 0.0, math.pi - 0.1)
    assert proj.heading_error_rad == pytest.approx(-0.1, abs=1e-9)
    for yaw in np.linspace(-10, 10, 41):
        assert -math.pi <= west.project(-10.0, 0.0, yaw, update=False).heading_error_rad < math.pi


def test_waypoints_ahead_in_vehicle_frame():
    east = _straight(0.0)
    ahead = east.waypoints_ahead(0.0, 0.0, 0.0, 3)
    np.testing.assert_allclose(ahead, [[2, 0], [4, 0], [6, 0]], atol=1e-9)
    # A vehicle facing north sees an eastward route to its right (y > 0).
    ahead = east.waypoints_ahead(0.0, 0.0, math.pi / 2, 2)
    np.testing.assert_allclose(ahead, [[0, 2], [0, 4]], atol=1e-9)
    # Near the end the goal repeats.
    east.localize(99.0, 0.0)
    ahead = east.waypoints_ahead(99.0, 0.0, 0.0, 3)
    np.testing.assert_allclose(ahead, [[1, 0], [1, 0], [1, 0]], atol=1e-9)
    np.testing.assert_allclose(world_to_vehicle(np.array([[1.0, -1.0]]), 0, 0, 0), [[1.0, 1.0]])


def test_progress_does_not_jump_to_a_nearby_part_of_the_route():
    # A hairpin: out along y = 0, back along y = 3.5 (a road and its opposite lane).
    pts = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 3.5], [0.0, 3.5]])
    route = Route(pts, spacing_m=1.0)
    route.reset()
    last = 0.0
    for x in np.arange(0.0, 60.0, 0.4):
        # Drift toward the return leg: a global search would jump to it (progress ~ 140-200 m).
        proj = route.project(x, 2.0, 0.0)
        assert proj.progress_m >= last - 1e-9
        assert proj.progress_m < 100.0
        last = proj.progress_m
    assert last == pytest.approx(59.6, abs=0.5)


def test_completion_and_ends():
    east = _straight(0.0, 50.0)
    assert east.length_m == pytest.approx(50.0)
    p = east.project(-5.0, 0.0, 0.0)
    assert p.progress_m == 0.0 and p.completion == 0.0
    east.reset(len(east.waypoints) - 2)
    p = east.project(60.0, 1.0, 0.0)
    assert p.completion == 1.0 and p.remaining_m == 0.0 and p.lateral_m == pytest.approx(-1.0)
    assert east.point_at(25.0)[:2] == pytest.approx((25.0, 0.0))


def test_resampling_and_bad_input():
    pts = resample_polyline(np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 5.0]]), 2.0)
    d = np.hypot(*np.diff(pts, axis=0).T)
    assert np.all(d <= 2.0 + 1e-9) and np.all(d[:-1] == pytest.approx(2.0))
    np.testing.assert_allclose(pts[-1], [10.0, 5.0])
    with pytest.raises(ValueError, match="waypoints"):
        Route(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="same point"):
        Route(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="spacing"):
        Route(np.array([[0.0, 0.0], [1.0, 0.0]]), spacing_m=0.0)


def test_heading_error_is_smooth_along_bends():
    # A quarter circle of radius 10 m at 2 m spacing turns 0.2 rad per segment; a vehicle exactly on the
    # arc and tangent to it must see ~0 heading error (not a +-0.1 rad saw-tooth). The end segments
    # keep their chord heading (a route may start/end right at a bend), so they are left out.
    th = np.linspace(-math.pi / 2, 0.0, 200)
    route = Route(np.stack([10 * np.cos(th), 10 * np.sin(th) + 10.0], 1), spacing_m=2.0)
    route.reset(1)
    for a in np.linspace(-math.pi / 2 + 0.21, -0.21, 60):
        x, y, yaw = 10 * math.cos(a), 10 * math.sin(a) + 10.0, a + math.pi / 2
        proj = route.project(x, y, yaw)
        assert abs(proj.heading_error_rad) < 0.02
        assert abs(proj.lateral_m) < 0.06  # chord sagitta only
        assert route.point_at(proj.progress_m)[2] == pytest.approx(yaw - proj.heading_error_rad, abs=1e-9)

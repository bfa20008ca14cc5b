"""NPC traffic, vectorised: every quantity is an array over vehicles, updated with a fixed number of
numpy operations per step, so 100 vehicles cost little more than 20.

Each NPC lives on the lane graph as ``(lane, s)`` (lane id, metres from the lane start) and drives:

* car following with IDM (Intelligent Driver Model) behind the nearest of: the vehicle ahead on its
  lane or on the next one or two lanes, the ego (when it sits in the straight corridor ahead of the NPC,
  or when its footprint covers a point of the NPC's own upcoming lane path, so an ego standing in a
  junction is seen round a turn, see ``_ego_gaps``), and a virtual stop line while it must yield;
* turns chosen at random (seeded) when it enters a lane, with lower desired speed on turn connectors;
* junction yielding: right of way per junction connector; a vehicle enters only when no conflicting
  connector is in use or wanted by a vehicle that has waited longer, and its exit lane has room (see
  ``_junction_stops``). The ego inside a junction blocks new entries there. NPC-NPC contact is not
  simulated (these rules keep them apart).

Positions (``x``, ``y``, ``yaw``: ``(n,)`` float64, world frame of ``layout.py``) are refreshed after every
``reset``/``step`` for the camera and event checks.
"""

from __future__ import annotations

import math

import numpy as np

from av_td3.envs.town.lane_graph import LaneGraph
from av_td3.envs.town.layout import JUNCTION_RADIUS_M

__all__ = ["Traffic", "NPC_LENGTH_M", "NPC_WIDTH_M", "MAX_NPCS"]

NPC_LENGTH_M = 4.6
NPC_WIDTH_M = 1.9
#: IDM parameters: max acceleration, comfortable braking (m/s^2), jam gap (m), time headway (s).
IDM_A, IDM_B, IDM_S0, IDM_T = 1.5, 2.0, 2.0, 1.2
#: Hardest NPC braking, m/s^2.
MAX_DECEL = 9.0
#: Distance to a junction at which an NPC asks for right of way, m.
DECISION_M = 30.0
#: Spawn rules: no NPC within this distance of the ego, nor of another NPC, m.
EGO_CLEARANCE_M = 20.0
SPAWN_SPACING_M = 9.0
#: Candidate rounds of ``reset`` (the first one, of ``3 count + 40`` candidates, nearly always suffices).
SPAWN_ROUNDS = 8
#: Most NPCs ``reset`` can always place (any seed, route and ego start). Packed by this random placement
#: the town holds 198-216 at the spawn spacing (400 seeds, default and random routes), and 180 were
#: placed in every one of 300 tries; 150 keeps a margin. ``TownEnv`` refuses a larger ``env.npc_count``.
MAX_NPCS = 150
#: The ego counts as "ahead" of an NPC inside this corridor half-width / range, m.
EGO_CORRIDOR_M = 2.0
EGO_RANGE_M = 40.0
#: NPCs also follow their own lane path (through turns) this far ahead of their front bumper, sampled
#: every ``EGO_PATH_STEP_M``, and treat the ego as ahead where its footprint, widened by half an NPC
#: width plus ``EGO_PATH_MARGIN_M``, covers a sample, m.
EGO_PATH_M = 12.0
EGO_PATH_STEP_M = 0.5
EGO_PATH_MARGIN_M = 0.3
_PATH_D = np.arange(0.0, EGO_PATH_M + 1e-9, EGO_PATH_STEP_M)
_FAR = 1e4


class Traffic:
    """NPC vehicles on the town's lane graph (see the module docstring).

    Args:
        graph: the lane graph (``TownMap.graph``).
        speed_range_mps: desired speeds are drawn uniformly from this range.

    Attributes (``(n,)`` arrays unless noted): ``lane``, ``s`` (m), ``v`` (m/s), ``v0`` (desired speed),
    ``next_lane``, ``granted`` (may enter the junction ahead), ``wait`` (s at a stop line), ``parked``,
    ``length``/``width`` (m), ``xy`` ``(n, 2)``, ``x``/``y`` (views of ``xy``), ``yaw``, ``cos``/``sin``.
    """

    def __init__(self, graph: LaneGraph, speed_range_mps: tuple[float, float] = (7.0, 11.0)):
        self.graph = graph
        self.speed_range = speed_range_mps
        self._road_lanes = np.flatnonzero(graph.lane_kind == 0)
        w = graph.lane_length[self._road_lanes]
        self._road_p = w / w.sum()
        self.rng = np.random.default_rng(0)
        self._alloc(0)

    def _alloc(self, n: int) -> None:
        self.n = n
        self.lane = np.zeros(n, dtype=np.int64)
        self.s = np.zeros(n)
        self.v = np.zeros(n)
        self.v0 = np.zeros(n)
        self.next_lane = np.zeros(n, dtype=np.int64)
        self.granted = np.zeros(n, dtype=bool)
        self.wait = np.zeros(n)
        self.parked = np.zeros(n, dtype=bool)
        self.length = np.full(n, NPC_LENGTH_M)
        self.width = np.full(n, NPC_WIDTH_M)
        self._refresh_pose()

    # ------------------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator, count: int, ego_x: float, ego_y: float) -> None:
        """Spawn ``count`` NPCs on road lanes, none within ``EGO_CLEARANCE_M`` of the ego nor within
        ``SPAWN_SPACING_M`` of each other.

        All randomness (now and in later steps) comes from ``rng``'s stream, so a seeded env repeats
        bit-identically. Candidates are drawn in rounds until ``count`` are placed; ``MAX_NPCS`` always fit
        (checked over many seeds and routes). If the town runs out of room (only above ``MAX_NPCS``) this
        raises ``RuntimeError`` rather than placing fewer.
        """
        self.rng = np.random.default_rng(rng.integers(2**63))
        if count <= 0:
            self._alloc(0)
            return
        m = self.graph
        kept_lane, kept_s = np.empty(0, dtype=np.int64), np.empty(0)
        kept_xy = np.empty((0, 2))
        k = 3 * count + 40
        for _ in range(SPAWN_ROUNDS):
            lane = self.rng.choice(self._road_lanes, size=k, p=self._road_p)
            s = self.rng.uniform(0.0, 1.0, size=k) * m.lane_length[lane]
            xy, _ = m.lane_pose(lane, s)
            ok = np.hypot(xy[:, 0] - ego_x, xy[:, 1] - ego_y) >= EGO_CLEARANCE_M
            if len(kept_xy):
                d = np.hypot(xy[:, None, 0] - kept_xy[None, :, 0], xy[:, None, 1] - kept_xy[None, :, 1])
                ok &= d.min(axis=1) >= SPAWN_SPACING_M
            lane, s, xy = lane[ok], s[ok], xy[ok]
            close = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1]) < SPAWN_SPACING_M
            blocked = np.zeros(len(lane), dtype=bool)
            keep = []
            need = count - len(kept_lane)
            for i in range(len(lane)):  # greedy thinning: O(k) cheap vector ops
                if not blocked[i]:
                    keep.append(i)
                    if len(keep) == need:
                        break
                    blocked |= close[i]
            keep = np.array(keep, dtype=np.int64)
            kept_lane = np.concatenate([kept_lane, lane[keep]])
            kept_s = np.concatenate([kept_s, s[keep]])
            kept_xy = np.concatenate([kept_xy, xy[keep]])
            if len(kept_lane) == count:
                break
            k = 10 * (count - len(kept_lane)) + 200  # the free gaps are few and small: many more tries
        else:
            raise RuntimeError(
                f"could place only {len(kept_lane)} of {count} NPC vehicles {SPAWN_SPACING_M:g} m apart in the town "
                f"(at most {MAX_NPCS} always fit)"
            )
        self._alloc(count)
        self.lane, self.s = kept_lane, kept_s
        self.v0 = self.rng.uniform(*self.speed_range, size=self.n)
        self.v = self.v0 * self.rng.uniform(0.3, 0.8, size=self.n)
        self.next_lane = self._pick_successor(self.lane)
        self._refresh_pose()

    def add_vehicle(self, lane: int, s: float, speed: float = 0.0, parked: bool = True) -> int:
        """Place one more NPC at ``(lane, s)`` (scripted scenarios); a parked one never moves. Returns its index."""
        fields = dict(
            lane=lane, s=s, v=speed, v0=0.0 if parked else self.speed_range[0], granted=False, wait=0.0,
            parked=parked, length=NPC_LENGTH_M, width=NPC_WIDTH_M,
        )
        for name, value in fields.items():
            arr = getattr(self, name)
            setattr(self, name, np.append(arr, np.asarray(value, dtype=arr.dtype)))
        self.next_lane = np.append(self.next_lane, self._pick_successor(np.array([lane]))).astype(np.int64)
        self.n += 1
        self._refresh_pose()
        return self.n - 1

    # ------------------------------------------------------------------------------------------
    def _pick_successor(self, lane: np.ndarray) -> np.ndarray:
        m = self.graph
        idx = (self.rng.random(len(lane)) * m.num_successors[lane]).astype(np.int64)
        return m.successors[lane, idx]

    def _refresh_pose(self) -> None:
        m = self.graph
        self.xy, j = m.lane_pose(self.lane, self.s)
        self.x, self.y = self.xy[:, 0], self.xy[:, 1]
        self.yaw, self.cos, self.sin = m.lane_yaw[j], m.lane_cos[j], m.lane_sin[j]

    def _lane_leaders(self, to_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bumper gap and speed of the vehicle ahead on the same, next or next-but-one lane.

        Also stores ``_is_lead`` (first in its lane's queue) and ``_first_s`` (per lane, s of its
        rearmost vehicle) for the junction rules.
        """
        m, n = self.graph, self.n
        order = np.argsort(self.lane * 4096.0 + self.s)  # by lane, then s (lanes are < 4 km)
        ls, ss, vs = self.lane[order], self.s[order], self.v[order]
        same = np.zeros(n, dtype=bool)  # same[k]: sorted k+1 is on the same lane (its leader)
        same[:-1] = ls[1:] == ls[:-1]
        gap_sorted = np.full(n, _FAR)
        vl_sorted = np.zeros(n)
        gap_sorted[:-1] = ss[1:] - ss[:-1]
        vl_sorted[:-1] = vs[1:]
        first = np.ones(n, dtype=bool)  # rearmost vehicle of each lane
        first[1:] = ~same[:-1]
        first_s = np.full(m.num_lanes, _FAR)
        first_v = np.zeros(m.num_lanes)
        fl = ls[first]
        first_s[fl], first_v[fl] = ss[first], vs[first]
        self._first_s = first_s
        unsorted = np.empty((3, n))
        unsorted[:, order] = (np.where(same, gap_sorted, _FAR), vl_sorted, same)
        gap, vlead, not_lead = unsorted
        self._is_lead = not_lead == 0.0

        nxt = self.next_lane
        nn = m.first_successor[nxt]  # connectors and pass-through lanes have one successor
        s1 = first_s[nxt]
        on_next = s1 < _FAR
        ahead = np.where(on_next, to_end + s1, to_end + m.lane_length[nxt] + first_s[nn])
        v_ahead = np.where(on_next, first_v[nxt], first_v[nn])
        use = self._is_lead
        return np.where(use, ahead, gap) - self.length, np.where(use, v_ahead, vlead)

    def _junction_stops(self, dt: float, ex: float, ey: float, to_end: np.ndarray) -> np.ndarray:
        """Gap to a virtual stop line for NPCs that must yield (``_FAR`` for the others).

        Right of way is granted per connector: the lead vehicle of an approach lane within
        ``DECISION_M`` of a junction may enter its next connector when (a) no vehicle inside the junction
        or already granted uses a conflicting connector (``map.lane_conflict``), (b) no asking vehicle of
        higher priority (longer wait, then nearer) wants a conflicting connector, (c) its exit lane has
        room (nobody stops inside a junction), and (d) the ego is not inside that junction. Only lead
        vehicles ask, so a granted vehicle is never stuck behind an ungranted one, and the priority rule
        serves every approach in turn. Uses ``_is_lead``/``_first_s`` from ``_lane_leaders``.
        """
        m = self.graph
        end_j = m.lane_end_junction[self.lane]
        cand = (end_j >= 0) & (to_end < DECISION_M)
        ask_mask = cand & ~self.granted & self._is_lead
        if ask_mask.any():
            ask = np.flatnonzero(ask_mask)
            room = self._first_s[m.first_successor[self.next_lane[ask]]] > NPC_LENGTH_M + IDM_S0 + 1.0
            ask = ask[room]
        else:
            ask = np.empty(0, dtype=np.int64)
        if len(ask):
            active = np.zeros(m.num_lanes, dtype=bool)
            active[self.lane[m.lane_junction[self.lane] >= 0]] = True
            active[self.next_lane[cand & self.granted]] = True
            if len(ask) > 1:
                ask = ask[np.lexsort((ask, to_end[ask], -self.wait[ask]))]  # priority order
            req = self.next_lane[ask]
            conflict = m.lane_conflict[req]
            blocked = (conflict & active).any(axis=1)
            if len(ask) > 1:
                blocked |= np.tril(conflict[:, req], -1).any(axis=1)
            jx, jy = m.junction_xy[end_j[ask]].T
            blocked |= (jx - ex) ** 2 + (jy - ey) ** 2 < (JUNCTION_RADIUS_M + 1.0) ** 2
            self.granted[ask[~blocked]] = True
        must_stop = cand & ~self.granted
        self.wait = np.where(must_stop, self.wait + dt * (self.v < 1.0), 0.0)
        return np.where(must_stop, np.maximum(to_end - 0.5, 0.01), _FAR)

    def _ego_gaps(
        self, ex: float, ey: float, eyaw: float, ev: float, ego_len: float, ego_wid: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bumper gap to the ego for NPCs that have it ahead (``_FAR`` otherwise), and its speed along
        each NPC's heading.

        Ahead means either (a) the ego centre is in the straight corridor ahead of the NPC
        (``EGO_CORRIDOR_M`` x ``EGO_RANGE_M``), or (b) the ego footprint, widened by half the NPC width
        plus ``EGO_PATH_MARGIN_M``, covers a point of the NPC's upcoming lane path (current lane, next
        lane and the one after) within ``EGO_PATH_M`` of its front bumper; (b) catches an ego standing
        in a junction in the path of a turning NPC, which the straight corridor misses. (b) is evaluated,
        vectorised, only for NPCs close enough to reach the ego within that distance.
        """
        dx, dy = ex - self.x, ey - self.y
        fwd = dx * self.cos + dy * self.sin
        lat = dx * self.sin - dy * self.cos
        hit = (fwd > 0.0) & (fwd < EGO_RANGE_M) & (np.abs(lat) < EGO_CORRIDOR_M)
        gap = np.where(hit, fwd - 0.5 * (self.length + ego_len), _FAR)
        pad = 0.5 * NPC_WIDTH_M + EGO_PATH_MARGIN_M
        reach = 0.5 * NPC_LENGTH_M + EGO_PATH_M + math.hypot(0.5 * ego_len + pad, 0.5 * ego_wid + pad)
        near = np.flatnonzero(dx * dx + dy * dy < reach * reach)
        if len(near):
            gap[near] = np.minimum(gap[near], self._ego_path_gaps(near, ex, ey, eyaw, ego_len, ego_wid, pad))
        elif not hit.any():
            return gap, 0.0
        return gap, ev * (math.cos(eyaw) * self.cos + math.sin(eyaw) * self.sin)

    def _ego_path_gaps(
        self, idx: np.ndarray, ex: float, ey: float, eyaw: float, ego_len: float, ego_wid: float, pad: float
    ) -> np.ndarray:
        """For NPCs ``idx``: how far the front bumper can move along the lane path before it reaches the
        widened ego footprint (``_FAR`` if not within ``EGO_PATH_M``). One ``lane_pose`` gather."""
        m = self.graph
        lane, nxt = self.lane[idx, None], self.next_lane[idx, None]
        s = (self.s[idx] + 0.5 * self.length[idx])[:, None] + _PATH_D  # (k, D) arc length of the bumper
        len0, len1 = m.lane_length[lane], m.lane_length[nxt]
        on1 = s >= len0
        s = np.where(on1, s - len0, s)
        on2 = on1 & (s >= len1)  # past the next lane as well: its (single, for connectors) successor
        ln = np.where(on2, m.first_successor[nxt], np.where(on1, nxt, lane))
        s = np.minimum(np.where(on2, s - len1, s), m.lane_length[ln])
        xy, _ = m.lane_pose(ln.ravel(), s.ravel())
        c, sn = math.cos(eyaw), math.sin(eyaw)
        qx, qy = xy[:, 0] - ex, xy[:, 1] - ey
        inside = (np.abs(qx * c + qy * sn) < 0.5 * ego_len + pad) & (np.abs(qy * c - qx * sn) < 0.5 * ego_wid + pad)
        inside = inside.reshape(s.shape)
        return np.where(inside.any(axis=1), _PATH_D[np.argmax(inside, axis=1)], _FAR)

    # ------------------------------------------------------------------------------------------
    def step(
        self, dt: float, ego_x: float, ego_y: float, ego_yaw: float, ego_speed: float, ego_length: float,
        ego_width: float,
    ) -> None:
        """Advance all NPCs by ``dt`` seconds given the ego's pose (world frame), speed and size (m)."""
        if self.n == 0:
            return
        m = self.graph
        lane_len = m.lane_length[self.lane]
        to_end = lane_len - self.s
        gap, v_lead = self._lane_leaders(to_end)
        gap_e, v_e = self._ego_gaps(ego_x, ego_y, ego_yaw, ego_speed, ego_length, ego_width)
        gap_s = self._junction_stops(dt, ego_x, ego_y, to_end)
        # IDM against the nearest of: lane leader, ego, stop line (speed 0).
        closer = gap_e < gap
        gap = np.where(closer, gap_e, gap)
        v_lead = np.where(closer, v_e, v_lead)
        closer = gap_s < gap
        gap = np.maximum(np.where(closer, gap_s, gap), 0.1)
        v_lead = np.where(closer, 0.0, v_lead)

        v = self.v
        v0 = np.minimum(self.v0, m.lane_speed_limit[self.lane])
        v0 = np.where(to_end < 20.0, np.minimum(v0, m.lane_speed_limit[self.next_lane]), v0)
        np.maximum(v0, 0.1, out=v0)
        s_star = IDM_S0 + np.maximum(v * IDM_T + v * (v - v_lead) * _INV_2SQRT_AB, 0.0)
        acc = IDM_A * (1.0 - (v / v0) ** 4 - (s_star / gap) ** 2)
        np.maximum(acc, -MAX_DECEL, out=acc)
        acc[self.parked] = -MAX_DECEL
        self.v = v = np.maximum(v + acc * dt, 0.0)
        self.s = s = self.s + v * dt

        over = s >= lane_len
        if over.any():
            idx = np.flatnonzero(over)
            s[idx] -= lane_len[idx]
            self.lane[idx] = new = self.next_lane[idx]
            self.next_lane[idx] = self._pick_successor(new)
            self.granted[idx] = False
            self.wait[idx] = 0.0
        self._refresh_pose()


_INV_2SQRT_AB = 1.0 / (2.0 * math.sqrt(IDM_A * IDM_B))

"""The heat plan as a linear program, solved by HiGHS (``highspy``, warm-started from the last plan).

Per step ``k`` of the horizon: heat bought ``q_k`` (within the GPUs' capacity) and free heat
``f_k`` (solar export, up to the surplus), the room's state after the step (a linear model:
``x' = A x + B_q (q + f) + B_o T_out + e``), and two comfort slacks — ``d_k`` up to the
tolerance below the setpoint at a moderate price, ``s_k`` beyond it at a heavy one. The room
may rise above the setpoint (heat stored) by at most ``store_k`` over the highest setpoint
of the next ``PREHEAT_LOOKAHEAD_H`` (so optimum start is allowed) and never above
``max_room_c``; an overshoot it cannot avoid (a warm start) is a heavily priced slack, never
an infeasible program.

Work with a deadline (batches) asks for heat: before each deadline, the heat its work makes with
the GPUs at full power is made, as a soft constraint — so the plan puts it where the room wants heat
(or heat may be stored) rather than leaving it to the deadline rule, which runs it wanted or not.

Objective: Σ weight_k · kWh_k (price, carbon or 1) + comfort penalties + work's heat not made in
time. Weights are scaled to a mean of 1, so the penalties mean the same whatever the currency or unit.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg import expm

from heatctl.planner.model import RoomModel

FloatArray = npt.NDArray[np.float64]
PREHEAT_LOOKAHEAD_H = 12.0
SETPOINT_PENALTY = 2.0  # per K below the setpoint per step (within the tolerance): weight-kWh
COMFORT_PENALTY = 50.0  # per K below setpoint − tolerance, or above the upper bound, per step
FREE_HEAT_WEIGHT = 1e-4  # solar surplus is almost free: used, but not wasted
WORK_SHORT_PENALTY = 10.0  # per kWh of work's heat not made before its deadline: met unless comfort pays


@dataclass(frozen=True, slots=True)
class LinearRoom:
    """A room as the LP sees it over one step: ``x' = A x + bq·Q + bo·T_out + e``; the room is ``x[0]``."""

    a: FloatArray  # n×n
    bq: FloatArray  # n
    bo: FloatArray  # n
    e: FloatArray  # n
    x0: FloatArray  # the state now

    @classmethod
    def from_model(cls, model: RoomModel, room_c: float, envelope_c: float, step_s: float) -> LinearRoom:
        return cls.two_node(
            ci_j_per_k=model.ci_j_per_k,
            ce_j_per_k=model.ce_j_per_k,
            rie_k_per_w=model.rie_k_per_w,
            rea_k_per_w=model.rea_k_per_w,
            gains_w=model.gains_w,
            air_c=room_c,
            envelope_c=envelope_c,
            step_s=step_s,
        )

    @classmethod
    def two_node(
        cls,
        *,
        ci_j_per_k: float,
        ce_j_per_k: float,
        rie_k_per_w: float,
        rea_k_per_w: float,
        gains_w: float,
        air_c: float,
        envelope_c: float,
        step_s: float,
    ) -> LinearRoom:
        """The simulator's 2R2C room, discretised exactly (zero-order hold): for the oracle."""
        gie, gea = 1.0 / rie_k_per_w, 1.0 / rea_k_per_w
        ac = np.array([[-gie / ci_j_per_k, gie / ci_j_per_k], [gie / ce_j_per_k, -(gie + gea) / ce_j_per_k]])
        bc = np.array([[1.0 / ci_j_per_k, 0.0], [0.0, gea / ce_j_per_k]])  # inputs: heat, outdoor
        aug = np.zeros((4, 4))
        aug[:2, :2], aug[:2, 2:] = ac * step_s, bc * step_s
        m = expm(aug)
        ad, bd = m[:2, :2], m[:2, 2:]
        return cls(a=ad, bq=bd[:, 0], bo=bd[:, 1], e=bd[:, 0] * gains_w, x0=np.array([air_c, envelope_c]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Outlook:
    """What comes, one value per step of the horizon."""

    setpoint_c: FloatArray
    outdoor_c: FloatArray
    weight: FloatArray  # price, carbon intensity or 1 per kWh
    cap_w: FloatArray  # the most heat the GPUs may give in each step
    surplus_w: FloatArray  # free heat available (solar export)
    # Work with a deadline: (steps before the deadline, heat in W·steps above the GPUs' idle that the
    # work makes at full power), earliest first. Its heat is made before then if comfort allows.
    work: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LpPlan:
    heat_w: FloatArray  # per step
    room_c: FloatArray  # at the end of each step
    upper_c: FloatArray  # the most the room may be at each step's end (above it only when it cannot help it)
    work_short: float = 0.0  # heat for work (W·steps) the plan cannot make before its deadlines
    states: FloatArray  # every state at the end of each step (n_steps × n)
    objective: float


class PlanError(Exception):
    """The solver failed or gave no plan."""


@dataclass(frozen=True, slots=True)
class _Bounds:
    """What changes from plan to plan (HiGHS's form: min cost·v, col_lo ≤ v ≤ col_hi, row_lo ≤ A v ≤ row_hi)."""

    cost: FloatArray
    col_lo: FloatArray
    col_hi: FloatArray
    row_lo: FloatArray
    row_hi: FloatArray
    upper_c: FloatArray


# Variables, in blocks of n_steps: q (heat bought), f (free heat), d (soft), s (hard below), u (above),
# then x (n_steps × n_x), then one shortfall per deadline of work. Rows: the dynamics (n_steps × n_x),
# comfort below, above, heat, then one per deadline: the heat made before it.
N_BLOCKS = 5


def _matrix(room: LinearRoom, n_steps: int, work_ends: tuple[int, ...] = ()) -> sp.csc_matrix:
    """The rows: x_{k+1} − A x_k − bq (q_k + f_k) (dynamics); T + d + s (comfort below); T − u (above); q + f (heat);
    Σ_{k < end} (q_k + f_k) + w (the heat made before each deadline, w what falls short)."""
    n_x = len(room.x0)
    q0, f0, d0, s0, u0, x0 = (i * n_steps for i in range(N_BLOCKS + 1))
    k = np.arange(n_steps)
    ones = np.ones(n_steps)
    rows, cols, vals = [], [], []
    for i in range(n_x):
        r = k * n_x + i
        rows += [r, r, r]
        cols += [x0 + k * n_x + i, q0 + k, f0 + k]
        vals += [ones, np.full(n_steps, -room.bq[i]), np.full(n_steps, -room.bq[i])]
        for j in range(n_x):
            rows.append(r[1:])
            cols.append(x0 + (k[1:] - 1) * n_x + j)
            vals.append(np.full(n_steps - 1, -room.a[i, j]))
    n_eq, room_col = n_steps * n_x, x0 + k * n_x
    below, above, heat = n_eq + k, n_eq + n_steps + k, n_eq + 2 * n_steps + k
    rows += [below, below, below, above, above, heat, heat]
    cols += [room_col, d0 + k, s0 + k, room_col, u0 + k, q0 + k, f0 + k]
    vals += [ones, ones, ones, ones, -ones, ones, ones]
    n_rows, n_cols = n_eq + 3 * n_steps, x0 + n_steps * n_x
    for j, end in enumerate(work_ends):
        made = np.arange(end)
        row = np.full(2 * end + 1, n_rows + j)
        rows.append(row)
        cols.append(np.concatenate([q0 + made, f0 + made, [n_cols + j]]))
        vals.append(np.ones(2 * end + 1))
    shape = (n_rows + len(work_ends), n_cols + len(work_ends))
    return sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)


def _bounds(
    room: LinearRoom,
    outlook: Outlook,
    *,
    step_s: float,
    tolerance_k: float,
    store_k: float,
    max_room_c: float,
    floor_w: float,
) -> _Bounds:
    n_steps, n_x = len(outlook.setpoint_c), len(room.x0)
    sp_c = np.asarray(outlook.setpoint_c, dtype=float)
    lookahead = max(round(PREHEAT_LOOKAHEAD_H * 3600.0 / step_s), 1)
    padded = np.concatenate([sp_c, np.full(lookahead - 1, -np.inf)])
    ahead_c = sliding_window_view(padded, lookahead).max(axis=1)  # the highest setpoint of the next hours
    upper_c = np.minimum(ahead_c + store_k, max_room_c)
    weight = np.asarray(outlook.weight, dtype=float)
    scale = float(np.mean(np.abs(weight))) or 1.0
    kwh_per_w = step_s / 3.6e6
    q0, f0, d0, s0, u0, x0 = (i * n_steps for i in range(N_BLOCKS + 1))
    n_vars = x0 + n_steps * n_x + len(outlook.work)
    cost = np.zeros(n_vars)
    cost[q0:f0] = weight / scale * kwh_per_w
    cost[f0:d0] = FREE_HEAT_WEIGHT * kwh_per_w
    cost[d0:s0] = SETPOINT_PENALTY
    cost[s0:u0] = COMFORT_PENALTY
    cost[u0:x0] = COMFORT_PENALTY
    cap_w = np.maximum(np.asarray(outlook.cap_w, dtype=float), 0.0)
    col_lo, col_hi = np.zeros(n_vars), np.full(n_vars, np.inf)
    col_hi[q0:f0] = cap_w
    col_hi[f0:d0] = np.maximum(outlook.surplus_w, 0.0)
    col_hi[d0:s0] = tolerance_k
    col_lo[x0 : x0 + n_steps * n_x] = -np.inf
    # Heat for work not made in time: the deadline rule runs it then, wanted or not.
    cost[x0 + n_steps * n_x :] = WORK_SHORT_PENALTY * kwh_per_w
    # Dynamics = bo·To_k + e (x_0 given); comfort; heat between the floor (the GPUs idle at it whatever
    # the plan says) and the capacity.
    b_eq = (np.outer(outlook.outdoor_c, room.bo) + room.e).reshape(-1)
    b_eq[:n_x] += room.a @ room.x0
    floor = np.minimum(floor_w, cap_w)
    idle_before = np.concatenate([[0.0], np.cumsum(floor)])
    need, made = [], 0.0
    for end, heat in outlook.work:  # cumulative: what is due before a deadline includes all due earlier
        made += heat
        need.append(idle_before[end] + made)
    row_lo = np.concatenate([b_eq, sp_c, np.full(n_steps, -np.inf), floor, need])
    row_hi = np.concatenate([b_eq, np.full(n_steps, np.inf), upper_c, cap_w, np.full(len(need), np.inf)])
    return _Bounds(cost, col_lo, col_hi, row_lo, row_hi, upper_c)


class LpSolver:
    """HiGHS kept from plan to plan: while the room model and the horizon stay the same, only the
    outlook's numbers change and the next plan starts from the last one's basis (a few times faster);
    a refitted room model starts from that basis too."""

    def __init__(self) -> None:
        self._highs: highspy.Highs | None = None
        self._key: tuple[bytes, int, tuple[int, ...]] | None = None
        self._last: _Bounds | None = None  # what HiGHS holds now

    def solve(
        self,
        room: LinearRoom,
        outlook: Outlook,
        *,
        step_s: float,
        tolerance_k: float,
        store_k: float,
        max_room_c: float,
        floor_w: float = 0.0,
        time_limit_s: float = 5.0,
    ) -> LpPlan:
        """The cheapest heat that keeps the room comfortable over the horizon."""
        n_steps, n_x = len(outlook.setpoint_c), len(room.x0)
        b = _bounds(
            room,
            outlook,
            step_s=step_s,
            tolerance_k=tolerance_k,
            store_k=store_k,
            max_room_c=max_room_c,
            floor_w=floor_w,
        )
        work_ends = tuple(end for end, _ in outlook.work)
        key = (room.a.tobytes() + room.bq.tobytes(), n_steps, work_ends)
        h = self._highs
        if h is None or key != self._key:
            # A refitted room changes the matrix, not its shape: the last answer's basis is still a good start.
            same_shape = h is not None and self._key is not None and self._key[1:] == key[1:]
            basis = h.getBasis() if h is not None and same_shape else None
            if h is None:
                h = self._highs = _new_highs()
            h.passModel(_lp(_matrix(room, n_steps, work_ends), b))
            if basis is not None:
                h.setBasis(basis)
            self._key = key
        else:  # only what moved since the last plan
            assert self._last is not None
            last = self._last
            cols = np.flatnonzero(b.cost != last.cost).astype(np.int32)
            h.changeColsCost(len(cols), cols, b.cost[cols])
            cols = np.flatnonzero((b.col_lo != last.col_lo) | (b.col_hi != last.col_hi)).astype(np.int32)
            h.changeColsBounds(len(cols), cols, b.col_lo[cols], b.col_hi[cols])
            rows = np.flatnonzero((b.row_lo != last.row_lo) | (b.row_hi != last.row_hi)).astype(np.int32)
            h.changeRowsBounds(len(rows), rows, b.row_lo[rows], b.row_hi[rows])
        self._last = b
        h.setOptionValue("time_limit", float(time_limit_s))
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            self._highs = None  # afresh next time
            raise PlanError(f"the solver gave no plan: {h.modelStatusToString(status)}")
        x = np.asarray(h.getSolution().col_value)
        heat_w = x[:n_steps] + x[n_steps : 2 * n_steps]
        states = x[N_BLOCKS * n_steps : (N_BLOCKS + n_x) * n_steps].reshape(n_steps, n_x)
        room_c = states[:, 0]
        if not (np.all(np.isfinite(heat_w)) and np.all(np.isfinite(room_c))):
            self._highs = None
            raise PlanError("the solver's plan is not finite")
        objective = float(h.getInfo().objective_function_value)
        work_short = float(x[(N_BLOCKS + n_x) * n_steps :].sum())
        return LpPlan(
            heat_w=heat_w, room_c=room_c, upper_c=b.upper_c, states=states, objective=objective, work_short=work_short
        )


_banner_lock = threading.Lock()
_banner = {"silenced": False}


def _new_highs() -> highspy.Highs:
    """A silent HiGHS. Its first construction in a process prints a copyright banner on the C
    stdout (before any option can be set), which would land in ``heatctl plan``'s output: that
    one goes to /dev/null."""
    with _banner_lock:
        if _banner["silenced"]:
            h = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 1)
                    h = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner["silenced"] = True
    h.setOptionValue("output_flag", False)
    return h


def _lp(a: sp.csc_matrix, b: _Bounds) -> highspy.HighsLp:
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = b.cost, b.col_lo, b.col_hi
    lp.row_lower_, lp.row_upper_ = b.row_lo, b.row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    return lp


def solve(room: LinearRoom, outlook: Outlook, **settings: float) -> LpPlan:
    """One plan, solved cold (``settings``: those of ``LpSolver.solve``)."""
    return LpSolver().solve(room, outlook, **settings)

"""The heat plan as a linear program, solved by HiGHS (through ``scipy.optimize.linprog``).

Per step ``k`` of the horizon: heat bought ``q_k`` (within the GPUs' capacity) and free heat
``f_k`` (solar export, up to the surplus), the room's state after the step (a linear model:
``x' = A x + B_q (q + f) + B_o T_out + e``), and two comfort slacks — ``d_k`` up to the
tolerance below the setpoint at a moderate price, ``s_k`` beyond it at a heavy one. The room
may rise above the setpoint (heat stored) by at most ``store_k`` over the highest setpoint
of the next ``PREHEAT_LOOKAHEAD_H`` (so optimum start is allowed) and never above
``max_room_c``; an overshoot it cannot avoid (a warm start) is a heavily priced slack, never
an infeasible program.

Objective: Σ weight_k · kWh_k (price, carbon or 1) + comfort penalties. Weights are scaled to a
mean of 1, so the penalties mean the same whatever the currency or unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import expm
from scipy.optimize import linprog

from heatctl.planner.model import RoomModel

FloatArray = npt.NDArray[np.float64]
PREHEAT_LOOKAHEAD_H = 12.0
SETPOINT_PENALTY = 2.0  # per K below the setpoint per step (within the tolerance): weight-kWh
COMFORT_PENALTY = 50.0  # per K below setpoint − tolerance, or above the upper bound, per step
FREE_HEAT_WEIGHT = 1e-4  # solar surplus is almost free: used, but not wasted


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


@dataclass(frozen=True, slots=True, kw_only=True)
class LpPlan:
    heat_w: FloatArray  # per step
    room_c: FloatArray  # at the end of each step
    states: FloatArray  # every state at the end of each step (n_steps × n)
    objective: float


class PlanError(Exception):
    """The solver failed or gave no plan."""


def solve(
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
    sp_c = np.asarray(outlook.setpoint_c, dtype=float)
    lookahead = max(round(PREHEAT_LOOKAHEAD_H * 3600.0 / step_s), 1)
    ahead_c = np.array([sp_c[k : k + lookahead].max() for k in range(n_steps)])
    upper_c = np.minimum(ahead_c + store_k, max_room_c)
    weight = np.asarray(outlook.weight, dtype=float)
    scale = float(np.mean(np.abs(weight))) or 1.0
    kwh_per_w = step_s / 3.6e6

    # Variables, in blocks of n_steps: q, f, d (soft), s (hard below), u (above), then x (n_steps × n_x).
    q0, f0, d0, s0, u0, x0 = (i * n_steps for i in range(6))
    n_vars = x0 + n_steps * n_x
    cost = np.zeros(n_vars)
    cost[q0:f0] = weight / scale * kwh_per_w
    cost[f0:d0] = FREE_HEAT_WEIGHT * kwh_per_w
    cost[d0:s0] = SETPOINT_PENALTY
    cost[s0:u0] = COMFORT_PENALTY
    cost[u0:x0] = COMFORT_PENALTY
    cap_w = np.maximum(np.asarray(outlook.cap_w, dtype=float), 0.0)
    floor = np.minimum(floor_w, cap_w)
    bounds = np.zeros((n_vars, 2))
    bounds[q0:f0] = np.column_stack([np.zeros(n_steps), cap_w])
    bounds[f0:d0] = np.column_stack([np.zeros(n_steps), np.maximum(outlook.surplus_w, 0.0)])
    bounds[d0:s0] = np.column_stack([np.zeros(n_steps), np.full(n_steps, tolerance_k)])
    bounds[s0:x0, 1] = np.inf
    bounds[x0:, 0], bounds[x0:, 1] = -np.inf, np.inf

    k = np.arange(n_steps)
    # Dynamics: x_{k+1} − A x_k − bq (q_k + f_k) = bo·To_k + e   (x_0 given)
    rows, cols, vals = [], [], []
    for i in range(n_x):
        r = k * n_x + i
        rows += [r, r, r]
        cols += [x0 + k * n_x + i, q0 + k, f0 + k]
        vals += [np.ones(n_steps), np.full(n_steps, -room.bq[i]), np.full(n_steps, -room.bq[i])]
        for j in range(n_x):
            if room.a[i, j] != 0.0:
                rows.append(r[1:])
                cols.append(x0 + (k[1:] - 1) * n_x + j)
                vals.append(np.full(n_steps - 1, -room.a[i, j]))
    a_eq = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_steps * n_x, n_vars)
    )
    b_eq = (np.outer(outlook.outdoor_c, room.bo) + room.e).reshape(-1)
    b_eq[:n_x] += room.a @ room.x0
    # Comfort: −T − d − s ≤ −sp ; T − u ≤ upper
    room_col = x0 + k * n_x
    a_ub = sp.csr_matrix(
        (
            np.concatenate(
                [-np.ones(n_steps), -np.ones(n_steps), -np.ones(n_steps), np.ones(n_steps), -np.ones(n_steps)]
            ),
            (
                np.concatenate([k, k, k, n_steps + k, n_steps + k]),
                np.concatenate([room_col, d0 + k, s0 + k, room_col, u0 + k]),
            ),
        ),
        shape=(2 * n_steps, n_vars),
    )
    b_ub = np.concatenate([-sp_c, upper_c])
    # Floor: the GPUs idle at floor_w whatever the plan says; paid and free heat together reach it.
    if floor.any():
        a_floor = sp.csr_matrix(
            (-np.ones(2 * n_steps), (np.concatenate([k, k]), np.concatenate([q0 + k, f0 + k]))), shape=(n_steps, n_vars)
        )
        a_ub = sp.vstack([a_ub, a_floor], format="csr")
        b_ub = np.concatenate([b_ub, -floor])
    # Paid and free heat together stay within the capacity.
    a_cap = sp.csr_matrix(
        (np.ones(2 * n_steps), (np.concatenate([k, k]), np.concatenate([q0 + k, f0 + k]))), shape=(n_steps, n_vars)
    )
    a_ub = sp.vstack([a_ub, a_cap], format="csr")
    b_ub = np.concatenate([b_ub, cap_w])
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=bounds,
        method="highs",
        options={"time_limit": time_limit_s, "presolve": True},
    )
    if res.status != 0 or res.x is None:
        raise PlanError(f"the solver gave no plan: {res.message}")
    x = res.x
    heat_w = x[q0:f0] + x[f0:d0]
    states = x[x0:].reshape(n_steps, n_x)
    room_c = states[:, 0]
    if not (np.all(np.isfinite(heat_w)) and np.all(np.isfinite(room_c))):
        raise PlanError("the solver's plan is not finite")
    return LpPlan(
        heat_w=heat_w, room_c=room_c, states=states, objective=float(res.fun) if math.isfinite(res.fun) else math.nan
    )

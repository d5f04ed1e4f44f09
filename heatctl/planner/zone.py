"""One zone's planner: remember, learn the room, look ahead, plan; the reactive loop tracks the plan.

Used the same way by the service (on a thread of its own) and by the simulator (inline, in
virtual time): ``record`` at every control tick, ``update`` every few minutes, ``guidance``
whenever the loop wants its target. Until the model is trusted, or when a plan fails, there is
no guidance and heatctl controls reactively as before; ``status``/``reason`` say which.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heatctl.accounting import PLAN_WARMING_W
from heatctl.planner.history import History
from heatctl.planner.lp import LinearRoom, LpPlan, LpSolver, Outlook, PlanError
from heatctl.planner.model import TRUST_DATA_H, RoomModel, fit_room, held_where_invalid, prediction_rmse_k
from heatctl.planner.schedule import WeeklySchedule, learned_setpoints
from heatctl.state import atomic_write

_LOGGER = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
DEVIATION_REPLAN_K = 0.5  # the room this far from the plan: plan again now
DRIFT_REPLAN_K = 0.1  # this far, at the next replan_min
MAX_PLAN_AGE_MIN = 120.0  # a plan whose premises all hold is still renewed this often (the horizon moves on)
SLOW_SOLVE_S = 2.0
FIT_DAYS = 7.0  # the room is fitted to this much of the remembered history (the schedule learns from all of it)
TRUSTED_REFIT_H = 24.0  # a trusted model is refitted this often ...
DRIFT_MIN_K = 0.1  # ... or when its error on new data passes twice its fit error, and at least this
WORK_COVERED_SHARE = 0.01  # a plan short of at most this share of the work's heat covers the work
SHORTFALL_MARGIN_K = 0.05  # a planned room this far below the tolerance is a shortfall, not rounding
NEXT_CHANGE_STEP_S = 300.0  # how finely the next setpoint change is looked for


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannerSettings:
    """The planner's knobs (config ``planner:`` plus what the zone and the node say)."""

    objective: str = "cost"
    horizon_h: float = 36.0
    step_min: float = 15.0
    comfort_tolerance_k: float = 0.3
    store_k: float = 0.0
    replan_min: float = 15.0
    refit_h: float = 1.0
    history_days: float = 14.0
    max_room_c: float = 26.0
    capacity_w: float = 0.0
    floor_w: float = 0.0

    def solve(
        self, room: LinearRoom, outlook: Outlook, *, time_limit_s: float = 5.0, solver: LpSolver | None = None
    ) -> LpPlan:
        """The LP with these settings: the planner's and the oracle's, so both solve the same problem
        (``solver``: one kept from the last plan, to start from its answer)."""
        return (solver or LpSolver()).solve(
            room,
            outlook,
            step_s=self.step_min * 60.0,
            tolerance_k=self.comfort_tolerance_k,
            store_k=self.store_k,
            max_room_c=self.max_room_c,
            floor_w=self.floor_w,
            time_limit_s=time_limit_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Signals:
    """What the planner knows of the future, each a function of epoch times (None: not known)."""

    price: Callable[[FloatArray], FloatArray | None] = lambda t: None
    carbon: Callable[[FloatArray], FloatArray | None] = lambda t: None
    outdoor: Callable[[FloatArray], FloatArray | None] = lambda t: None
    cap_w: Callable[[FloatArray], FloatArray | None] = lambda t: None  # quiet hours, node caps
    surplus_w: float = 0.0  # solar export now (W)
    # Batch work due: (due by, epoch s; heat in J above idle its work makes at full power).
    work: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    created_s: float
    step_s: float
    starts_s: FloatArray
    heat_w: FloatArray
    room_now_c: float  # the room when it was made
    room_c: FloatArray  # at each step's end
    setpoint_c: FloatArray
    price: FloatArray  # NaN where unknown
    outdoor_c: FloatArray
    upper_c: FloatArray | None = None  # the most the plan wants the room at (setpoint ahead + store_k)
    work_heat: float = 0.0  # heat for batch work due (W·steps) the plan makes before the deadlines ...
    work_short: float = 0.0  # ... and what it cannot

    @property
    def covers_work(self) -> bool:
        """The plan makes all the heat the work due needs before its deadlines."""
        return self.work_heat > 0 and self.work_short <= WORK_COVERED_SHARE * self.work_heat

    def step_at(self, now_s: float) -> int | None:
        """The step that holds ``now_s``, or None outside the plan."""
        k = int((now_s - self.starts_s.item(0)) // self.step_s)
        return k if 0 <= k < len(self.starts_s) else None

    def at(self, now_s: float) -> tuple[float, float] | None:
        """(planned room now, planned heat now), or None outside the plan."""
        k = self.step_at(now_s)
        return self.at_step(k, now_s) if k is not None else None

    def at_step(self, k: int, now_s: float) -> tuple[float, float]:
        """(planned room, planned heat) at ``now_s`` within step ``k``."""
        frac = (now_s - self.starts_s.item(k)) / self.step_s
        room_start = self.room_c.item(k - 1) if k > 0 else self.room_now_c
        return room_start + frac * (self.room_c.item(k) - room_start), self.heat_w.item(k)

    def shortfall_in_s(self, now_s: float, tolerance_k: float) -> float | None:
        """How long until the planned room falls below setpoint − ``tolerance_k`` though the GPUs do
        all they can (the plan keeps the room comfortable whenever it can); None: it never does."""
        ends = self.starts_s + self.step_s
        short = (self.room_c < self.setpoint_c - tolerance_k - SHORTFALL_MARGIN_K) & (ends >= now_s)
        if not short.any():
            return None
        return max(float(ends[int(np.argmax(short))]) - now_s, 0.0)

    def next_heat_start_s(self, now_s: float, idle_w: float) -> float | None:
        """When the plan next turns the heat up from (about) idle, or None."""
        on = self.heat_w > idle_w + 20.0
        for k in range(1, len(on)):
            if on[k] and not on[k - 1] and self.starts_s[k] >= now_s:
                return float(self.starts_s[k])
        return float(self.starts_s[0]) if on.size and on[0] else None

    def to_json(self) -> dict[str, Any]:
        return {
            "step_s": self.step_s,
            "steps": [
                {
                    "start": datetime.fromtimestamp(float(t), UTC).isoformat(timespec="seconds"),
                    "heat_w": round(float(q), 1),
                    "room_c": round(float(r), 2),
                    "setpoint_c": round(float(s), 2),
                    "outdoor_c": None if math.isnan(o) else round(float(o), 1),
                    "price": None if math.isnan(p) else round(float(p), 4),
                }
                for t, q, r, s, o, p in zip(
                    self.starts_s, self.heat_w, self.room_c, self.setpoint_c, self.outdoor_c, self.price, strict=True
                )
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Guidance:
    """The plan's word to the reactive loop for now."""

    target_c: float  # the PID's setpoint
    feedforward_w: float  # the heat the plan expects
    warming: bool = False  # the plan heats now (above idle): heat made for the target is wanted heat


@dataclass(slots=True)
class _State:
    model: RoomModel | None = None
    plan: Plan | None = None
    status: str = "learning"
    reason: str = "learning the room: no data yet"
    fitted_s: float = -math.inf
    checked_s: float = -math.inf
    solve_ms: list[float] = field(default_factory=list)


class ZonePlanner:
    def __init__(
        self,
        zone: str,
        settings: PlannerSettings,
        *,
        schedule: WeeklySchedule | None = None,
        tz: tzinfo | None = None,
        path: Path | None = None,
        fixed_model: RoomModel | None = None,
        mono_fn: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.zone = zone
        self.settings = settings
        self.history = History(settings.history_days)
        self.history_source: str | None = None  # where history before heatctl's own came from
        self._schedule = schedule
        self._tz = tz
        self._path = path
        self._fixed_model = fixed_model
        self._mono_fn = mono_fn
        self._lock = threading.Lock()
        self._s = _State(model=fixed_model)
        self._last_setpoint_c: float | None = None
        self._signals_version = 0
        self._planned_version = -1
        self._solver = LpSolver()
        self._linear: tuple[RoomModel, float, LinearRoom] | None = None  # the last model, discretised
        self._planned_model: RoomModel | None = None
        self._planned_deadlines: set[float] = set()
        if path is not None:
            self._load(path)

    # --- inputs ---------------------------------------------------------------------------

    def record(
        self,
        now_s: float,
        *,
        room_c: float | None,
        setpoint_c: float | None,
        heat_w: float | None,
        outdoor_c: float | None,
        valid: bool,
    ) -> None:
        """One control tick's readings (epoch seconds)."""
        with self._lock:
            self.history.record(
                now_s, room_c=room_c, setpoint_c=setpoint_c, heat_w=heat_w, outdoor_c=outdoor_c, valid=valid
            )

    def wants_seed(self) -> bool:
        """Too little of its own history to be trusted, and not seeded yet."""
        with self._lock:
            return self.history_source is None and self.history.valid_hours() < TRUST_DATA_H

    def first_sample_s(self) -> float | None:
        with self._lock:
            return self.history.first_time_s()

    def seed(self, rows: FloatArray, source: str) -> int:
        """History from elsewhere, before heatctl's own; refitted at the next update."""
        with self._lock:
            taken = self.history.seed(rows)
            self.history_source = source
        if taken:
            self._s.checked_s = -math.inf  # refit at once
            _LOGGER.info("zone %s: %d samples from %s", self.zone, taken, source)
        if self._path is not None:
            self.save()
        return taken

    def refit_now(self, now_s: float) -> RoomModel | None:
        """Fit the room on the history as it is (``heatctl model`` before any run)."""
        self._refit(now_s)
        return self._s.model

    def signals_changed(self) -> None:
        """A forecast arrived: plan again at the next update."""
        self._signals_version += 1

    # --- the work -------------------------------------------------------------------------

    def update(self, now_s: float, room_c: float | None, setpoint_c: float | None, signals: Signals) -> None:
        """Refit when due, plan when due (or when something changed); never raises."""
        try:
            self._update(now_s, room_c, setpoint_c, signals)
        except Exception as exc:  # a bug here must leave heatctl reactive, not stop it
            _LOGGER.exception("zone %s: planning failed", self.zone)
            self._set(None, "fallback", f"planning failed: {exc}")

    def _update(self, now_s: float, room_c: float | None, setpoint_c: float | None, signals: Signals) -> None:
        if self._fixed_model is None and self._refit_due(now_s):
            self._refit(now_s)
        model = self._s.model
        if model is None or not model.trusted:
            self._set(None, "learning", model.why_not if model else "learning the room: not enough data yet")
            return
        if room_c is None or setpoint_c is None:
            self._set(None, "fallback", "no room temperature or setpoint")
            return
        if not self._plan_due(now_s, room_c, setpoint_c, signals.work):
            return
        started = self._mono_fn()
        try:
            plan = self._plan(now_s, model, room_c, setpoint_c, signals)
        except PlanError as exc:
            self._set(None, "fallback", str(exc))
            return
        took_s = self._mono_fn() - started
        self._s.solve_ms = [*self._s.solve_ms[-99:], took_s * 1000.0]
        if took_s > SLOW_SOLVE_S:
            self._set(None, "fallback", f"planning took {took_s:.1f} s (more than {SLOW_SOLVE_S:.0f} s)")
            return
        self._last_setpoint_c = setpoint_c
        self._planned_version = self._signals_version
        self._planned_model = model
        self._planned_deadlines = {d for d, _ in signals.work}
        self._set(plan, "active", "")

    def _plan_due(self, now_s: float, room_c: float, setpoint_c: float, work: tuple[tuple[float, float], ...]) -> bool:
        """At once when what the plan rests on changed (a forecast, the setpoint, the model, work due,
        the room far off the plan); every ``replan_min`` when the room has drifted from it; at least
        every ``MAX_PLAN_AGE_MIN``."""
        plan = self._s.plan
        if plan is None or self._s.status != "active" or self._s.model is not self._planned_model:
            return True
        if self._signals_version != self._planned_version or setpoint_c != self._last_setpoint_c:
            return True
        if {d for d, _ in work} != self._planned_deadlines:  # a batch came or went
            return True
        planned = plan.at(now_s)
        if planned is None:
            return True
        off_k = abs(planned[0] - room_c)
        age_s = now_s - plan.created_s
        return (
            off_k > DEVIATION_REPLAN_K
            or (age_s >= self.settings.replan_min * 60.0 and off_k > DRIFT_REPLAN_K)
            or age_s >= max(MAX_PLAN_AGE_MIN, self.settings.replan_min) * 60.0
        )

    def _refit_due(self, now_s: float) -> bool:
        """While learning, every ``refit_h``. Once trusted, the room changes slowly: daily, or at once
        when the model's error on the data since its fit has grown past twice its fit error."""
        every_s = self.settings.refit_h * 3600.0
        if now_s - self._s.checked_s < every_s:
            return False
        self._s.checked_s = now_s
        model = self._s.model
        if model is None or not model.trusted or now_s - self._s.fitted_s >= max(TRUSTED_REFIT_H * 3600.0, every_s):
            return True
        with self._lock:
            s = self.history.samples().since(now_s - FIT_DAYS * 86400.0)
        error_k = prediction_rmse_k(
            model,
            s.room_c,
            s.heat_w,
            _filled(s.outdoor_c),
            valid=s.valid,
            sample_s=self.history.sample_s,
            judged=s.time_s >= self._s.fitted_s,
        )
        return error_k > max(2.0 * model.fit_rmse_k, DRIFT_MIN_K)

    def _refit(self, now_s: float) -> None:
        with self._lock:
            s = self.history.samples().since(now_s - FIT_DAYS * 86400.0)
        self._s.fitted_s = now_s
        if len(s.time_s) < 12:
            return
        outdoor = _filled(s.outdoor_c)
        model = fit_room(s.room_c, s.heat_w, outdoor, s.valid, self.history.sample_s, previous=self._s.model)
        if model is not None:
            if model.trusted and not (self._s.model and self._s.model.trusted):
                _LOGGER.info(
                    "zone %s: room model trusted: heat loss %.1f W/K, time constant %.1f h, error %.2f K",
                    self.zone,
                    model.ua_w_per_k,
                    model.tau_h,
                    model.fit_rmse_k,
                )
            self._s.model = model
        if self._path is not None:
            self.save()

    def _plan(self, now_s: float, model: RoomModel, room_c: float, setpoint_c: float, signals: Signals) -> Plan:
        st = self.settings
        step_s = st.step_min * 60.0
        n = max(round(st.horizon_h * 3600.0 / step_s), 2)
        starts = now_s + step_s * np.arange(n, dtype=np.float64)
        mids = starts + step_s / 2
        setpoints = self.setpoints(now_s, setpoint_c, mids)
        outdoor = self._outdoor(now_s, mids, signals)
        price = _or_nan(signals.price(mids), n)
        weight = objective_weight(self.settings.objective, price, signals.carbon(mids), n)
        cap = signals.cap_w(mids)
        cap_w = np.full(n, st.capacity_w) if cap is None else np.minimum(cap, st.capacity_w)
        surplus = np.zeros(n)
        surplus[0] = max(signals.surplus_w, 0.0)  # live export: only now is known
        work = work_steps(signals.work, now_s, step_s, n)
        outlook = Outlook(
            setpoint_c=setpoints, outdoor_c=outdoor, weight=weight, cap_w=cap_w, surplus_w=surplus, work=work
        )
        room = self._linear_room(model, step_s, room_c)
        lp = st.solve(room, outlook, solver=self._solver)
        return Plan(
            created_s=now_s,
            step_s=step_s,
            starts_s=starts,
            heat_w=lp.heat_w,
            room_now_c=room_c,
            room_c=lp.room_c,
            setpoint_c=setpoints,
            price=price,
            outdoor_c=outdoor,
            upper_c=lp.upper_c,
            work_heat=sum(heat for _, heat in work),
            work_short=lp.work_short,
        )

    def _linear_room(self, model: RoomModel, step_s: float, room_c: float) -> LinearRoom:
        """The model over one step, from the room now (discretised once per model)."""
        envelope_c = self._envelope_now(model, room_c)
        cached = self._linear
        if cached is None or cached[0] is not model or cached[1] != step_s:
            cached = self._linear = (model, step_s, LinearRoom.from_model(model, room_c, envelope_c, step_s))
        return replace(cached[2], x0=np.array([room_c, envelope_c]))

    def _envelope_now(self, model: RoomModel, room_c: float) -> float:
        """The envelope's temperature now, from the remembered air and outdoor temperatures."""
        with self._lock:
            s = self.history.samples()
        if len(s.time_s) < 2:
            return room_c
        air = held_where_invalid(s.room_c, s.valid)  # an open window does not drive the walls
        return float(model.envelope_c(air, _filled(s.outdoor_c), self.history.sample_s)[-1])

    def setpoints(self, now_s: float, setpoint_c: float, times_s: FloatArray) -> FloatArray:
        """The configured schedule, else the learned one (the setpoint now holds until its next change)."""
        if self._schedule is not None:
            ahead = self._schedule.at(times_s)
            scheduled_now = self._schedule.at(np.array([now_s]))[0]
            if abs(scheduled_now - setpoint_c) > 0.05:  # overruled by a person: until the next change
                changes = np.flatnonzero(np.abs(np.diff(np.concatenate([[scheduled_now], ahead]))) > 0.05)
                ahead[: int(changes[0]) if changes.size else len(ahead)] = setpoint_c
            return ahead
        with self._lock:
            s = self.history.samples()
        return learned_setpoints(s.time_s, s.setpoint_c, now_s, setpoint_c, times_s)

    def _outdoor(self, now_s: float, times_s: FloatArray, signals: Signals) -> FloatArray:
        """The forecast where there is one; else persistence plus the daily cycle seen in the history."""
        forecast = signals.outdoor(times_s)
        with self._lock:
            s = self.history.samples()
        known = ~np.isnan(s.outdoor_c)
        if not known.any():
            fallback = np.zeros(len(times_s))  # no outdoor source: the model learned without one
        else:
            hours = ((s.time_s[known] % 86400.0) // 3600.0).astype(int)
            values = s.outdoor_c[known]
            seen = np.bincount(hours, minlength=24)
            sums = np.bincount(hours, weights=values - np.mean(values), minlength=24)
            cycle = np.divide(sums, seen, out=np.zeros(24), where=seen > 0)  # the mean of each hour of the day
            hour_now = int((now_s % 86400.0) // 3600.0)
            now_c = float(values[-1])
            fallback = now_c + cycle[((times_s % 86400.0) // 3600.0).astype(int)] - cycle[hour_now]
        if forecast is None:
            return fallback
        return np.where(np.isnan(forecast), fallback, forecast)

    # --- what the loop and the user see ---------------------------------------------------

    def next_setpoint_change(self, now_s: float, setpoint_c: float) -> tuple[float, float] | None:
        """(when, setpoint) of the next change within two days, from the schedule or the learned one."""
        times = now_s + NEXT_CHANGE_STEP_S * np.arange(1, round(2 * 86400.0 / NEXT_CHANGE_STEP_S) + 1, dtype=np.float64)
        ahead = self.setpoints(now_s, setpoint_c, times)
        changed = np.flatnonzero(np.abs(ahead - setpoint_c) > 0.05)
        if not changed.size:
            return None
        i = int(changed[0])
        return float(times[i]), float(ahead[i])

    def _active_plan(self) -> Plan | None:
        """The plan the loop follows now (None: it controls reactively)."""
        with self._lock:
            plan, status = self._s.plan, self._s.status
        return plan if status == "active" else None

    def guidance(self, now_s: float, setpoint_c: float) -> Guidance | None:
        """The target and feed-forward for now; None: control reactively."""
        plan = self._active_plan()
        return guidance_from(plan, now_s, setpoint_c, self.settings) if plan is not None else None

    def shortfall_in_s(self, now_s: float) -> float | None:
        """How long until the active plan expects the room to fall behind, the GPUs flat out (None: it does not)."""
        plan = self._active_plan()
        return plan.shortfall_in_s(now_s, self.settings.comfort_tolerance_k) if plan is not None else None

    def reach_c(self, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        """The room after ``seconds`` of ``heat_w``, by the trusted model (walls in balance with the air
        now); None without one. The cascade asks it when the target rises."""
        model = self._s.model
        if model is None or not model.trusted:
            return None
        r_total = model.rie_k_per_w + model.rea_k_per_w
        envelope_c = room_c - (room_c - outdoor_c) * model.rie_k_per_w / r_total if r_total > 0 else room_c
        room = LinearRoom.from_model(model, room_c, envelope_c, seconds)
        state = room.a @ room.x0 + room.bq * heat_w + room.bo * outdoor_c + room.e
        return float(state[0])

    def covers_work(self) -> bool:
        """The active plan makes the heat of all the batch work due before its deadlines."""
        plan = self._active_plan()
        return plan is not None and plan.covers_work

    @property
    def status(self) -> str:
        return self._s.status

    @property
    def reason(self) -> str:
        return self._s.reason

    @property
    def model(self) -> RoomModel | None:
        return self._s.model

    @property
    def plan(self) -> Plan | None:
        return self._s.plan

    @property
    def solve_ms(self) -> list[float]:
        return list(self._s.solve_ms)

    def _set(self, plan: Plan | None, status: str, reason: str) -> None:
        if (status, reason) != (self._s.status, self._s.reason) and status != "active":
            _LOGGER.info("zone %s: planner %s: %s", self.zone, status, reason)
        with self._lock:
            if plan is not None or status != "active":
                self._s.plan = plan
            self._s.status, self._s.reason = status, reason
        if plan is not None and self._path is not None:
            self._write_plan()

    # --- state_dir --------------------------------------------------------------------------

    def save(self) -> None:
        assert self._path is not None
        with self._lock:
            data = {
                "zone": self.zone,
                "model": self._s.model.to_json() if self._s.model else None,
                "history": self.history.to_json(),
                "history_source": self.history_source,
            }
        atomic_write(self._path, json.dumps(data), keep_previous=True)

    def _write_plan(self) -> None:
        assert self._path is not None
        atomic_write(self._path.with_suffix(".plan.json"), json.dumps(self.document()))

    def document(self) -> dict[str, Any]:
        """The plan as MQTT and ``heatctl plan`` show it."""
        plan = self._s.plan
        return {
            "created": datetime.fromtimestamp(plan.created_s if plan else time.time(), UTC).isoformat(
                timespec="seconds"
            ),
            "zone": self.zone,
            "status": self._s.status,
            "reason": self._s.reason,
            "model": self._s.model.public() if self._s.model else None,
            **(plan.to_json() if plan is not None and self._s.status == "active" else {"steps": []}),
        }

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            _LOGGER.warning("zone %s: cannot read the planner's memory %s (%s); learning afresh", self.zone, path, exc)
            return
        try:
            if data.get("model") and self._fixed_model is None:
                self._s.model = RoomModel.from_json(data["model"])
            self.history.load_json(data.get("history") or {})
            source = data.get("history_source")
            self.history_source = source if isinstance(source, str) else None
        except (TypeError, ValueError, KeyError) as exc:
            _LOGGER.warning("zone %s: the planner's memory %s is damaged (%s); learning afresh", self.zone, path, exc)
            self._s.model = self._fixed_model
            self.history = History(self.settings.history_days)


def objective_weight(objective: str, price: FloatArray | None, carbon: FloatArray | None, n: int) -> FloatArray:
    """Per step, what a kWh weighs: its price, its carbon, or 1 (energy, or the signal is unknown)."""
    chosen = price if objective == "cost" else carbon if objective == "carbon" else None
    if chosen is None or np.isnan(chosen).all():
        return np.ones(n)
    return _hold(chosen)


def work_steps(
    work: tuple[tuple[float, float], ...], now_s: float, step_s: float, n_steps: int
) -> tuple[tuple[int, float], ...]:
    """Work due as the LP takes it: (whole steps before the deadline, heat in W·steps). A deadline past
    the horizon asks for its share of the heat (the horizon's part of its time left); one within the
    first step is the deadline rule's alone."""
    by_end: dict[int, float] = {}
    for deadline_s, heat_j in sorted(work):
        left_s = deadline_s - now_s
        end = int(left_s // step_s)
        if end < 1 or heat_j <= 0:
            continue
        share = 1.0
        if end > n_steps:
            share, end = n_steps * step_s / left_s, n_steps
        by_end[end] = by_end.get(end, 0.0) + share * heat_j / step_s
    return tuple(sorted(by_end.items()))


def guidance_from(plan: Plan, now_s: float, setpoint_c: float, st: PlannerSettings) -> Guidance | None:
    """The plan now as the loop's target (never below setpoint − tolerance, nor above what the plan
    wants the room at: the setpoint ahead + ``store_k``, at most ``max_room_c``; while the plan
    lets the room coast, not above the setpoint)."""
    k = plan.step_at(now_s)
    if k is None:
        return None
    room_c, heat_w = plan.at_step(k, now_s)
    top_c = st.max_room_c
    if plan.upper_c is not None:  # an overshoot the plan only accepts (work due, a warm start) is no target
        top_c = min(top_c, plan.upper_c.item(k))
    warming = heat_w > st.floor_w + PLAN_WARMING_W
    if not warming:  # the plan lets the room coast: the loop does not hold it up on the way down
        top_c = min(top_c, setpoint_c)
    target = min(max(room_c, setpoint_c - st.comfort_tolerance_k), top_c)
    return Guidance(target_c=target, feedforward_w=heat_w, warming=warming)


def _filled(values: FloatArray) -> FloatArray:
    """NaNs filled with the last known value (the first known before it); zeros if none is known."""
    known = ~np.isnan(values)
    if not known.any():
        return np.zeros(len(values))
    idx = np.where(known, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    first = int(np.argmax(known))
    out[:first] = values[first]
    return out


def _hold(values: FloatArray) -> FloatArray:
    """A forecast that ends early: its last value holds (and a gap at the start takes the first)."""
    return _filled(np.asarray(values, dtype=float))


def _or_nan(values: FloatArray | None, n: int) -> FloatArray:
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=float)

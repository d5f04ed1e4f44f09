"""The room as heatctl learns it: a 2R2C grey box (air and furniture, envelope) with a gains term,
fitted by least squares.

    Ci dTi/dt = Q + G + (Te − Ti)/Rie          (the air node: what the thermostat measures)
    Ce dTe/dt = (Ti − Te)/Rie + (T_out − Te)/Rea

``Q`` is the heat heatctl delivered (it knows it exactly: NVML or the wall plug), ``G`` the
room's other gains (people, sun, the neighbours) and ``T_out`` the outdoor temperature — or 0
where no outdoor source is configured (``G`` then carries the drift). Heat loss is
``UA = 1/(Rie + Rea)``; the time constant reported is the whole room's, ``(Ci + Ce)/UA``.

The envelope is never measured, so the fit drives it with the *measured* air and outdoor
temperatures (a first-order filter), and fits the air node as an output-error model over
windows of ``WINDOW_H``: from the measured room at the start of each window the model predicts
the rest of it, and the parameters minimise those errors (scipy's ``least_squares``). So
``fit_rmse_k`` is what the planner cares about: how far off the room is a few hours ahead.
Samples heatctl could not trust (gaps, dropouts, windows, fail-safes, implausible values)
break the windows and are never fitted. With a small ``Ce`` this is the 1R1C room.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares
from scipy.signal import lfilter

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

GAINS_SCALE_W = 2000.0  # the prior on gains: this many W cost as much as 1 K on every sample
ENVELOPE_OFFSET_K = 10.0  # how far the walls may have been off their steady state when the data began
WINDOW_H = 6.0  # how far ahead each fitted prediction runs from a measured start
WARM_TOL = 1e-5  # the fit's tolerances when it starts from the last model
WARM_DIFF_STEP = 1e-6  # and its finite-difference step, relative to each parameter
TRUST_DATA_H = 24.0  # valid hours needed before the model is used
TRUST_RMSE_K = 0.3  # and at most this error over the windows
MIN_HEAT_SPREAD_W = 20.0  # the heat must have varied, or UA and G cannot be told apart
UA_RANGE_W_PER_K = (0.5, 2000.0)
TAU_RANGE_H = (0.5, 1000.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomModel:
    """What was learned of a room, in the names the state and ``heatctl model`` show."""

    ua_w_per_k: float  # heat loss
    tau_h: float  # the room's time constant (Ci + Ce)/UA
    gains_w: float  # heat from elsewhere (with T_out = 0 when there is no outdoor source)
    fit_rmse_k: float  # the windows' prediction error
    data_h: float  # valid hours fitted
    trusted: bool
    why_not: str = ""  # why it is not trusted yet, for the planner's reason
    ci_j_per_k: float = 0.0  # the parts; 0: a 1R1C room (Ci = UA·τ, no envelope)
    ce_j_per_k: float = 0.0
    rie_k_per_w: float = 0.0
    rea_k_per_w: float = 0.0

    @classmethod
    def one_node(cls, *, ua_w_per_k: float, tau_h: float, gains_w: float = 0.0) -> RoomModel:
        """A 1R1C room (a tiny envelope behind almost no resistance)."""
        c = ua_w_per_k * tau_h * 3600.0
        return cls(
            ua_w_per_k=ua_w_per_k,
            tau_h=tau_h,
            gains_w=gains_w,
            fit_rmse_k=0.0,
            data_h=0.0,
            trusted=True,
            ci_j_per_k=c * 0.999,
            ce_j_per_k=c * 0.001,
            rie_k_per_w=1e-4 / ua_w_per_k,
            rea_k_per_w=(1 - 1e-4) / ua_w_per_k,
        )

    def envelope_c(self, air_c: FloatArray, outdoor_c: FloatArray, sample_s: float) -> FloatArray:
        """The envelope's temperature at each sample, driven by the measured air and outdoor temperatures."""
        parts = (self.ci_j_per_k, self.ce_j_per_k, self.rie_k_per_w, self.rea_k_per_w)
        return _envelope(parts, air_c, outdoor_c, sample_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoomModel:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def public(self) -> dict[str, Any]:
        """The fields the state, Home Assistant and InfluxDB carry."""
        return {
            "ua_w_per_k": round(self.ua_w_per_k, 2),
            "tau_h": round(self.tau_h, 2),
            "fit_rmse_k": round(self.fit_rmse_k, 3),
            "data_h": round(self.data_h, 1),
            "trusted": self.trusted,
        }


def window_starts(valid: BoolArray, window_n: int) -> npt.NDArray[np.int64]:
    """For every sample, the index where its prediction window starts (−1: not predicted).

    A window starts every ``window_n`` samples and again after every invalid sample, so no
    prediction runs across a gap.
    """
    n = len(valid)
    idx = np.arange(n)
    breaks = ~valid
    last_break = np.maximum.accumulate(np.where(breaks, idx, -1))
    since = idx - (last_break + 1)
    return np.where(breaks, -1, last_break + 1 + (since // window_n) * window_n)


def _envelope(
    parts: tuple[float, float, float, float],
    air_c: FloatArray,
    outdoor_c: FloatArray,
    sample_s: float,
    offset_k: float = 0.0,
) -> FloatArray:
    """The envelope, starting ``offset_k`` off its steady state with the first sample (e.g. still warm)."""
    _, ce, rie, rea = parts
    gie, gea = 1.0 / rie, 1.0 / rea
    ae = math.exp(-sample_s * (gie + gea) / ce)
    drive = (gie * air_c + gea * outdoor_c) / (gie + gea)
    te, _ = lfilter([0.0, 1.0 - ae], [1.0, -ae], drive, zi=[drive[0] + offset_k])
    return np.asarray(te)


def _air_predictions(
    x: FloatArray,
    *,
    room_c: FloatArray,
    heat_w: FloatArray,
    outdoor_c: FloatArray,
    windows: Windows,
    sample_s: float,
    drive_c: FloatArray | None = None,
) -> FloatArray:
    """Each sample's room as predicted from its window's start; the walls driven by ``drive_c`` (else the room)."""
    ci, ce, rie, rea = (math.exp(v) for v in x[:4])
    air = room_c if drive_c is None else drive_c
    te = _envelope((ci, ce, rie, rea), air, outdoor_c, sample_s, offset_k=float(x[5]) if len(x) > 5 else 0.0)
    a = math.exp(-sample_s / (ci * rie))
    u = te + (heat_w + x[4]) * rie
    # y[k] = a·y[k−1] + (1 − a)·u[k−1]: the zero-state response; T[s+j] = a^j T[s] + y[s+j] − a^j y[s].
    y = lfilter([0.0, 1.0 - a], [1.0, -a], u)
    decay = a**windows.lag
    return np.asarray(decay * room_c[windows.start] + y - decay * y[windows.start])


@dataclass(frozen=True, slots=True)
class Windows:
    """The prediction windows over a run of samples: which samples are predicted, and from where."""

    predicted: BoolArray  # predicted from a measured start (not a window's first sample, not invalid)
    start: npt.NDArray[np.int64]  # each sample's window start (0 where it has none)
    lag: FloatArray  # samples since that start


def _windows(valid: BoolArray, sample_s: float) -> Windows:
    """The windows: one starts every ``WINDOW_H`` and again after every invalid sample."""
    starts = window_starts(valid, max(round(WINDOW_H * 3600.0 / sample_s), 2))
    idx = np.arange(len(valid))
    start = np.maximum(starts, 0)
    return Windows(predicted=(starts >= 0) & (idx > starts), start=start, lag=(idx - start).astype(np.float64))


def prediction_rmse_k(
    model: RoomModel,
    room_c: FloatArray,
    heat_w: FloatArray,
    outdoor_c: FloatArray,
    *,
    valid: BoolArray,
    sample_s: float,
    judged: BoolArray | None = None,
) -> float:
    """The model's error predicting the room up to ``WINDOW_H`` ahead from measured starts, over the
    ``judged`` samples (default: all; NaN: nothing to predict).

    For data the model was not fitted to: how well it would have planned.
    """
    windows = _windows(valid, sample_s)
    predicted = windows.predicted & judged if judged is not None else windows.predicted
    if not predicted.any() or model.ci_j_per_k <= 0:
        return math.nan
    x = _params(model)
    drive = held_where_invalid(room_c, np.isfinite(room_c))
    pred = _air_predictions(
        x,
        room_c=room_c,
        heat_w=np.nan_to_num(heat_w),
        outdoor_c=outdoor_c,
        windows=windows,
        sample_s=sample_s,
        drive_c=drive,
    )
    return float(np.sqrt(np.mean((pred - room_c)[predicted] ** 2)))


def _params(model: RoomModel) -> FloatArray:
    """The fit's parameter vector for a model: log Ci, Ce, Rie, Rea; gains; the walls' offset (0: steady)."""
    m = model
    return np.array([*np.log([m.ci_j_per_k, m.ce_j_per_k, m.rie_k_per_w, m.rea_k_per_w]), m.gains_w, 0.0])


def held_where_invalid(values: FloatArray, valid: BoolArray) -> FloatArray:
    """Invalid samples replaced by the last valid one (the first valid one before it)."""
    good = valid & np.isfinite(values)
    if not good.any():
        return np.nan_to_num(values)
    idx = np.where(good, np.arange(len(values)), -1)
    last = np.maximum.accumulate(idx)
    last[last < 0] = int(np.flatnonzero(good)[0])
    return np.asarray(values[last], dtype=np.float64)


LOWER = np.log([1e4, 1e4, 1e-4, 1e-4])
UPPER = np.log([1e8, 1e9, 1.0, 2.0])


def fit_room(
    room_c: FloatArray,
    heat_w: FloatArray,
    outdoor_c: FloatArray,
    valid: BoolArray,
    sample_s: float,
    *,
    previous: RoomModel | None = None,
) -> RoomModel | None:
    """Fit Ci, Ce, Rie, Rea and G to the samples (one every ``sample_s``); None if there is too little data.

    ``room_c[k]`` is the room at the start of sample ``k``; ``valid[k]`` says sample ``k`` and
    the step after it may be fitted.
    """
    windows = _windows(valid, sample_s)
    fitted = windows.predicted
    data_h = float(valid.sum() * sample_s / 3600.0)
    if fitted.sum() < 12:
        return None
    heat_spread_w = float(np.ptp(heat_w[valid])) if valid.any() else 0.0
    heat = np.nan_to_num(heat_w)
    prior_weight = math.sqrt(fitted.sum())
    drive = held_where_invalid(room_c, valid)  # an open window or a dropout must not drive the walls

    def residuals(x: FloatArray) -> FloatArray:
        pred = _air_predictions(
            x, room_c=room_c, heat_w=heat, outdoor_c=outdoor_c, windows=windows, sample_s=sample_s, drive_c=drive
        )
        # A weak prior: gains trade off against heat loss when the weather barely changes; keep them small.
        return np.append((pred - room_c)[fitted], prior_weight * x[4] / GAINS_SCALE_W)

    guesses = [
        np.array([*np.log([3e5 * f, 3e6 * f * g, 0.005 / f, 0.06 / f]), 10.0, 0.0])
        for f in (0.3, 1.0, 3.0)
        for g in (0.3, 3.0)
    ]
    if previous is not None and previous.ci_j_per_k > 0:
        guesses.insert(0, _params(previous))
    # Gains are heat: never negative. The last: how far the walls were off their steady state when the data began.
    lower, upper = [*LOWER, 0.0, -ENVELOPE_OFFSET_K], [*UPPER, 5000.0, ENVELOPE_OFFSET_K]
    best = None
    # A trusted model starts from where it was (the room changes slowly), and so does one still short
    # of the data it needs to be trusted (it is refitted every hour anyway); else from several rooms.
    warm = previous is not None and (previous.trusted or data_h < TRUST_DATA_H)
    for guess in guesses[:1] if warm else guesses:
        x0 = np.clip(guess, np.array(lower) + 1e-6, np.array(upper) - 1e-6)
        try:
            res = least_squares(
                residuals,
                x0,
                bounds=(lower, upper),
                x_scale=[1, 1, 1, 1, 50.0, 1.0],
                # From where it was, steps coarser than scipy's √eps: the residuals come out of recursive
                # filters whose rounding makes tinier differences noisy, and the fit needs fewer iterations.
                diff_step=WARM_DIFF_STEP if warm else None,
                max_nfev=100,
                ftol=WARM_TOL if warm else 1e-8,  # from where it was, a near-optimum is enough
                xtol=WARM_TOL if warm else 1e-8,
            )
        except (ValueError, FloatingPointError):
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None or not np.all(np.isfinite(best.x)):
        return None
    ci, ce, rie, rea = (math.exp(v) for v in best.x[:4])
    ua = 1.0 / (rie + rea)
    tau_h = (ci + ce) / ua / 3600.0
    rmse = float(np.sqrt(np.mean(best.fun[:-1] ** 2)))
    why = _why_not_trusted(ua, tau_h, rmse, data_h, heat_spread_w)
    return RoomModel(
        ua_w_per_k=ua,
        tau_h=tau_h,
        gains_w=float(best.x[4]),
        fit_rmse_k=rmse,
        data_h=data_h,
        trusted=not why,
        why_not=why,
        ci_j_per_k=ci,
        ce_j_per_k=ce,
        rie_k_per_w=rie,
        rea_k_per_w=rea,
    )


def _why_not_trusted(ua: float, tau_h: float, rmse_k: float, data_h: float, heat_spread_w: float) -> str:
    if data_h < TRUST_DATA_H:
        return f"learning the room: {data_h:.0f} of {TRUST_DATA_H:.0f} h of data"
    if heat_spread_w < MIN_HEAT_SPREAD_W:
        return "learning the room: the heat has not varied enough yet"
    if rmse_k > TRUST_RMSE_K:
        return f"the room model's error {rmse_k:.2f} K is above {TRUST_RMSE_K} K"
    for value, (lo, hi), what in ((ua, UA_RANGE_W_PER_K, "heat loss"), (tau_h, TAU_RANGE_H, "time constant")):
        if not lo < value < hi:
            return f"the room model's {what} is outside what is plausible"
    return ""

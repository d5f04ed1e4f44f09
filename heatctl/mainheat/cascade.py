"""GPU first, main heating second: which stage a zone is in, and what its main heating is told.

- ``held`` (stage 1): the GPUs hold the target; the main heating's setpoint is the target −
  ``offset_k`` (an on/off heater is off).
- ``released`` (stage 2): the GPUs are at capacity and the room has been more than
  ``engage_k`` below the target for ``engage_after_min`` — sooner the further behind it is
  (the deficit beyond ``engage_k``, integrated, reaches ``engage_k × engage_after_min``): a
  morning setpoint step releases it within minutes. With the planner, also when its plan (the
  GPUs flat out, the room as learned) has the room fall behind within ``engage_after_min``: the
  main heating starts before the room is cold, not after. The main heating gets the target (an
  on/off heater is switched around it with ``hysteresis_k`` and minimum on/off times); the
  GPUs run flat out (their target is ``PUSH_K`` above) and the main heating fills the rest.
- back to ``held`` once the GPUs have had headroom for ``hold_after_min``: the room stayed
  ``SPARE_K`` above the target, above the main heating's band, from the GPUs' heat alone (and
  the plan, if any, foresees no shortfall within ``engage_after_min``).
- ``given back``: any fail-safe (stale inputs, heatctl off, a GPU lost, a window): the main
  heating gets the user's own setpoint, as if heatctl were not there.

With ``prefer: cheapest``, whenever the main heating's heat costs less than the GPUs' (the
electricity price, less what their work is worth) the order turns: ``main first`` gives the
main heating the target and holds the GPUs back to target − ``offset_k``.

Stage changes are counted; after ``max_switches_per_day`` in 24 h the cascade stays
released (the side that keeps the room warm) until the count falls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from heatctl.config.mainheat import MainHeatingBase
from heatctl.mainheat.kinds.switch import SwitchMainHeating

PUSH_K = 3.0  # while released, the GPUs aim this far above the target: their PID saturates, they run flat out
SPARE_K = 0.3  # ... and they have headroom once the room is this far above the target (the main heating is off)
PUSH_LIMIT_K = 0.8  # ... unless the room is already this far above the target
HEADROOM = 0.9  # the GPUs have headroom below this share of their capacity
DAY_S = 86400.0

HELD, RELEASED, GIVEN_BACK, MAIN_FIRST = "held", "released", "given back", "main first"


def heat_cost_per_kwh(cfg: MainHeatingBase, price_per_kwh: float) -> float:
    """What a kWh of the main heating's heat costs now: gas at its own price, electric through its COP."""
    if cfg.cost_per_kwh_heat is not None:
        return cfg.cost_per_kwh_heat
    return price_per_kwh / (cfg.cop or 1.0)


def main_is_cheaper(cfg: MainHeatingBase, price_per_kwh: float, work_per_kwh: float, work_value: float) -> bool:
    """Whether a kWh of heat from the main heating costs less than one from the GPUs (whose work has value)."""
    gpu_per_kwh = price_per_kwh - work_value * work_per_kwh
    return heat_cost_per_kwh(cfg, price_per_kwh) < gpu_per_kwh


@dataclass(frozen=True, slots=True)
class MainCommand:
    stage: str
    reason: str
    setpoint_c: float | None  # for a thermostat (trv, entity, topic); None for a switch
    on: bool | None  # for a switch; None for a thermostat
    gpu_target_c: float  # the target the zone's GPUs aim at


class Cascade:
    def __init__(self, cfg: MainHeatingBase) -> None:
        self.cfg = cfg
        self.stage = GIVEN_BACK  # until the first tick with good inputs
        self._behind_since: float | None = None
        self._deficit_ks = 0.0  # ∫ (target − engage_k − room) dt while behind at capacity
        self._last_s: float | None = None
        self._headroom_since: float | None = None
        self._switches: deque[float] = deque()
        self._relay_on = False
        self._relay_since = -1e18
        self._last_target_c: float | None = None
        self.switches_total = 0

    def switches_today(self, now_s: float) -> int:
        while self._switches and self._switches[0] <= now_s - DAY_S:
            self._switches.popleft()
        return len(self._switches)

    def update(
        self,
        now_s: float,
        *,
        room_c: float | None,
        target_c: float | None,
        user_c: float | None,
        demand_w: float,
        capacity_w: float,
        failsafe: str | None,
        main_cheaper: bool = False,
        shortfall_in_s: float | None = None,
        reach_c: Callable[[float], float | None] | None = None,
    ) -> MainCommand:
        """One tick: the stage and the main heating's command. ``user_c`` is what a give-back restores.

        ``main_cheaper``: with ``prefer: cheapest``, the main heating's heat costs less now.
        ``shortfall_in_s``: the planner expects the room to fall behind in this long, the GPUs flat out.
        ``reach_c``: the room the GPUs flat out reach in this many seconds, by the learned model
        (None: no model to tell), asked when the target rises.
        """
        if failsafe or room_c is None or target_c is None:
            self.stage = GIVEN_BACK
            self._behind_since = self._headroom_since = None
            return self._give_back(now_s, failsafe or "no room temperature or target", user_c, target_c)
        at_capacity = capacity_w <= 0 or demand_w >= capacity_w * HEADROOM
        behind = room_c < target_c - self.cfg.engage_k
        dt_s = min(now_s - self._last_s, 600.0) if self._last_s is not None else 0.0
        self._last_s = now_s
        rose_k = target_c - self._last_target_c if self._last_target_c is not None else 0.0
        self._last_target_c = target_c
        reason = ""
        if self.stage == GIVEN_BACK:
            self.stage, reason = HELD, "inputs good: the GPUs go first"
        cheaper = main_cheaper and self.cfg.prefer == "cheapest"
        # The plan (GPUs flat out) has the room fall behind soon: release now, do not hold back.
        foreseen = shortfall_in_s is not None and shortfall_in_s <= self.cfg.engage_after_min * 60
        if cheaper != (self.stage == MAIN_FIRST):
            self._switch(now_s, MAIN_FIRST if cheaper else HELD)
            reason = "its heat costs less than the GPUs' now" if cheaper else "the GPUs' heat costs less now"
        if self.stage == MAIN_FIRST:
            return self._command(now_s, room_c, target_c, reason or "its heat costs less than the GPUs' now")
        if self.stage == HELD:
            self._headroom_since = None
            self._behind_since = (self._behind_since or now_s) if behind and at_capacity else None
            waited_s = now_s - self._behind_since if self._behind_since is not None else 0.0
            if self._behind_since is None:
                self._deficit_ks = 0.0
            else:
                self._deficit_ks += (target_c - room_c) * dt_s  # the whole deficit: 0.3 K behind counts 0.3
            enough_ks = self.cfg.engage_k * self.cfg.engage_after_min * 60
            out_of_reach = behind and rose_k >= self.cfg.engage_k and self._out_of_reach(room_c, target_c, reach_c)
            if out_of_reach:
                self._switch(now_s, RELEASED)
                reason = (
                    f"the target rose {rose_k:.1f} K: more than the GPUs make up in {self.cfg.engage_after_min:g} min"
                )
            elif self._behind_since is not None and self._deficit_ks >= enough_ks:
                self._switch(now_s, RELEASED)
                reason = f"GPUs at capacity and the room {target_c - room_c:.1f} K behind for {waited_s / 60:.0f} min"
            elif foreseen:
                self._switch(now_s, RELEASED)
                behind_min = (shortfall_in_s or 0.0) / 60
                reason = f"the plan: the room falls behind in {behind_min:.0f} min even with the GPUs flat out"
            else:
                reason = reason or ("GPUs at capacity, waiting" if self._behind_since is not None else "GPUs hold it")
        else:
            self._behind_since = None
            spare = room_c >= target_c + SPARE_K
            self._headroom_since = (self._headroom_since or now_s) if spare else None
            free_s = now_s - self._headroom_since if self._headroom_since is not None else 0.0
            # Hold back only with room in the budget for the release that may follow.
            budget = self.switches_today(now_s) < self.cfg.max_switches_per_day - 1
            if self._headroom_since is not None and free_s >= self.cfg.hold_after_min * 60 and budget and not foreseen:
                self._switch(now_s, HELD)
                reason = f"GPUs had headroom for {free_s / 60:.0f} min"
            elif foreseen:
                reason = "the plan: the GPUs alone fall behind soon"
            elif not budget:
                reason = f"{self.cfg.max_switches_per_day} stage switches today: staying released"
            else:
                reason = "GPUs at capacity: main heating helps"
        return self._command(now_s, room_c, target_c, reason)

    def _out_of_reach(self, room_c: float, target_c: float, reach_c: Callable[[float], float | None] | None) -> bool:
        """After a rise: whether the GPUs alone leave the room behind for longer than ``engage_after_min``.
        Without a learned model to tell, it is taken that they do: the main heating helps at once, as it
        would without heatctl, and is held back again once the GPUs have headroom."""
        reached = reach_c(self.cfg.engage_after_min * 60) if reach_c is not None else None
        return reached is None or reached < target_c - self.cfg.engage_k

    def boost(self, now_s: float) -> None:
        """A person asked for boost: the main heating helps at once (until the room is warm)."""
        if self.stage == HELD:
            self._switch(now_s, RELEASED)

    def gpu_target(self, target_c: float, room_c: float | None) -> float:
        """What the zone's GPUs aim at: flat out while released, unless the room is already too warm."""
        if self.stage == RELEASED and room_c is not None and room_c < target_c + PUSH_LIMIT_K:
            return target_c + PUSH_K
        if self.stage == MAIN_FIRST:
            return target_c - self.cfg.offset_k  # the GPUs only help when the main heating falls short
        return target_c

    def _switch(self, now_s: float, stage: str) -> None:
        self.stage = stage
        self._switches.append(now_s)
        self.switches_total += 1
        self._behind_since = self._headroom_since = None

    def _command(self, now_s: float, room_c: float, target_c: float, reason: str) -> MainCommand:
        released = self.stage in (RELEASED, MAIN_FIRST)
        gpu_target_c = self.gpu_target(target_c, room_c)
        switch = self.cfg.switch if isinstance(self.cfg, SwitchMainHeating) else None
        if switch is None:
            setpoint = target_c if released else max(target_c - self.cfg.offset_k, self.cfg.min_setpoint_c)
            return MainCommand(self.stage, reason, round(setpoint * 2) / 2, None, gpu_target_c)
        want = released and (
            room_c < target_c - switch.hysteresis_k / 2
            or (self._relay_on and room_c < target_c + switch.hysteresis_k / 2)
        )
        return MainCommand(self.stage, reason, None, self._relay(now_s, want), gpu_target_c)

    def _relay(self, now_s: float, want: bool) -> bool:
        """The relay with its minimum on and off times."""
        assert isinstance(self.cfg, SwitchMainHeating)
        held_s = now_s - self._relay_since
        minimum_s = (self.cfg.switch.min_on_min if self._relay_on else self.cfg.switch.min_off_min) * 60
        if want != self._relay_on and held_s >= minimum_s:
            self._relay_on, self._relay_since = want, now_s
        return self._relay_on

    def _give_back(self, now_s: float, reason: str, user_c: float | None, target_c: float | None) -> MainCommand:
        gpu_target_c = target_c if target_c is not None else 0.0
        if isinstance(self.cfg, SwitchMainHeating):
            on = self.cfg.switch.give_back == "on"
            if on != self._relay_on:
                self._relay_on, self._relay_since = on, now_s
            return MainCommand(GIVEN_BACK, reason, None, on, gpu_target_c)
        return MainCommand(GIVEN_BACK, reason, user_c, None, gpu_target_c)

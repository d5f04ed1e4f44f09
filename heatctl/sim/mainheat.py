"""The simulator's main heating: a heater with its own thermostat, steered like the real one."""

from __future__ import annotations

from heatctl.sim.scenario import MainHeatingPlantConfig


class MainHeaterPlant:
    """On below setpoint − hysteresis/2, off above + hysteresis/2, each state kept ``min_cycle_min``.

    ``enabled`` False is its relay off (an on/off heater heatctl switches): no heat at all.
    """

    def __init__(self, cfg: MainHeatingPlantConfig) -> None:
        self.cfg = cfg
        self.on = False
        self._since_s = -1e18

    def power_w(self, now_s: float, room_c: float, setpoint_c: float | None, enabled: bool = True) -> float:
        if not enabled or setpoint_c is None:
            want = False
        elif room_c < setpoint_c - self.cfg.hysteresis_k / 2:
            want = True
        elif room_c > setpoint_c + self.cfg.hysteresis_k / 2:
            want = False
        else:
            want = self.on
        if want != self.on and (now_s - self._since_s >= self.cfg.min_cycle_min * 60 or not enabled):
            self.on, self._since_s = want, now_s
        return self.cfg.power_w if self.on else 0.0

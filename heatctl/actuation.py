"""Closed-loop actuation of one GPU and its workload: command, read back, compare, re-command.

Runs on the control thread only. heatctl never trusts its own memory of what it commanded
(Home Assistant's generic_thermostat habit): every tick it reads the limit the driver holds
and the level the workload really runs, re-sends a command that did not take, and counts and
shows the mismatch. A GPU that cannot be read (not opened, lost, driver error, no power
reading without a wall-plug meter) is put in a defined state: its workload gets no work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from heatctl.config import Config, GpuConfig
from heatctl.control.allocate import GpuCommand
from heatctl.control.core import GpuState
from heatctl.control.efficiency import GpuCaps
from heatctl.errors import BackendError, HeatctlError
from heatctl.gpu.base import Gpu, GpuReading
from heatctl.gpu.registry import open_gpu
from heatctl.workloads.base import Workload
from heatctl.workloads.registry import WorkloadContext, open_workload

_LOGGER = logging.getLogger(__name__)
LIMIT_TOLERANCE_W = 1.0  # driver read-back that differs by more is a mismatch
LEVEL_TOLERANCE = 0.05
LEVEL_SETTLE_S = 2.0  # a workload follows a new level within this (a process thread's tick, a stream chunk)
REOPEN_S = 30.0  # a GPU that could not be opened is tried again this often
NO_POWER_READING = "power cannot be measured (no NVML power reading and no power_meter)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One GPU and its workload as read back at the start of a tick."""

    reading: GpuReading
    work_rate: float | None
    fault: str | None  # why this GPU gets no work now; None when healthy

    @property
    def state(self) -> GpuState:
        """What the controller sees of it."""
        r = self.reading
        return GpuState(power_w=r.power_w, temperature_c=r.temperature_c, work_rate=self.work_rate, fault=self.fault)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActuationStatus:
    """What the state shows of the actuator: read-back values and mismatches so far."""

    limit_w: float | None  # as the driver reports it
    level: float | None  # as the workload reports it
    limit_mismatches: int
    level_mismatches: int
    fault: str | None
    limit_control: bool  # heatctl may set this GPU's power limit
    steerable: bool  # False: neither the limit nor the workload can take heat away


class GpuActuator:
    """One GPU with its workload, as the control thread drives it."""

    def __init__(
        self,
        cfg: GpuConfig,
        *,
        open_gpu: Callable[[], Gpu],
        open_workload: Callable[[Gpu | None], Workload],
        time_fn: Callable[[], float],
    ) -> None:
        self.id = cfg.id
        self._cfg = cfg
        self._open_gpu = open_gpu
        self._time_fn = time_fn
        self.gpu: Gpu | None = None
        self._open_fault: str | None = None
        self._last_open_s = -math.inf
        self.just_opened = False  # set by observe() on the tick a late GPU opened: its caps changed
        self._try_open()
        self.workload = open_workload(self.gpu)
        self._written_limit_w: float | None = None
        self._limit_now_w: float | None = None  # read back at observe(), or as the driver enforced our write
        self._level: float | None = None
        self._level_since_s = 0.0
        self._observed: Observation | None = None
        self._fault: str | None = None
        self._limit_mismatch = False
        self.limit_mismatches = 0
        self.level_mismatches = 0

    # --- opening ------------------------------------------------------------------------

    def _try_open(self) -> bool:
        self._last_open_s = self._time_fn()
        try:
            self.gpu = self._open_gpu()
        except BackendError as exc:
            if self._open_fault is None:
                _LOGGER.error("gpu %s: %s; no work on it until it opens (tried every %.0f s)", self.id, exc, REOPEN_S)
            self._open_fault = str(exc)
            return False
        if self._open_fault is not None:
            _LOGGER.info("gpu %s: opened", self.id)
        self._open_fault = None
        return True

    def caps(self) -> GpuCaps:
        """Power range for the allocator; from the config until the GPU is open."""
        if self.gpu is None:
            high_w = self._cfg.max_power_w or 300.0
            return GpuCaps(idle_w=self._cfg.idle_w or 0.1 * high_w, min_limit_w=high_w, max_limit_w=high_w)
        low_w, high_w = self.gpu.limits_w()
        if self._cfg.max_power_w is not None:
            high_w = max(min(high_w, self._cfg.max_power_w), low_w)
        if not self.gpu.can_set_limit:
            # No cap control: heat is steered by the workload at the fixed limit the driver keeps.
            fixed_w = self.gpu.read().power_limit_w or high_w
            low_w = high_w = min(fixed_w, high_w)
        idle_w = self._cfg.idle_w if self._cfg.idle_w is not None else self.gpu.idle_w()
        return GpuCaps(idle_w=min(idle_w, low_w * 0.9), min_limit_w=low_w, max_limit_w=high_w)

    # --- each tick ----------------------------------------------------------------------

    def observe(self, *, metered: bool) -> Observation:
        """Read the GPU and the workload back; a GPU not yet open is tried again every ``REOPEN_S``."""
        self.just_opened = False
        if self.gpu is None and self._time_fn() - self._last_open_s >= REOPEN_S:
            self.just_opened = self._try_open()
        if self.gpu is None:
            obs = Observation(reading=GpuReading(fault=self._open_fault), work_rate=None, fault=self._open_fault)
        else:
            reading = self.gpu.read()
            fault = reading.fault
            if fault is None and reading.power_w is None and not metered:
                fault = NO_POWER_READING
            elif fault is not None and metered:
                fault = None  # a wall-plug meter still measures its heat
            fault = fault or self.workload.fault()  # its work cannot be kept: heat from it is not wanted
            obs = Observation(reading=reading, work_rate=self.workload.work_rate(), fault=fault)
        self._note_fault(obs.fault)
        self._check_level()
        self._observed = obs
        self._limit_now_w = obs.reading.power_limit_w
        return obs

    def _note_fault(self, fault: str | None) -> None:
        if fault != self._fault:
            if fault is None:
                _LOGGER.info("gpu %s: back to normal (was: %s)", self.id, self._fault)
            else:
                _LOGGER.error("gpu %s: %s; its workload gets no work until this clears", self.id, fault)
            self._fault = fault

    def _check_level(self) -> None:
        """More work running than commanded, once the workload had time to follow, is a mismatch."""
        if self._level is None or self._time_fn() - self._level_since_s < LEVEL_SETTLE_S:
            return
        effective = self.workload.effective_level()
        if effective is not None and effective > self._level + LEVEL_TOLERANCE:
            self.level_mismatches += 1
            _LOGGER.warning("gpu %s: workload runs at %.2f, commanded %.2f; re-sent", self.id, effective, self._level)
            self.workload.set_level(self._level)

    def apply(self, cmd: GpuCommand) -> None:
        """Command the limit (against the driver's read-back) and the level; a faulted GPU gets level 0."""
        level = 0.0 if self._fault is not None else cmd.level
        if self._fault is None:
            self._apply_limit(cmd.power_limit_w)
        self._set_level(level)

    def _apply_limit(self, limit_w: float) -> None:
        gpu = self.gpu
        if gpu is None or not gpu.can_set_limit:
            return
        if self._observed is not None and self._observed.reading.fault is not None:
            return  # the driver is not answering (work goes on only because a meter measures the heat)
        read_back_w = self._observed.reading.power_limit_w if self._observed else None
        drifted = (
            self._written_limit_w is not None
            and read_back_w is not None
            and abs(read_back_w - self._written_limit_w) > LIMIT_TOLERANCE_W
        )
        if drifted and not self._limit_mismatch:
            self.limit_mismatches += 1
            _LOGGER.warning(
                "gpu %s: the driver holds %.0f W, heatctl set %.0f W; setting it again",
                self.id,
                read_back_w,
                self._written_limit_w,
            )
        self._limit_mismatch = drifted
        if not drifted and self._written_limit_w is not None and abs(limit_w - self._written_limit_w) < 1e-6:
            return
        try:
            self._written_limit_w = self._limit_now_w = gpu.set_power_limit(limit_w)
        except BackendError as exc:
            _LOGGER.error("%s", exc)
            self._written_limit_w = None

    def _set_level(self, level: float) -> None:
        if level != self._level:
            self._level_since_s = self._time_fn()
        self._level = level
        try:
            self.workload.set_level(level)
        except HeatctlError as exc:
            _LOGGER.error("gpu %s workload: %s", self.id, exc)

    @property
    def state_problem(self) -> str | None:
        """The GPU's record of its original limit was damaged (the driver's default was taken)."""
        return getattr(self.gpu, "state_problem", None)

    def start(self) -> None:
        """The workload starts; a GPU heatctl can take no heat from is said loudly."""
        if not self.status().steerable:
            _LOGGER.warning(
                "gpu %s: heatctl can neither set its power limit nor pause its workload (type none): "
                "it cannot take heat away from this GPU",
                self.id,
            )
        self.workload.start()

    def idle(self) -> None:
        """After a failed tick: no work, lowest limit; never raises."""
        try:
            self.workload.set_level(0.0)
            self._level = 0.0
            if self.gpu is not None and self.gpu.can_set_limit:
                self._written_limit_w = self.gpu.set_power_limit(self.caps().min_limit_w)
        except Exception:
            _LOGGER.exception("gpu %s: cannot idle it", self.id)

    def status(self) -> ActuationStatus:
        can_limit = self.gpu is not None and self.gpu.can_set_limit
        return ActuationStatus(
            limit_w=self._limit_now_w,
            level=self.workload.effective_level(),
            limit_mismatches=self.limit_mismatches,
            level_mismatches=self.level_mismatches,
            fault=self._fault,
            limit_control=can_limit,
            steerable=can_limit or self.workload.steerable,
        )

    def stop(self) -> None:
        """Every exit: the workload to its exit state, then the GPU's original limit."""
        try:
            self.workload.stop()
        except Exception:
            _LOGGER.exception("gpu %s: stopping the workload failed", self.id)
        if self.gpu is not None:
            try:
                self.gpu.restore()
            except Exception:
                _LOGGER.exception("gpu %s: restoring the power limit failed", self.id)


def open_actuators(cfg: Config, ctx: WorkloadContext, given: Mapping[str, Gpu]) -> dict[str, GpuActuator]:
    """Each configured GPU (or the one a test or the demo gives) with its workload, not started yet."""
    actuators = {}
    for gcfg in cfg.gpus:
        gpu = given.get(gcfg.id)

        def open_one(gcfg: GpuConfig = gcfg, gpu: Gpu | None = gpu) -> Gpu:
            return gpu or open_gpu(gcfg, state_dir=ctx.state_dir, time_fn=ctx.time_fn)

        def workload(opened: Gpu | None, gcfg: GpuConfig = gcfg) -> Workload:
            return open_workload(gcfg, opened, ctx)

        actuators[gcfg.id] = GpuActuator(gcfg, open_gpu=open_one, open_workload=workload, time_fn=ctx.time_fn)
    return actuators

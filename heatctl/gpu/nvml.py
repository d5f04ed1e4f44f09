"""NVIDIA GPUs through NVML (nvidia-ml-py's ``pynvml``). The driver is imported here only."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from heatctl.config import GpuConfig
from heatctl.errors import BackendError, InstanceConflict
from heatctl.gpu.base import GpuReading
from heatctl.locks import gpu_lock
from heatctl.state import StateFile

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_LOST_S = 30.0
_init_lock = threading.Lock()

NO_PERMISSION_HELP = (
    "setting power limits needs root (or CAP_SYS_ADMIN); run heatctl as a system service, "
    "see deploy/. Meanwhile heat is steered by the workload alone"
)
NOT_SUPPORTED_HELP = (
    "this GPU does not allow setting its power limit (common on laptop and many GeForce parts); "
    "heat is steered by the workload alone"
)


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency
        raise BackendError("the nvidia-ml-py package is not installed") from exc
    return pynvml


def describe(exc: Exception) -> str:
    """A sentence a user can act on, for the NVML errors people meet."""
    n = _nvml()
    value = getattr(exc, "value", None)
    hints = {
        n.NVML_ERROR_LIBRARY_NOT_FOUND: "libnvidia-ml.so.1 not found: is the NVIDIA driver installed?",
        n.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded (nvidia-smi should work first)",
        n.NVML_ERROR_NO_PERMISSION: "no permission",
        n.NVML_ERROR_NOT_SUPPORTED: "not supported on this GPU",
        n.NVML_ERROR_GPU_IS_LOST: "the GPU has fallen off the bus (GPU lost)",
        n.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "driver/library version mismatch: reboot after a driver update",
    }
    return hints.get(value, str(exc)) if value is not None else str(exc)


class LimitStore:
    """Original power limits of GPUs heatctl has changed, keyed by UUID, in ``state_dir``.

    A record exists from just before heatctl's first change until the limit is restored,
    so a record found at start-up means a run was killed and the limit must be repaired.
    """

    def __init__(self, state_dir: Path) -> None:
        self._file = StateFile(state_dir / "limits.json")
        self._lock = threading.Lock()

    def get(self, uuid: str) -> float | None:
        value = self._file.load().get(uuid)
        return float(value) if isinstance(value, int | float) else None

    def put(self, uuid: str, limit_w: float) -> None:
        with self._lock:
            data = self._file.load()
            data[uuid] = limit_w
            self._file.save(data)

    def drop(self, uuid: str) -> None:
        with self._lock:
            data = self._file.load()
            if data.pop(uuid, None) is not None:
                self._file.save(data)

    def all(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._file.load().items() if isinstance(v, int | float)}

    @property
    def problem(self) -> str | None:
        """Why the file could not be trusted at the last read (damaged, no good copy), or None."""
        return self._file.problem


def init() -> Any:
    """nvmlInit, with the driver's failure translated into a clear error."""
    n = _nvml()
    with _init_lock:
        try:
            n.nvmlInit()
        except n.NVMLError as exc:
            raise BackendError(f"NVML: {describe(exc)}") from exc
    return n


class NvmlGpu:
    """One NVIDIA GPU. Readings it cannot give are None; a lost GPU is retried."""

    def __init__(self, cfg: GpuConfig, *, state_dir: Path, time_fn: Callable[[], float] = time.monotonic) -> None:
        self.id = cfg.id
        self._cfg = cfg
        self._time_fn = time_fn
        self._n = init()
        self._limits = LimitStore(state_dir)
        self._lock = threading.Lock()
        self._fault: str | None = None
        self._fault_since_s = 0.0
        self._last_retry_s = -float("inf")
        self._handle = self._open_handle()
        self.uuid = self._call("read the UUID", self._n.nvmlDeviceGetUUID, self._handle)
        self._instance = gpu_lock(self.uuid)  # before its limit is read as the original: no other heatctl on it
        try:
            self._instance.acquire(f"gpu {cfg.id}")
        except InstanceConflict:
            with contextlib.suppress(self._n.NVMLError):
                self._n.nvmlShutdown()
            raise
        self.name = self._call("read the name", self._n.nvmlDeviceGetName, self._handle)
        lo_mw, hi_mw = self._call(
            "read power limit constraints", self._n.nvmlDeviceGetPowerManagementLimitConstraints, self._handle
        )
        self._min_w, self._max_w = lo_mw / 1000.0, hi_mw / 1000.0
        current_w = self._call("read the power limit", self._n.nvmlDeviceGetPowerManagementLimit, self._handle)
        current_w /= 1000.0
        left_behind = self._limits.get(self.uuid)
        self.state_problem: str | None = None  # the record of the original limit was damaged
        if left_behind is None and self._limits.problem is not None:
            # A damaged record may have held this GPU's original: the limit now may be heatctl's own cap.
            default_mw = self._call(
                "read the default power limit", self._n.nvmlDeviceGetPowerManagementDefaultLimit, self._handle
            )
            left_behind = default_mw / 1000.0
            self.state_problem = f"{self._limits.problem}: the driver's default {left_behind:.0f} W is the original"
            _LOGGER.error("gpu %s: %s", self.id, self.state_problem)
        self.original_limit_w = left_behind if left_behind is not None else current_w
        self.can_set_limit = True
        self.limit_problem: str | None = None
        if left_behind is not None and abs(left_behind - current_w) > 0.5:
            _LOGGER.warning(
                "gpu %s: a previous run left the power limit at %.0f W; restoring the original %.0f W",
                self.id,
                current_w,
                left_behind,
            )
            self._write_limit_w(left_behind)
        else:
            self._write_limit_w(current_w)  # a no-op write: tells whether we may set limits at all
        self._idle_w = self._estimate_idle_w()

    def _open_handle(self) -> Any:
        n = self._n
        if self._cfg.uuid is not None:
            return self._call(f"find GPU {self._cfg.uuid}", n.nvmlDeviceGetHandleByUUID, self._cfg.uuid)
        index = self._cfg.index or 0
        count = self._call("count GPUs", n.nvmlDeviceGetCount)
        if index >= count:
            raise BackendError(f"gpu {self.id}: no GPU with index {index} ({count} found)")
        return self._call(f"open GPU {index}", n.nvmlDeviceGetHandleByIndex, index)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._n.NVMLError as exc:
            raise BackendError(f"gpu {self.id}: cannot {what}: {describe(exc)}") from exc

    def _optional(self, fn: Callable[[Any], Any], scale: float = 1000.0) -> float | None:
        """A reading this GPU may not support: None instead of an error (gpustat's habit)."""
        try:
            return float(fn(self._handle)) / scale
        except self._n.NVMLError_NotSupported:
            return None
        except self._n.NVMLError_FunctionNotFound:
            return None

    def _estimate_idle_w(self) -> float:
        if self._cfg.idle_w is not None:
            return self._cfg.idle_w
        try:
            util = self._n.nvmlDeviceGetUtilizationRates(self._handle).gpu
            power_w = self._n.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        except self._n.NVMLError:
            return float(0.1 * self._max_w)
        return float(power_w) if util == 0 else 0.1 * self._max_w

    # --- Gpu protocol -------------------------------------------------------------------

    def limits_w(self) -> tuple[float, float]:
        return self._min_w, self._max_w

    def idle_w(self) -> float:
        return self._idle_w

    def set_power_limit(self, watts: float) -> float:
        """Clamp, record the original limit before the first change, set, read back the enforced one."""
        if not self.can_set_limit:
            raise BackendError(f"gpu {self.id}: {self.limit_problem}")
        watts = min(max(watts, self._min_w), self._max_w)
        if self._limits.get(self.uuid) is None:
            self._limits.put(self.uuid, self.original_limit_w)
        with self._lock:
            self._write_limit_w(watts)
            enforced = self._optional(self._n.nvmlDeviceGetEnforcedPowerLimit)
        return enforced if enforced is not None else watts

    def _write_limit_w(self, watts: float) -> None:
        n = self._n
        try:
            # The v1 setter: pynvml's _v2 wrapper discards the driver's return code.
            n.nvmlDeviceSetPowerManagementLimit(self._handle, round(watts * 1000))
        except n.NVMLError_NoPermission as exc:
            self._no_limit_control(NO_PERMISSION_HELP, exc)
        except n.NVMLError_NotSupported as exc:
            self._no_limit_control(NOT_SUPPORTED_HELP, exc)
        except n.NVMLError as exc:
            raise BackendError(f"gpu {self.id}: cannot set the power limit to {watts:.0f} W: {describe(exc)}") from exc

    def _no_limit_control(self, help_text: str, exc: Exception) -> None:
        if self.can_set_limit:
            _LOGGER.warning("gpu %s: cannot set power limits (%s): %s", self.id, describe(exc), help_text)
        self.can_set_limit = False
        self.limit_problem = help_text

    def read(self) -> GpuReading:
        """One look; any NVML error is a fault with its own words (lost, driver mismatch, …), retried."""
        with self._lock:
            if self._fault is not None and not self._retry():
                return GpuReading(fault=self._fault)
            try:
                return self._read()
            except self._n.NVMLError as exc:
                if self._fault is None:
                    self._fault = describe(exc)
                    self._fault_since_s = self._time_fn()
                    self._last_retry_s = self._fault_since_s
                return GpuReading(fault=self._fault)

    def _read(self) -> GpuReading:
        n = self._n
        return GpuReading(
            power_w=self._optional(n.nvmlDeviceGetPowerUsage),
            energy_j=self._optional(n.nvmlDeviceGetTotalEnergyConsumption),
            temperature_c=self._temperature_c(),
            power_limit_w=self._optional(n.nvmlDeviceGetPowerManagementLimit),
        )

    def _temperature_c(self) -> float | None:
        n = self._n
        try:
            return float(n.nvmlDeviceGetTemperatureV(self._handle, n.NVML_TEMPERATURE_GPU))
        except (n.NVMLError_FunctionNotFound, n.NVMLError_NotSupported):
            pass
        try:
            return float(n.nvmlDeviceGetTemperature(self._handle, n.NVML_TEMPERATURE_GPU))
        except (n.NVMLError_FunctionNotFound, n.NVMLError_NotSupported):
            return None

    def _retry(self) -> bool:
        """Re-initialise NVML and find the GPU again, at most every RETRY_LOST_S."""
        now_s = self._time_fn()
        if now_s - self._last_retry_s < RETRY_LOST_S:
            return False
        self._last_retry_s = now_s
        n = self._n
        with contextlib.suppress(n.NVMLError):
            n.nvmlShutdown()
        try:
            n.nvmlInit()
            self._handle = self._open_handle()
        except n.NVMLError as exc:
            self._fault = describe(exc)
            return False
        except BackendError as exc:
            cause = exc.__cause__
            self._fault = describe(cause) if isinstance(cause, n.NVMLError) else str(exc)
            return False
        _LOGGER.info("gpu %s: NVML answers again after %.0f s", self.id, now_s - self._fault_since_s)
        self._fault = None
        return True

    def restore(self) -> None:
        """Put back the limit the GPU had before heatctl touched it; then release NVML."""
        with self._lock:
            try:
                self._restore_limit()
            finally:
                self._instance.release()
                with contextlib.suppress(self._n.NVMLError):
                    self._n.nvmlShutdown()

    def _restore_limit(self) -> None:
        if not self.can_set_limit or self._limits.get(self.uuid) is None:
            return
        try:
            self._write_limit_w(self.original_limit_w)
        except BackendError as exc:
            _LOGGER.error("%s; the original limit stays recorded for the next start", exc)
            return
        if not self.can_set_limit:
            return
        self._limits.drop(self.uuid)
        _LOGGER.info("gpu %s: power limit restored to %.0f W", self.id, self.original_limit_w)


def open_gpu(cfg: GpuConfig, *, state_dir: Path, time_fn: Callable[[], float] = time.monotonic) -> NvmlGpu:
    return NvmlGpu(cfg, state_dir=state_dir, time_fn=time_fn)


def restore_recorded_limits(state_dir: Path) -> list[str]:
    """``heatctl restore``: put back every limit a killed run left behind. Returns what it did."""
    limits = LimitStore(state_dir)
    recorded = limits.all()
    if not recorded and limits.problem is None:
        return []
    n = init()
    done = []
    try:
        if limits.problem is not None:  # which GPUs a run capped is lost: each gets the driver's default
            done.append(f"{limits.problem}: every GPU gets the driver's default limit")
            for i in range(n.nvmlDeviceGetCount()):
                handle = n.nvmlDeviceGetHandleByIndex(i)
                uuid = n.nvmlDeviceGetUUID(handle)
                recorded.setdefault(uuid, n.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0)
        for uuid, limit_w in recorded.items():
            try:
                handle = n.nvmlDeviceGetHandleByUUID(uuid)
                n.nvmlDeviceSetPowerManagementLimit(handle, round(limit_w * 1000))
            except n.NVMLError as exc:
                done.append(f"{uuid}: cannot restore {limit_w:.0f} W: {describe(exc)}")
                continue
            limits.drop(uuid)
            done.append(f"{uuid}: restored {limit_w:.0f} W")
    finally:
        n.nvmlShutdown()
    return done

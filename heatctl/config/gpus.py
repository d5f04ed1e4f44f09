"""GPUs, their backends and their workloads."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from heatctl.config.base import _NODE_ID_RE, WorkPoints, _Strict


class InferenceConfig(_Strict):
    """An LLM server on the GPU: what requests in flight draw and make, uncapped (``Inference plant``
    in the design). Under a cap below that draw: tokens/s × ((cap − idle)/(draw − idle))^exponent."""

    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    uncapped: list[tuple[Annotated[int, Field(ge=1)], Annotated[float, Field(ge=0)], Annotated[float, Field(gt=0)]]] = [
        (1, 24.0, 38.0),
        (2, 45.0, 47.0),
        (4, 80.0, 58.0),
        (8, 120.0, 68.0),
    ]  # [in flight, tokens/s, draw W]
    clock_exponent: Annotated[float, Field(ge=0, le=2)] = 0.4

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        ns = [p[0] for p in self.uncapped]
        if not ns or ns != sorted(set(ns)):
            raise ValueError("uncapped needs [in flight, tokens/s, draw W] rows in increasing in-flight order")
        return self


class SimGpuConfig(_Strict):
    """A simulated GPU: power behaviour and work rate at each power cap (or, with ``inference``, an
    LLM server's: draw and tokens/s by requests in flight and cap)."""

    idle_w: Annotated[float, Field(ge=0)] = 20.0
    min_limit_w: Annotated[float, Field(gt=0)] = 100.0
    max_limit_w: Annotated[float, Field(gt=0)] = 300.0
    full_load_w: Annotated[float, Field(gt=0)] | None = None  # uncapped draw; default max_limit_w
    work_at_w: WorkPoints = [(100, 40), (150, 62), (200, 75), (250, 82), (300, 86)]
    response_s: Annotated[float, Field(ge=0)] = 1.0  # time constant of power after a change
    inference: InferenceConfig | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.idle_w < self.min_limit_w <= self.max_limit_w:
            raise ValueError("need idle_w < min_limit_w <= max_limit_w")
        if len(self.work_at_w) < 1:
            raise ValueError("work_at_w needs at least one [watts, work] point")
        return self


class SimWorkloadConfig(_Strict):
    """The simulator's workload (``backend: sim`` only)."""

    type: Literal["sim"] = "sim"
    model: str | None = None  # with sim.inference: the LLM it stands for (its tokens counted per model)


class NoWorkloadConfig(_Strict):
    """Something else loads the GPU; heatctl steers only the power limit."""

    type: Literal["none"]


class ProcessWorkloadConfig(_Strict):
    """A command (or an adopted process) paused and resumed with SIGSTOP/SIGCONT."""

    type: Literal["process"]
    command: list[str] | str | None = None
    pid_file: str | None = None
    period_s: Annotated[float, Field(gt=0)] = 20.0
    on_exit: Literal["resume", "stop"] = "resume"

    @model_validator(mode="after")
    def _command_or_pid_file(self) -> Self:
        if self.command is None and self.pid_file is None:
            raise ValueError("type process needs 'command' or 'pid_file'")
        return self


class OpenAIWorkloadConfig(_Strict):
    """Batch jobs for a local OpenAI-compatible inference server."""

    type: Literal["openai"]
    work_unit: ClassVar[str] = "tokens"  # what its work rate counts (completion tokens)
    url: str
    model: str
    api_key: SecretStr | None = None
    jobs: str | None = None  # a folder of JSONL job files; the Batch API (batch_api:) is the other way in
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    request_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    max_attempts: Annotated[int, Field(ge=1)] = 5
    # Runs (paused and resumed by the level) only while heat is wanted and no batch or job waits.
    fallback: ProcessWorkloadConfig | None = None


WorkloadConfig = Annotated[
    SimWorkloadConfig | NoWorkloadConfig | OpenAIWorkloadConfig | ProcessWorkloadConfig,
    Field(discriminator="type"),
]


def work_unit(workloads: list[WorkloadConfig]) -> str:
    """The unit of work of these workloads together: tokens when all count tokens, else units."""
    units = {getattr(w, "work_unit", "units") for w in workloads}
    return units.pop() if len(units) == 1 else "units"


class GpuConfig(_Strict):
    id: Annotated[str, Field(pattern=_NODE_ID_RE)]
    backend: Literal["nvml", "sim"]  # no default: a forgotten `nvml` must not become a heater that heats nothing
    index: Annotated[int, Field(ge=0)] | None = None
    uuid: str | None = None
    max_power_w: Annotated[float, Field(gt=0)] | None = None  # clamped to the driver's range
    max_temp_c: float = 83.0
    idle_w: Annotated[float, Field(ge=0)] | None = None  # default: the backend's estimate
    work_at_w: WorkPoints | None = None  # prior efficiency curve; learned at run time
    limit_deadband_w: Annotated[float, Field(ge=0)] = 5.0
    sim: SimGpuConfig = SimGpuConfig()
    workload: WorkloadConfig = SimWorkloadConfig()

    @model_validator(mode="after")
    def _selector(self) -> Self:
        if self.index is not None and self.uuid is not None:
            raise ValueError("give at most one of 'index' and 'uuid'")
        return self

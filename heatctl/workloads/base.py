"""The workload interface every kind satisfies."""

from __future__ import annotations

from typing import Protocol


class Workload(Protocol):
    """Work heatctl can turn up and down. ``level`` 0 is no work, 1 is all it can do.

    ``steerable`` is False for a workload heatctl cannot pause (``none``): the power limit is
    then the only lever. ``effective_level`` reads back what is really running now (None
    when the workload cannot tell), so the actuator can compare it with what it commanded.
    """

    kind: str
    steerable: bool

    def start(self) -> None: ...

    def set_level(self, level: float) -> None: ...

    def effective_level(self) -> float | None: ...

    def has_work(self) -> bool: ...  # False: nothing queued (heat wanted would go unmade)

    def work_rate(self) -> float | None: ...  # useful work per second, measured; None if unknown

    def status(self) -> str: ...  # one short line for state and logs

    def fault(self) -> str | None: ...  # why its heat would be wasted now (results cannot be kept), or None

    def stop(self) -> None: ...  # leave the work in its configured exit state; never paused

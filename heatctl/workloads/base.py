"""The workload interface every kind satisfies."""

from __future__ import annotations

from typing import Protocol


class Workload(Protocol):
    """Work heatctl can turn up and down. ``level`` 0 is no work, 1 is all it can do."""

    kind: str

    def start(self) -> None: ...

    def set_level(self, level: float) -> None: ...

    def work_rate(self) -> float | None: ...  # useful work per second, measured; None if unknown

    def status(self) -> str: ...  # one short line for state and logs

    def stop(self) -> None: ...  # leave the work in its configured exit state; never paused


class NoWorkload:
    """``type: none``: something else loads the GPU; heatctl steers only the power limit."""

    kind = "none"

    def start(self) -> None:
        pass

    def set_level(self, level: float) -> None:
        pass

    def work_rate(self) -> float | None:
        return None

    def status(self) -> str:
        return "none"

    def stop(self) -> None:
        pass

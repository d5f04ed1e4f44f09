"""``type: none``: something else loads the GPU; heatctl steers only the power limit."""

from __future__ import annotations


class NoWorkload:
    """No lever on the work: the level is only recorded, never in effect."""

    kind = "none"
    steerable = False

    def start(self) -> None:
        pass

    def set_level(self, level: float) -> None:
        pass

    def effective_level(self) -> float | None:
        return None

    def has_work(self) -> bool:
        return True

    def work_rate(self) -> float | None:
        return None

    def status(self) -> str:
        return "none"

    def fault(self) -> str | None:
        return None

    def stop(self) -> None:
        pass

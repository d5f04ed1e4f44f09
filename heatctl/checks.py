"""The individual probes of ``heatctl check``; each returns rows, never raises."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heatctl.check import CheckRow
    from heatctl.config import Config


def all_checks(cfg: Config) -> list[CheckRow]:
    return []

"""One exception hierarchy; library errors are translated at the edge."""

from __future__ import annotations


class HeatctlError(Exception):
    """Base class of every error heatctl raises on purpose."""


class ConfigError(HeatctlError):
    """The configuration is invalid; ``problems`` lists every one with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class BackendError(HeatctlError):
    """A GPU or workload backend failed."""


class SinkError(HeatctlError):
    """An output (MQTT, InfluxDB) failed."""

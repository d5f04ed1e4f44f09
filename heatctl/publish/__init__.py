"""Outputs: MQTT state, Home Assistant discovery, InfluxDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from heatctl.publish.mqtt_state import NodeSnapshot


class Sink(Protocol):
    """An output fed once per tick (InfluxDB); must never block the control thread."""

    def write(self, snap: NodeSnapshot, now_s: float) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

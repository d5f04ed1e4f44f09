"""Zone sources bound to MQTT topics: payloads in, validated readings into the store."""

from __future__ import annotations

from collections.abc import Iterator

from heatctl.config import Config, SourceConfig, ZoneConfig
from heatctl.mqtt_link import Handler, MqttLink
from heatctl.sources.extract import PayloadError, Role, extract
from heatctl.sources.store import ReadingStore

# The role each ZoneConfig source field plays for extraction and the store.
ROLES: dict[str, Role] = {
    "temperature": "temperature",
    "setpoint": "setpoint",
    "mode": "mode",
    "window": "window",
    "outdoor_temperature": "outdoor",
    "power_meter": "power",
}


def zone_sources(zone: ZoneConfig) -> Iterator[tuple[Role, SourceConfig]]:
    for field_name, source in zone.sources():
        yield ROLES[field_name], source


def bind_mqtt_sources(cfg: Config, link: MqttLink, store: ReadingStore) -> int:
    """Subscribe every topic source; returns how many were bound."""
    count = 0
    for zone in cfg.zones:
        for role, source in zone_sources(zone):
            if source.topic is not None:
                link.subscribe(source.topic, _handler(store, zone.name, role, source))
                count += 1
    return count


def _handler(store: ReadingStore, zone: str, role: Role, source: SourceConfig) -> Handler:
    # Runs on paho's network thread: parse, validate, store. Nothing else.
    def handle(topic: str, payload: bytes) -> None:
        try:
            value = extract(payload, source, role)
        except PayloadError as exc:
            store.reject(f"{topic} ({zone} {role})", payload, str(exc))
            return
        store.put(zone, role, value, topic)

    return handle

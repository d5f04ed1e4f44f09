"""Zone sources bound to MQTT topics: payloads in, validated readings into the store."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator

from heatctl.config import Config, SourceConfig, ZoneConfig
from heatctl.mqtt_link import MessageHandler, MqttLink
from heatctl.sources.extract import PayloadError, Role, extract, reported_age_s
from heatctl.sources.store import ROLES, ReadingStore


def zone_sources(zone: ZoneConfig) -> Iterator[tuple[Role, SourceConfig]]:
    for field_name, source in zone.sources():
        yield ROLES[field_name], source


def bind_mqtt_sources(
    cfg: Config, link: MqttLink, store: ReadingStore, wall_fn: Callable[[], float] = time.time
) -> int:
    """Subscribe every topic source, and ask the devices that can be asked for a reading on each
    connect (``read_requests``); returns how many were bound."""
    count = 0
    for zone in cfg.zones:
        for role, source in zone_sources(zone):
            if source.topic is not None:
                link.subscribe_messages(source.topic, _handler(store, zone.name, role, source, wall_fn))
                count += 1
    if requests := read_requests(cfg):
        link.on_connect(lambda: ask_for_readings(link, requests))
    return count


def read_requests(cfg: Config) -> dict[str, str]:
    """Topic → payload asking each zigbee2mqtt device for the attributes heatctl reads (``<device>/get``).

    zigbee2mqtt does not retain by default, so without this a correct topic stays silent until
    the device next reports (minutes for a TRV); the answer comes on the device's own topic.
    """
    attributes: dict[str, dict[str, str]] = {}
    for zone in cfg.zones:
        for _, source in zone_sources(zone):
            if source.topic is None or not source.asks_at_start or not source.json_path:
                continue
            attributes.setdefault(source.topic, {})[source.json_path.split(".")[0]] = ""
    return {f"{topic}/get": json.dumps(attrs) for topic, attrs in attributes.items()}


class FreshnessAsker:
    """Battery devices that report only on change (many TRVs) go silent while the room is steady:
    before a source that can be asked goes stale, ask it (``<device>/get``), at half its
    ``stale_after_s`` and again every quarter after, so a steady room is never a false fail-safe.
    A device never heard is asked again at the same pace. A device that does not answer still goes
    stale, as it must."""

    def __init__(self, cfg: Config, link: MqttLink, store: ReadingStore) -> None:
        self._link = link
        self._store = store
        self._requests = read_requests(cfg)
        self._watch: list[tuple[str, str, str, float]] = [  # (zone, role, request topic, stale_after_s)
            (zone.name, role, f"{source.topic}/get", source.stale_after_s)
            for zone in cfg.zones
            for role, source in zone_sources(zone)
            if source.topic is not None and f"{source.topic}/get" in self._requests
        ]
        self._asked_s: dict[str, float] = {}
        self.asked: Counter[str] = Counter()  # request topic → times asked

    def tick(self, now_s: float) -> None:
        """Control thread, every tick: publish the requests whose sources are getting old."""
        due: set[str] = set()
        for zone, role, topic, stale_s in self._watch:
            reading = self._store.get(zone, role)
            if reading is not None and now_s - reading.at_s < stale_s / 2:
                continue  # fresh enough
            last_s = self._asked_s.setdefault(topic, now_s)  # the first look: it was asked at connect
            if now_s - last_s >= max(stale_s / 4, 30.0):
                due.add(topic)
        for topic in sorted(due):
            self._asked_s[topic] = now_s
            self.asked[topic] += 1
            self._link.publish(topic, self._requests[topic], qos=1)


def ask_for_readings(link: MqttLink, requests: dict[str, str]) -> None:
    """Publish the read requests (network thread, on every connect)."""
    for topic, payload in requests.items():
        link.publish(topic, payload, qos=1)


def _handler(
    store: ReadingStore, zone: str, role: Role, source: SourceConfig, wall_fn: Callable[[], float]
) -> MessageHandler:
    # Runs on paho's network thread: parse, validate, store. Nothing else.
    def handle(topic: str, payload: bytes, retained: bool) -> None:
        try:
            value = extract(payload, source, role)
        except PayloadError as exc:
            store.reject(f"{topic} ({zone} {role})", payload, str(exc))
            return
        age_s = reported_age_s(payload, wall_fn())
        if age_s is None and retained:
            # The broker kept it from some time ago, and the payload does not say when: a reading
            # of unknown age is not fresh. It is kept (shown, and known at once when live ones follow).
            store.put_unknown_age(zone, role, value, topic)
            return
        store.put(zone, role, value, topic, age_s=age_s or 0.0)

    return handle

"""What heatctl publishes over MQTT: the retained state and Home Assistant discovery.

Threads: ``publish_state`` runs on the control thread; ``republish`` and ``announce`` also
run on paho's network thread (after a reconnect, or when Home Assistant comes online). They
share only the last snapshot, an immutable value, and the discovery record, under a lock.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from heatctl.config import Config
from heatctl.mqtt_link import MqttLink
from heatctl.publish.discovery import discovery_messages, removal_topics, timestamp_paths, timestamp_topic
from heatctl.publish.mqtt_state import NodeSnapshot, state_payload
from heatctl.state import StateFile

_LOGGER = logging.getLogger(__name__)


class MqttOutputs:
    def __init__(self, cfg: Config, link: MqttLink, *, state_dir: Path, node_capacity_w: float) -> None:
        assert cfg.mqtt is not None  # built only with MQTT configured
        self._cfg = cfg
        self._link = link
        self._state_topic = f"{cfg.mqtt.base_topic}/{cfg.node_id}/state"
        self._discovery_file = StateFile(state_dir / "discovery.json")
        self._node_capacity_w = node_capacity_w
        self._lock = threading.Lock()
        self._last: NodeSnapshot | None = None
        self._base = f"{cfg.mqtt.base_topic}/{cfg.node_id}"
        self._timestamps = timestamp_paths(cfg) if cfg.mqtt.discovery else {}
        self._sent_times: dict[str, str | None] = {}  # what each timestamp topic last got (control thread)
        if cfg.mqtt.discovery:
            link.subscribe(f"{cfg.mqtt.discovery_prefix}/status", self._on_ha_status)
            link.on_connect(self.announce)
        link.on_connect(self.republish)

    def update_capacity(self, node_capacity_w: float) -> None:
        """A GPU opened late (or its range changed): Home Assistant's max-power range follows."""
        with self._lock:
            changed = node_capacity_w != self._node_capacity_w
            self._node_capacity_w = node_capacity_w
        if changed:
            self.announce()

    def write(self, snap: NodeSnapshot, now_s: float) -> None:
        """As a ``Sink``: the tick's state."""
        self.publish_state(snap)

    def publish_state(self, snap: NodeSnapshot) -> None:
        with self._lock:
            self._last = snap
        self._send(snap, changed_only=True)

    def republish(self) -> None:
        """Re-send the last state (network thread, after a reconnect) so subscribers see it at once."""
        with self._lock:
            snap = self._last
        if snap is not None:
            self._send(snap, changed_only=False)

    def _send(self, snap: NodeSnapshot, *, changed_only: bool) -> None:
        """The retained state, and the timestamps' own topics (each only when it changed, unless all)."""
        payload = state_payload(snap)
        self._link.publish(self._state_topic, json.dumps(payload, separators=(",", ":")), retain=True)
        self._publish_times(payload, changed_only=changed_only)

    def _publish_times(self, payload: dict[str, Any], *, changed_only: bool) -> None:
        """Each timestamp sensor's own topic: the time when there is one, else its availability off."""
        for object_id, path in self._timestamps.items():
            value: Any = payload
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            text = value if isinstance(value, str) and value else None
            with self._lock:
                if changed_only and object_id in self._sent_times and self._sent_times[object_id] == text:
                    continue
                self._sent_times[object_id] = text
            if text is not None:
                self._link.publish(timestamp_topic(self._base, object_id), text, retain=True)
            available = "online" if text is not None else "offline"
            self._link.publish(f"{timestamp_topic(self._base, object_id)}/available", available, retain=True)

    def announce(self) -> None:
        """Publish Home Assistant discovery; remove entities of zones no longer configured."""
        with self._lock:
            messages = discovery_messages(self._cfg, node_max_w=self._node_capacity_w)
            previous = self._discovery_file.load().get("topics", [])
            for topic in removal_topics(list(previous), messages):
                self._link.publish(topic, b"", retain=True, qos=1)
            for topic, payload in messages.items():
                self._link.publish(topic, json.dumps(payload), retain=True, qos=1)
            self._discovery_file.save({"topics": sorted(messages)})
        _LOGGER.info("announced %d Home Assistant entities", len(messages))

    def _on_ha_status(self, topic: str, payload: bytes) -> None:
        # Network thread: Home Assistant restarted; announce again and re-send state.
        if payload.strip().lower() == b"online":
            self.announce()
            self.republish()

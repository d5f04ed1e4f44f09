"""How a setpoint or an on/off reaches the main heating: MQTT (zigbee2mqtt TRV, a generic setpoint
topic, a relay) or a Home Assistant service call (climate.set_temperature, switch.turn_on/off).

``send`` never blocks the control thread: MQTT publishes are queued by paho; Home Assistant
calls go through a thread of their own that always sends the latest value. ``send_now`` is the
blocking form for the last word on exit and for ``heatctl restore``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from heatctl.config import Config, MainHeatingConfig
from heatctl.errors import plain

_LOGGER = logging.getLogger(__name__)
Value = float | bool  # a setpoint in °C, or on/off
Publish = Callable[[str, str], bool]  # (topic, payload) → delivered (or queued)


class MainDevice(Protocol):
    def send(self, value: Value) -> None: ...

    def send_now(self, value: Value, timeout_s: float = 10.0) -> str | None: ...  # None: done; else why not

    def close(self) -> None: ...


def mqtt_message(cfg: MainHeatingConfig, value: Value) -> tuple[str, str]:
    """The topic and payload that set this main heating over MQTT."""
    if cfg.trv is not None:
        return f"{cfg.trv}/set", json.dumps({cfg.trv_key: float(value)})
    if cfg.topic is not None:
        return cfg.topic, f"{float(value):g}"
    assert cfg.switch is not None and cfg.switch.topic is not None
    return cfg.switch.topic, cfg.switch.on if value else cfg.switch.off


def ha_call(cfg: MainHeatingConfig, value: Value) -> tuple[str, str, dict[str, Any]]:
    """The Home Assistant service call that sets it: (domain, service, data)."""
    if cfg.entity is not None:
        return "climate", "set_temperature", {"entity_id": cfg.entity, "temperature": float(value)}
    assert cfg.switch is not None and cfg.switch.entity is not None
    domain = cfg.switch.entity.split(".", 1)[0]
    return domain, "turn_on" if value else "turn_off", {"entity_id": cfg.switch.entity}


class MqttDevice:
    def __init__(self, cfg: MainHeatingConfig, publish: Publish, publish_wait: Publish) -> None:
        self.cfg = cfg
        self._publish = publish
        self._publish_wait = publish_wait

    def send(self, value: Value) -> None:
        self._publish(*mqtt_message(self.cfg, value))

    def send_now(self, value: Value, timeout_s: float = 10.0) -> str | None:
        topic, payload = mqtt_message(self.cfg, value)
        return None if self._publish_wait(topic, payload) else f"{topic}: not delivered (is the broker up?)"

    def close(self) -> None:
        return None


class HomeAssistantDevice:
    """Service calls from a thread of its own; a slow or absent Home Assistant never blocks control."""

    def __init__(self, cfg: MainHeatingConfig, make_client: Callable[[], Any]) -> None:
        self.cfg = cfg
        self._make_client = make_client
        self._client: Any = None
        self._pending: Value | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._lock = threading.Lock()  # one call at a time
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"main-{cfg.device}", daemon=True)
        self._thread.start()

    def send(self, value: Value) -> None:
        with self._cond:
            self._pending = value
            self._cond.notify()

    def send_now(self, value: Value, timeout_s: float = 10.0) -> str | None:
        with self._cond:
            self._pending = None  # this value wins over anything queued
        return self._call(value)

    def _call(self, value: Value) -> str | None:
        domain, service, data = ha_call(self.cfg, value)
        with self._lock:
            try:
                if self._client is None:
                    self._client = self._make_client().__enter__()  # checks the API, opens a session
                self._client.trigger_service(domain, service, **data)
            except Exception as exc:  # any failure of the call: said, retried with the next value
                self._drop_client()
                self.last_error = f"{domain}.{service} {data.get('entity_id')}: {plain(exc)}"
                _LOGGER.warning("main heating: %s", self.last_error)
                return self.last_error
        self.last_error = None
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                value, self._pending = self._pending, None
            if value is not None:
                self._call(value)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.__exit__(None, None, None)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5.0)
        with self._lock:
            self._drop_client()


def open_device(cfg: MainHeatingConfig, config: Config, publish: Publish, publish_wait: Publish) -> MainDevice:
    """The device for one zone's main heating, over the service's MQTT link or Home Assistant."""
    if cfg.entity is not None or (cfg.switch is not None and cfg.switch.entity is not None):
        from heatctl.sources.homeassistant import make_client

        assert config.homeassistant is not None  # the config's cross-checks require it
        ha = config.homeassistant
        return HomeAssistantDevice(cfg, lambda: make_client(ha))
    return MqttDevice(cfg, publish, publish_wait)

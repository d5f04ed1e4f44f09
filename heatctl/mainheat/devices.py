"""How a setpoint or an on/off reaches the main heating: MQTT (zigbee2mqtt TRV, a generic setpoint
topic, a relay) or a Home Assistant service call (climate.set_temperature, switch.turn_on/off).

``send`` never blocks the control thread: MQTT publishes are queued by paho; Home Assistant
calls go through a thread of their own that always sends the latest value. ``send_now`` is the
blocking form for the last word on exit and for ``heatctl restore``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from heatctl.config import Config, MainHeatingBase
from heatctl.errors import plain
from heatctl.mainheat.kinds import MqttMessage, ServiceCall, Value, main_kind

_LOGGER = logging.getLogger(__name__)
Publish = Callable[[str, str], bool]  # (topic, payload) → delivered (or queued)


class MainDevice(Protocol):
    def send(self, value: Value) -> None: ...

    def send_now(self, value: Value, timeout_s: float = 10.0) -> str | None: ...  # None: done; else why not

    def close(self) -> None: ...


def mqtt_message(cfg: MainHeatingBase, value: Value) -> MqttMessage:
    """The topic and payload that set this main heating over MQTT."""
    message = main_kind(cfg).command(cfg, value)
    assert isinstance(message, MqttMessage), f"{cfg.kind} is steered through Home Assistant"
    return message


def ha_call(cfg: MainHeatingBase, value: Value) -> ServiceCall:
    """The Home Assistant service call that sets it."""
    call = main_kind(cfg).command(cfg, value)
    assert isinstance(call, ServiceCall), f"{cfg.kind} is steered over MQTT"
    return call


def through_homeassistant(cfg: MainHeatingBase) -> bool:
    """Whether this main heating is reached with Home Assistant service calls (else MQTT)."""
    kind = main_kind(cfg)
    return isinstance(kind.command(cfg, kind.sample()), ServiceCall)


class MqttDevice:
    def __init__(self, cfg: MainHeatingBase, publish: Publish, publish_wait: Publish) -> None:
        self.cfg = cfg
        self._publish = publish
        self._publish_wait = publish_wait

    def send(self, value: Value) -> None:
        message = mqtt_message(self.cfg, value)
        self._publish(message.topic, message.payload)

    def send_now(self, value: Value, timeout_s: float = 10.0) -> str | None:
        message = mqtt_message(self.cfg, value)
        if self._publish_wait(message.topic, message.payload):
            return None
        return f"{message.topic}: not delivered (is the broker up?)"

    def close(self) -> None:
        return None


class HomeAssistantDevice:
    """Service calls from a thread of its own; a slow or absent Home Assistant never blocks control."""

    def __init__(self, cfg: MainHeatingBase, make_client: Callable[[], Any]) -> None:
        self.cfg = cfg
        self._make_client = make_client
        self._client: Any = None
        self._pending: Value | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._lock = threading.Lock()  # one call at a time
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"main-{main_kind(cfg).describe(cfg)}", daemon=True)
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
        call = ha_call(self.cfg, value)
        domain, service, data = call.domain, call.service, call.data
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


def open_device(cfg: MainHeatingBase, config: Config, publish: Publish, publish_wait: Publish) -> MainDevice:
    """The device for one zone's main heating, over the service's MQTT link or Home Assistant."""
    if through_homeassistant(cfg):
        from heatctl.sources.homeassistant import make_client

        assert config.homeassistant is not None  # the config's cross-checks require it
        ha = config.homeassistant
        return HomeAssistantDevice(cfg, lambda: make_client(ha))
    return MqttDevice(cfg, publish, publish_wait)

"""The MQTT connection: one paho-mqtt 2.x client shared by sources, commands and publishers."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from heatctl.config import MqttConfig, TlsConfig

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
# Also told whether the broker kept the message (retained): its age is then unknown unless it says.
MessageHandler = Callable[[str, bytes, bool], None]


def configure_client(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Credentials and TLS, the same for ``run`` and ``check``. Raises OSError/ValueError on bad TLS files."""
    if cfg.username:
        password = cfg.password.get_secret_value() if cfg.password else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls:
        tls = cfg.tls if isinstance(cfg.tls, TlsConfig) else TlsConfig()
        client.tls_set(
            ca_certs=tls.ca_certs,
            certfile=tls.certfile,
            keyfile=tls.keyfile,
            cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)


def short_lived_client(cfg: MqttConfig, purpose: str) -> mqtt.Client:
    """A client for a one-off look (``check``, ``status``, ``init``) with ``run``'s credentials and TLS.

    Its id is unique, so it never pushes the service (or another look) off the broker.
    Raises OSError or ValueError when the TLS files are bad.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"heatctl-{purpose}-{time.time_ns()}"
    )
    configure_client(client, cfg)
    return client


def publish_and_wait(client: mqtt.Client, topic: str, payload: str | bytes, timeout_s: float = 5.0) -> bool:
    """Publish with QoS 1 and wait: whether the broker has it."""
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout_s)
        return bool(info.is_published())
    except (RuntimeError, ValueError) as exc:
        _LOGGER.warning("publishing to %s failed: %s", topic, exc)
        return False


class MqttLink:
    """Connects, keeps reconnecting with backoff, and re-subscribes and re-announces each time.

    Threads: paho's network thread runs ``_on_connect``, ``_on_disconnect`` and
    ``_on_message``. Those only call the registered handlers, which must parse and hand
    over (store, queue, event) and never block. ``publish`` may be called from any thread.
    """

    def __init__(self, cfg: MqttConfig, node_id: str, *, client_id: str | None = None) -> None:
        self.cfg = cfg
        self.availability_topic = f"{cfg.base_topic}/{node_id}/availability"
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._on_connect_hooks: list[Callable[[], None]] = []
        self.connected = threading.Event()
        self.connects = 0
        self._stopping = False
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or cfg.client_id or f"heatctl-{node_id}",
            protocol=mqtt.MQTTv311,
        )
        c = self._client
        configure_client(c, cfg)
        c.will_set(self.availability_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_queued_messages_set(1000)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_connect_fail = self._on_connect_fail
        self._failed_connects = 0

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Register before ``start``; (re)subscribed on every connect."""
        self.subscribe_messages(topic, lambda t, payload, retained: handler(t, payload))

    def subscribe_messages(self, topic: str, handler: MessageHandler) -> None:
        """As ``subscribe``, for handlers that must know a retained message from a live one."""
        self._handlers.setdefault(topic, []).append(handler)

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Run after every (re)connect, on the network thread: announce, publish state."""
        self._on_connect_hooks.append(hook)

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        """Say offline, then disconnect cleanly (a clean disconnect sends no last will)."""
        self._stopping = True
        if self.connected.is_set():
            info = self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 0) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def publish_wait(self, topic: str, payload: str | bytes, timeout_s: float = 5.0) -> bool:
        """QoS 1, waited for: whether the broker has it (for messages that are the last word on exit)."""
        return publish_and_wait(self._client, topic, payload, timeout_s)

    # --- paho callbacks, on the network thread --------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            _LOGGER.error("MQTT broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        self.connects += 1
        self._failed_connects = 0
        _LOGGER.info("connected to MQTT broker %s:%s", self.cfg.host, self.cfg.port)
        for topic in self._handlers:
            client.subscribe(topic, qos=1)
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        for hook in self._on_connect_hooks:
            try:
                hook()
            except Exception:  # a hook must never kill the network thread
                _LOGGER.exception("on-connect hook failed")
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # Network thread, when a (re)connect attempt fails: say so once, then now and then.
        self._failed_connects += 1
        if self._failed_connects == 1 or self._failed_connects % 20 == 0:
            _LOGGER.warning(
                "cannot reach the MQTT broker at %s:%s (%d attempts); control goes on, inputs will go stale",
                self.cfg.host,
                self.cfg.port,
                self._failed_connects,
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self.connected.is_set() and not self._stopping:
            _LOGGER.warning("disconnected from MQTT broker (%s); reconnecting", reason_code)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        handlers = self._handlers.get(msg.topic)
        if handlers is None:
            handlers = [h for sub, hs in self._handlers.items() if mqtt.topic_matches_sub(sub, msg.topic) for h in hs]
        for handler in handlers:
            try:
                handler(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:  # a bad message must never kill the network thread
                _LOGGER.exception("handling a message on %s failed", msg.topic)

"""Zone sources read from Home Assistant entities (homeassistant-api), polled in a thread of their own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from heatctl.config import Config, HomeAssistantConfig, SourceConfig
from heatctl.errors import plain
from heatctl.sources.extract import PayloadError, Role, describe, to_heating, to_number, to_open
from heatctl.sources.mqtt import zone_sources
from heatctl.sources.store import ReadingStore

_LOGGER = logging.getLogger(__name__)
UNKNOWN_AGE_S = 1e9  # a state without a timestamp: as old as can be, so it is stale
MISSING_STATES = frozenset({"unavailable", "unknown", "none", ""})
# What a climate entity means for each role, when no attribute is given.
CLIMATE_ATTRIBUTES: dict[str, str | None] = {
    "temperature": "current_temperature",
    "setpoint": "temperature",
    "mode": None,  # the state itself is the hvac mode
}


class MissingValue(Exception):
    """The entity is unavailable or unknown: no reading, so staleness applies."""


def entity_value(state: str, attributes: dict[str, Any], source: SourceConfig, role: Role) -> float:
    """An entity's state and attributes → the validated value for this role."""
    assert source.entity is not None
    attribute = source.attribute
    if attribute is None and source.entity.startswith("climate."):
        attribute = CLIMATE_ATTRIBUTES.get(role)
    raw: Any = state if attribute is None else attributes.get(attribute)
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in MISSING_STATES):
        raise MissingValue(f"{source.entity}{'.' + attribute if attribute else ''} is {raw!r}")
    if role == "window":
        return to_open(raw, source)
    if role == "mode":
        return to_heating(raw)
    return to_number(raw, source, role)


def entity_bindings(cfg: Config) -> list[tuple[str, Role, SourceConfig]]:
    return [
        (zone.name, role, source)
        for zone in cfg.zones
        for role, source in zone_sources(zone)
        if source.entity is not None
    ]


def make_client(cfg: HomeAssistantConfig, timeout_s: float = 10.0) -> Any:
    from homeassistant_api import Client

    return Client(
        cfg.url.rstrip("/") + "/api",
        cfg.token.get_secret_value(),
        global_request_kwargs={"timeout": timeout_s},
        verify_ssl=cfg.verify_ssl,
    )


def hourly_forecast(cfg: HomeAssistantConfig, entity: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``weather.get_forecasts`` (hourly) for one entity: its service response.

    Asked over the WebSocket API: the REST API returns service responses only from Home Assistant
    2024.8 on, the WebSocket API from 2023.9 (before ``get_forecasts`` itself).
    """
    from homeassistant_api import WebsocketClient
    from niquests import Session

    session = Session(timeout=timeout_s, verify=cfg.verify_ssl)
    url = cfg.url.rstrip("/") + "/api/websocket"
    with WebsocketClient(url, cfg.token.get_secret_value(), session=session) as ws:
        response = ws.trigger_service_with_response("weather", "get_forecasts", entity_id=entity, type="hourly")
    return dict(response or {})


class HomeAssistantPoller:
    """Polls every entity source; a slow or absent Home Assistant only delays its own thread.

    Thread: its own. It reads states over HTTP and puts validated readings into the store;
    it never touches the controller.
    """

    def __init__(
        self,
        cfg: Config,
        store: ReadingStore,
        *,
        client_factory: Callable[[HomeAssistantConfig], Any] = make_client,
        wall_fn: Callable[[], float] = time.time,
    ) -> None:
        assert cfg.homeassistant is not None
        self._ha = cfg.homeassistant
        self._bindings = entity_bindings(cfg)
        self._store = store
        self._client_factory = client_factory
        self._wall_fn = wall_fn
        self._missing: set[str] = set()  # entities Home Assistant does not know (said once each)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self.polls = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._bindings:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def poll_once(self, client: Any) -> None:
        """Every entity once; one that Home Assistant does not know is a missing value for it alone."""
        entities = sorted({source.entity for _, _, source in self._bindings if source.entity})
        states: dict[str, tuple[str, dict[str, Any], float]] = {}
        for entity in entities:
            state = self._state(client, entity)
            if state is not None:
                states[entity] = (str(state.state), dict(state.attributes or {}), self._age_s(state))
        for zone, role, source in self._bindings:
            assert source.entity is not None
            if source.entity not in states:
                continue
            state_text, attributes, age_s = states[source.entity]
            try:
                value = entity_value(state_text, attributes, source, role)
            except MissingValue as exc:
                _LOGGER.debug("zone %s %s: %s", zone, role, exc)
                continue
            except PayloadError as exc:
                self._store.reject(f"entity {source.entity} ({zone} {role})", state_text.encode(), str(exc))
                continue
            self._store.put(zone, role, value, f"entity {source.entity}", age_s=age_s)
        self.polls += 1

    def _state(self, client: Any, entity: str) -> Any:
        """The entity's state, or None when Home Assistant has no such entity (renamed, removed)."""
        from homeassistant_api.errors import EndpointNotFoundError

        try:
            state = client.get_state(entity_id=entity)
        except EndpointNotFoundError:
            if entity not in self._missing:
                _LOGGER.error("Home Assistant has no entity %s (renamed or removed?): it reads as missing", entity)
                self._missing.add(entity)
            return None
        if entity in self._missing:
            _LOGGER.info("Home Assistant has entity %s again", entity)
            self._missing.discard(entity)
        return state

    def _age_s(self, state: Any) -> float:
        """How long ago the device last reported, as Home Assistant says (``last_reported``, else
        ``last_updated``): a dead sensor's value keeps its age and goes stale. Unknown: infinitely old."""
        moments = [getattr(state, name, None) for name in ("last_reported", "last_updated")]
        when = next((m for m in moments if isinstance(m, datetime)), None)
        if when is None:
            return UNKNOWN_AGE_S
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(self._wall_fn() - when.timestamp(), 0.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # Entering checks the API and opens an HTTP session; leaving closes it.
                with self._client_factory(self._ha) as client:
                    while not self._stop.is_set():
                        self.poll_once(client)
                        if self.last_error is not None:
                            _LOGGER.info("Home Assistant reachable again")
                        self.last_error = None
                        self._stop.wait(self._ha.poll_interval_s)
            except Exception as exc:  # HTTP, auth, DNS: keep polling; staleness protects the room
                if self.last_error is None:
                    _LOGGER.warning("Home Assistant at %s: %s", self._ha.url, plain(exc))
                self.last_error = plain(exc)
            self._stop.wait(self._ha.poll_interval_s)


def probe_homeassistant(cfg: Config) -> list[tuple[str, bool, str, str]]:
    """For ``heatctl check``: reach the API, then read every entity source once."""
    assert cfg.homeassistant is not None
    ha = cfg.homeassistant
    try:
        with make_client(ha, timeout_s=5.0) as client:
            return [("homeassistant", True, f"{ha.url}: API running", ""), *_probe_entities(cfg, client)]
    except Exception as exc:
        unreached = [
            (f"{zone}.{role}", False, f"{source.entity}: not checked, Home Assistant unreachable", "")
            for zone, role, source in entity_bindings(cfg)
        ]
        fix = "check homeassistant.url and that the token is a long-lived access token"
        return [("homeassistant", False, f"{ha.url}: {plain(exc)}", fix), *unreached]


def _probe_entities(cfg: Config, client: Any) -> list[tuple[str, bool, str, str]]:
    rows = []
    for zone, role, source in entity_bindings(cfg):
        part = f"{zone}.{role}"
        try:
            state = client.get_state(entity_id=source.entity)
            value = entity_value(str(state.state), dict(state.attributes or {}), source, role)
        except (MissingValue, PayloadError) as exc:
            rows.append((part, False, str(exc), "check the entity id and attribute"))
            continue
        except Exception as exc:
            rows.append((part, False, f"{source.entity}: {plain(exc)}", "check the entity id"))
            continue
        rows.append((part, True, f"{source.entity}: {describe(value, role)}", ""))
    return rows

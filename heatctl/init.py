"""``heatctl init``: find the thermostats, window contacts, weather and GPUs, and write a safe first config.

Looks in Home Assistant (its states) and zigbee2mqtt (``bridge/devices``), asks NVML for the
GPUs and whether their limits may be set, and probes the usual local inference servers. Asks
which thermostat heats which room (or, with ``--yes``, takes the first one found), then writes a
commented config that ``heatctl check`` passes; tokens and passwords go to ``secrets.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatctl.errors import ConfigError, HeatctlError, plain

_LOGGER = logging.getLogger(__name__)
LOCAL_SERVERS = ("http://127.0.0.1:11434/v1", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8000/v1")
BRIDGE_WAIT_S = 3.0
OUTDOOR = re.compile(r"outdoor|outside|exterior|garden|balcony|terrace|patio|yard|au(ss|ß)en", re.IGNORECASE)
SAFE_SHARE = 0.6  # a first config caps the GPU at 60 % of its maximum: quieter, cooler, most work per joule


@dataclass(frozen=True, slots=True)
class Thermostat:
    name: str  # becomes the zone's name
    label: str  # what the person sees in the list
    source: dict[str, Any]  # temperature source
    setpoint: dict[str, Any]
    mode: dict[str, Any] | None = None
    # The room's own heating, when the thermostat is it (a TRV, a radiator's climate entity): set up
    # as the zone's main_heating, so the GPU is the first stage and the radiator no rival.
    main: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    label: str
    source: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FoundGpu:
    index: int
    name: str
    limits_w: tuple[float, float]
    can_set_limit: bool
    problem: str | None


@dataclass
class Found:
    thermostats: list[Thermostat] = field(default_factory=list)
    windows: list[Contact] = field(default_factory=list)
    outdoor: list[Contact] = field(default_factory=list)  # weather or outdoor temperature
    gpus: list[FoundGpu] = field(default_factory=list)
    servers: list[tuple[str, str]] = field(default_factory=list)  # (url, first model)
    notes: list[str] = field(default_factory=list)


def zone_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")
    return name or "room"


# --- zigbee2mqtt ---------------------------------------------------------------------------


def _exposed(exposes: list[Any]) -> set[str]:
    """Every property a zigbee2mqtt device exposes, nested features included."""
    names: set[str] = set()
    for item in exposes:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("property"), str):
            names.add(item["property"])
        names |= _exposed(item.get("features") or [])
    return names


def from_zigbee2mqtt(devices: list[Any], base: str = "zigbee2mqtt") -> Found:
    found = Found()
    for device in devices:
        if not isinstance(device, dict) or device.get("type") == "Coordinator":
            continue
        name = str(device.get("friendly_name", ""))
        definition = device.get("definition") or {}
        props = _exposed(definition.get("exposes") or [])
        topic = f"{base}/{name}"
        label = f"{name} ({definition.get('vendor', '?')} {definition.get('model', '?')}, zigbee2mqtt)"
        setpoint = next((p for p in ("occupied_heating_setpoint", "current_heating_setpoint") if p in props), None)
        if "local_temperature" in props and setpoint:
            found.thermostats.append(
                Thermostat(
                    name=zone_name(name),
                    label=label,
                    source={"topic": topic, "json_path": "local_temperature"},
                    setpoint={"topic": topic, "json_path": setpoint},
                    mode={"topic": topic, "json_path": "system_mode"} if "system_mode" in props else None,
                    main={"trv": topic} | ({} if setpoint == "occupied_heating_setpoint" else {"trv_key": setpoint}),
                )
            )
        elif "contact" in props:
            found.windows.append(Contact(label, {"topic": topic, "json_path": "contact", "open_when": False}))
        elif "temperature" in props and OUTDOOR.search(f"{name} {device.get('description') or ''}"):
            found.outdoor.append(Contact(label, {"topic": topic, "json_path": "temperature"}))
    return found


def ask_zigbee2mqtt(host: str, port: int, username: str | None, password: str | None) -> Found:
    """Read zigbee2mqtt's retained device list from the broker."""
    import paho.mqtt.client as mqtt
    from pydantic import SecretStr

    from heatctl.config import MqttConfig
    from heatctl.mqtt_link import short_lived_client

    got = threading.Event()
    payload: list[bytes] = []
    secret = SecretStr(password) if password else None
    client = short_lived_client(MqttConfig(host=host, port=port, username=username, password=secret), "init")
    # Network thread: only hands the payload over.
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("zigbee2mqtt/bridge/devices")

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        payload.append(bytes(msg.payload))
        got.set()

    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=10)
    except OSError as exc:
        raise HeatctlError(f"cannot reach the MQTT broker at {host}:{port}: {plain(exc)}") from exc
    client.loop_start()
    try:
        if not got.wait(BRIDGE_WAIT_S):
            found = Found()
            found.notes.append(f"no zigbee2mqtt device list on {host}:{port} (zigbee2mqtt/bridge/devices)")
            return found
    finally:
        client.loop_stop()
        client.disconnect()
    try:
        devices = json.loads(payload[0])
    except ValueError:
        devices = []
    return from_zigbee2mqtt(devices if isinstance(devices, list) else [])


# --- Home Assistant --------------------------------------------------------------------------


def from_home_assistant(states: list[dict[str, Any]]) -> Found:
    found = Found()
    for state in states:
        entity = str(state.get("entity_id", ""))
        attrs = state.get("attributes") or {}
        label = f"{attrs.get('friendly_name', entity)} ({entity}, Home Assistant)"
        domain = entity.split(".", 1)[0]
        if domain == "climate" and "current_temperature" in attrs and "heatctl" not in entity:
            found.thermostats.append(
                Thermostat(
                    name=zone_name(entity.split(".", 1)[1]),
                    label=label,
                    source={"entity": entity},
                    setpoint={"entity": entity, "attribute": "temperature"},
                    mode={"entity": entity},
                    main={"entity": entity} if _sets_temperature(attrs) else None,
                )
            )
        elif domain == "binary_sensor" and attrs.get("device_class") in ("window", "door", "opening"):
            found.windows.append(Contact(label, {"entity": entity}))
        elif domain == "weather" and "temperature" in attrs:
            found.outdoor.append(Contact(label, {"entity": entity, "attribute": "temperature"}))
        elif (
            domain == "sensor"
            and attrs.get("device_class") == "temperature"
            and OUTDOOR.search(f"{entity} {attrs.get('friendly_name', '')}")
        ):
            found.outdoor.insert(0, Contact(label, {"entity": entity}))  # a real sensor outside before a forecast
    return found


def _sets_temperature(attrs: dict[str, Any]) -> bool:
    """The climate entity takes climate.set_temperature (HA's TARGET_TEMPERATURE feature, 1)."""
    features = attrs.get("supported_features")
    return isinstance(features, int) and not isinstance(features, bool) and bool(features & 1)


def ask_home_assistant(url: str, token: str) -> Found:
    from pydantic import SecretStr

    from heatctl.config import HomeAssistantConfig
    from heatctl.sources.homeassistant import make_client

    try:
        with make_client(HomeAssistantConfig(url=url, token=SecretStr(token)), timeout_s=10.0) as client:
            states = [
                {"entity_id": s.entity_id, "state": s.state, "attributes": dict(s.attributes or {})}
                for s in client.get_states()
            ]
    except Exception as exc:  # the library's HTTP, auth and parse errors alike
        raise HeatctlError(f"cannot read Home Assistant's states at {url}: {plain(exc)}") from exc
    return from_home_assistant(states)


# --- GPUs and inference servers ----------------------------------------------------------------


def find_gpus() -> tuple[list[FoundGpu], str | None]:
    """Every NVIDIA GPU and whether heatctl may set its limit; (gpus, why none were found)."""
    from heatctl.config import GpuConfig
    from heatctl.gpu import nvml

    try:
        n = nvml.init()
        count = n.nvmlDeviceGetCount()
        n.nvmlShutdown()
    except (HeatctlError, Exception) as exc:  # no driver, no library: a clear reason, never a traceback
        return [], plain(exc)
    gpus: list[FoundGpu] = []
    with tempfile.TemporaryDirectory() as state_dir:
        for index in range(count):
            try:
                gpu = nvml.open_gpu(GpuConfig(id=f"gpu{index}", backend="nvml", index=index), state_dir=Path(state_dir))
            except HeatctlError as exc:
                return gpus, str(exc)
            gpus.append(FoundGpu(index, str(gpu.name), gpu.limits_w(), gpu.can_set_limit, gpu.limit_problem))
            gpu.restore()
    return gpus, None


def find_servers(urls: tuple[str, ...] = LOCAL_SERVERS) -> list[tuple[str, str]]:
    from heatctl.workloads.openai import RequestError, probe_server

    servers = []
    for url in urls:
        try:
            models = probe_server(url, timeout_s=1.0)
        except RequestError:
            continue
        servers.append((url, models.split(", ")[0] if models else "default"))
    return servers


# --- writing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choices:
    thermostat: Thermostat
    window: Contact | None
    outdoor: Contact | None
    gpu: FoundGpu | None
    server: tuple[str, str] | None
    mode: str
    mqtt: tuple[str, int] | None
    mqtt_username: str | None
    ha_url: str | None
    house: tuple[str, float] | None = None  # the house's NATS server, the budget of all its heaters


def _flow(source: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in source.items()) + "}"


def render(choices: Choices, *, state_dir: str) -> str:
    """The commented config text."""
    c = choices
    gpu = c.gpu
    max_w = round(SAFE_SHARE * gpu.limits_w[1] / 10) * 10 if gpu else 150
    lines = [
        "# heatctl: written by `heatctl init`. Check it with `heatctl check -c <this file>`.",
        "# Every key is explained in the README (Configuration); `heatctl config schema` gives editors completion.",
        f"node_id: {_node_id() if c.house else 'heatctl'}",
        f'mode: "{c.mode}"                      # heat | off; Home Assistant and MQTT can change it later',
        f"max_power_w: {max_w}                # a careful start: {SAFE_SHARE:.0%} of the GPU's maximum",
        f"# state_dir: {state_dir}     # original power limits, counters; the default for this user",
        "",
    ]
    if c.mqtt is not None:
        host, port = c.mqtt
        lines += ["mqtt:", f"  host: {host}", f"  port: {port}"]
        if c.mqtt_username:
            lines += [f"  username: {c.mqtt_username}", "  password: !secret mqtt_password   # in secrets.yaml"]
        lines += ["  discovery_prefix: homeassistant   # heatctl appears in Home Assistant as a device", ""]
    else:
        lines += ["mqtt: null                        # no broker: no Home Assistant device, no MQTT state", ""]
    if c.ha_url is not None:
        lines += ["homeassistant:", f"  url: {c.ha_url}", "  token: !secret ha_token             # in secrets.yaml", ""]
    if c.house is not None:
        url, budget_w = c.house
        lines += [
            "house:                            # the house's heaters: one budget, and one pool of batch work",
            f"  nats: {url}",
            "  name: home                       # the same on every heater of the house",
            f"  budget_w: {budget_w:g}                # all of them together (a fuse, a contract)",
            "  nodes: 2                         # how many heaters share it (each takes its part until it hears)",
            "",
        ]
    t = c.thermostat
    lines += [
        "zones:",
        f"  - name: {t.name}                  # {t.label}",
        f"    temperature: {_flow(t.source)}",
        f"    setpoint:    {_flow(t.setpoint)}",
    ]
    if t.mode is not None:
        lines.append(f"    mode:        {_flow(t.mode)}   # the thermostat off → no heat")
    if c.window is not None:
        lines.append(f"    window:      {_flow(c.window.source)}   # {c.window.label}")
    else:
        lines.append("    # window: {topic: zigbee2mqtt/<contact sensor>, json_path: contact, open_when: false}")
    if c.outdoor is not None:
        lines.append(f"    outdoor_temperature: {_flow(c.outdoor.source)}   # {c.outdoor.label}")
    if t.main is not None:
        lines += [
            "    main_heating:                 # the thermostat heats too: the GPU first, the radiator second",
            *(f"      {key}: {json.dumps(value)}" for key, value in t.main.items()),
            "      offset_k: 1.5               # held back to the target − 1.5 K while the GPU holds the room",
        ]
    lines += ["    gpus: [gpu0]", "", "gpus:", "  - id: gpu0"]
    if gpu is not None:
        lines += [
            f"    backend: nvml                 # {gpu.name}, limits {gpu.limits_w[0]:.0f}–{gpu.limits_w[1]:.0f} W",
            f"    index: {gpu.index}",
            "    max_temp_c: 83",
        ]
        if not gpu.can_set_limit:
            lines.append(
                f"    # heatctl may not set this GPU's power limit ({gpu.problem}); the workload steers the heat"
            )
    else:
        lines += [
            "    backend: nvml                 # no NVIDIA GPU was found here: check that nvidia-smi works",
            "    index: 0",
        ]
    if c.server is not None:
        url, model = c.server
        lines += [
            "    workload:                     # batch jobs for this inference server, run while heat is wanted",
            "      type: openai",
            f"      url: {url}",
            f"      model: {json.dumps(model)}",
            f"      jobs: {state_dir}/jobs      # drop JSONL job files here",
        ]
    else:
        lines += [
            "    workload: {type: none}        # no local inference server found: something else loads the GPU",
            "    # workload: {type: process, command: [/usr/bin/my-gpu-job]}   # or a job heatctl may pause",
        ]
    return "\n".join(_align(line) for line in lines) + "\n"


def _align(line: str, column: int = 40) -> str:
    """Trailing comments start in one column, where the value leaves room."""
    if line.lstrip().startswith("#") or "  # " not in line:
        return line
    code, _, comment = line.partition("  # ")
    return f"{code.rstrip():<{column}} # {comment.strip()}"


def _choose(label: str, options: list[str], ask: Callable[[str], str] | None, *, optional: bool) -> int | None:
    """Index of the chosen option; the first without a person; None for 'none of them'."""
    if not options:
        return None
    if ask is None:
        return 0
    print(f"\n{label}:")
    for i, option in enumerate(options, start=1):
        print(f"  {i}. {option}")
    if optional:
        print("  0. none of them")
    while True:
        answer = ask(f"which one? [1{'/0' if optional else ''}] ").strip() or "1"
        if answer.isdigit() and (0 if optional else 1) <= int(answer) <= len(options):
            return int(answer) - 1 if int(answer) else None
        print(f"  please answer with a number from {0 if optional else 1} to {len(options)}")


def _node_id() -> str:
    """This machine's name as a node id: the house's heaters must each have their own."""
    import re
    import socket

    return re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower()).strip("-") or "heatctl"


def _house(url: str, budget: str, default_w: float) -> tuple[str, float]:
    if not url.startswith(("nats://", "tls://")):
        raise ConfigError([f"heatctl init: the house's NATS server is a nats://HOST:PORT URL, not {url!r}"])
    try:
        budget_w = float(budget) if budget else default_w
    except ValueError:
        raise ConfigError([f"heatctl init: the house's budget is a number of watts, not {budget!r}"]) from None
    if budget_w <= 0:
        raise ConfigError(["heatctl init: the house's budget must be above 0 W"])
    return url, budget_w


def run_init(
    *,
    ha_url: str | None,
    ha_token: str | None,
    mqtt: str | None,
    mqtt_username: str | None,
    mqtt_password: str | None,
    out: Path,
    yes: bool,
    mode: str,
    ask: Callable[[str], str] | None = None,
    house: str | None = None,
    house_budget_w: float | None = None,
) -> int:
    """Discover, choose (or take the first with ``yes``), write; returns the exit code."""
    if out.exists():
        raise ConfigError([f"heatctl init: {out} exists; choose another --out or move it away first"])
    if not yes and ask is None:
        if not sys.stdin.isatty():
            raise ConfigError(["heatctl init: no terminal to ask in: add --yes to take the first thermostat found"])
        ask = input
    if yes:
        ask = None
    if ask is not None and ha_url is None and mqtt is None:
        mqtt = ask("MQTT broker that zigbee2mqtt uses, HOST[:PORT] (empty: none): ").strip() or None
        ha_url = ask("Home Assistant URL, e.g. http://homeassistant.local:8123 (empty: none): ").strip() or None
        if ha_url and not ha_token:
            ha_token = ask("a long-lived access token (your HA profile → Security): ").strip() or None
    if ha_url is None and mqtt is None:
        raise ConfigError(["heatctl init: give --mqtt HOST[:PORT] (zigbee2mqtt) or --ha URL --ha-token TOKEN, or both"])
    if ha_url is not None and not ha_token:
        raise ConfigError(["heatctl init: --ha needs --ha-token (a long-lived access token from your HA profile)"])
    broker = _host_port(mqtt) if mqtt else None
    found = Found()
    if broker is not None:
        _merge(found, ask_zigbee2mqtt(*broker, mqtt_username, mqtt_password))
    if ha_url is not None and ha_token:
        _merge(found, ask_home_assistant(ha_url, ha_token))
    found.gpus, gpu_problem = find_gpus()
    found.servers = find_servers()
    for note in found.notes:
        print(f"note: {note}")
    if not found.thermostats:
        where = " and ".join(w for w in ("zigbee2mqtt" if broker else "", "Home Assistant" if ha_url else "") if w)
        print(f"heatctl init: no thermostat or radiator valve found in {where}", file=sys.stderr)
        return 1
    t = _choose("Thermostats (the room heatctl will heat)", [t.label for t in found.thermostats], ask, optional=False)
    w = _choose("Window contacts (open → no heat)", [c.label for c in found.windows], ask, optional=True)
    o = _choose("Outdoor temperature (weather)", [c.label for c in found.outdoor], ask, optional=True)
    g = _choose("GPUs", [f"{x.name} (index {x.index})" for x in found.gpus], ask, optional=False)
    s = _choose(
        "Local inference servers (their batch jobs make the heat)", [u for u, _ in found.servers], ask, optional=True
    )
    choices = Choices(
        thermostat=found.thermostats[t or 0],
        window=found.windows[w] if w is not None else None,
        outdoor=found.outdoor[o] if o is not None else None,
        gpu=found.gpus[g] if g is not None else None,
        server=found.servers[s] if s is not None else None,
        mode=mode,
        mqtt=broker,
        mqtt_username=mqtt_username,
        ha_url=ha_url,
    )
    gpu = choices.gpu
    default_budget_w = 2 * round(SAFE_SHARE * gpu.limits_w[1] / 10) * 10 if gpu else 300.0  # two such heaters
    if ask is not None and house is None:
        house = ask("NATS server of this house's other heaters, nats://HOST:4222 (empty: this one is alone): ").strip()
        if house:
            budget = ask(f"their power budget together, W [{default_budget_w:g}]: ").strip()
            choices = dataclasses.replace(choices, house=_house(house, budget, default_budget_w))
    elif house:
        choices = dataclasses.replace(choices, house=_house(house, str(house_budget_w or ""), default_budget_w))
    from heatctl.config import Config

    state_dir = str(Config.model_construct().resolved_state_dir())
    text = render(choices, state_dir=state_dir)
    _write(out, text, {"ha_token": ha_token, "mqtt_password": mqtt_password})
    _summary(out, choices, gpu_problem)
    return 0


def _merge(into: Found, more: Found) -> None:
    into.thermostats += more.thermostats
    into.windows += more.windows
    into.outdoor += more.outdoor
    into.notes += more.notes


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    if port and not port.isdigit():
        raise ConfigError([f"heatctl init: --mqtt {text}: the port must be a number"])
    return host or "localhost", int(port or 1883)


def _write(out: Path, text: str, secrets: dict[str, str | None]) -> None:
    """Secrets beside the config (mode 600), then the config; what was written must validate."""
    from heatctl.config import load_config

    wanted = {k: v for k, v in secrets.items() if v}
    secrets_file = out.parent / "secrets.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    if wanted:
        existing = secrets_file.read_text() if secrets_file.exists() else ""
        added = "".join(f"{k}: {json.dumps(v)}\n" for k, v in wanted.items() if f"\n{k}:" not in f"\n{existing}")
        secrets_file.write_text(existing + added)
        secrets_file.chmod(0o600)
    out.write_text(text)
    load_config(out)


def _summary(out: Path, c: Choices, gpu_problem: str | None) -> None:
    print(f"\nwrote {out}" + (f" and {out.parent / 'secrets.yaml'}" if c.ha_url or c.mqtt_username else ""))
    print(f"  zone {c.thermostat.name}: {c.thermostat.label}")
    if c.thermostat.main is not None:
        device = next(iter(c.thermostat.main.values()))
        print(
            f"  {device} is the room's heating too: set up as main_heating, so the GPU heats first and the"
            " radiator is held back until the GPU cannot keep up (given back whenever heatctl stops);"
            " use heatctl's climate card for the room's target"
        )
    if c.outdoor is not None:
        print(f"  outdoor temperature: {c.outdoor.label}")
    if c.gpu is None:
        print(f"  no NVIDIA GPU found ({gpu_problem or 'none listed'}): fix the driver, then run init again")
    elif not c.gpu.can_set_limit:
        print(f"  {c.gpu.name}: heatctl may not set its power limit ({c.gpu.problem})")
    if c.server is None:
        print("  no local inference server found: workload none (the power limit is heatctl's only lever)")
    print(f"next: heatctl check -c {out}")

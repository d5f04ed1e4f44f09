"""``heatctl check``: validate the config, then reach every configured part; one row each, never raises."""

from __future__ import annotations

import shlex
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatctl.config import BatchApiConfig, OpenAIWorkloadConfig, load_config
from heatctl.errors import BackendError, HeatctlError, InstanceConflict, plain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from heatctl.config import Config, GpuConfig, SourceConfig, ZoneConfig

LISTEN_S = 3.0


@dataclass(frozen=True, slots=True)
class CheckRow:
    part: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False  # works, but probably not what the user wants


def _row(part: str, ok: bool, detail: str, fix: str = "") -> CheckRow:
    return CheckRow(part, ok, detail, fix)


def all_checks(cfg: Config) -> list[CheckRow]:
    rows = [check_state_dir(cfg), *check_control(cfg)]
    if cfg.mqtt is not None:
        rows += check_mqtt(cfg)
    if cfg.influxdb is not None:
        rows.append(check_influx(cfg))
    if cfg.homeassistant is not None:
        rows += check_homeassistant(cfg)
    if cfg.batch_api is not None:
        rows.append(check_batch_api(cfg.batch_api))
    if cfg.house is not None:
        rows.append(check_house(cfg))
    rows += [check_main_heating(cfg, z) for z in cfg.zones if z.main_heating is not None]
    for gpu in cfg.gpus:
        rows += check_gpu(cfg, gpu)
    return rows


FAST_INTERVAL_S = 1.0  # below this the loop reads NVML and publishes its state several times a second
WATCHDOG_S = 180.0  # the systemd unit's WatchdogSec: a tick must come well within it


def check_control(cfg: Config) -> list[CheckRow]:
    """Each zone's loop interval against what a room needs and what the unit's watchdog allows."""
    rows = []
    for zone in cfg.zones:
        interval_s = zone.control.interval_s
        part = f"{zone.name}.control"
        if interval_s > WATCHDOG_S * 2 / 3:
            fix = f"keep interval_s at most {WATCHDOG_S * 2 / 3:.0f} s, or raise WatchdogSec in the unit"
            rows.append(
                _row(
                    part,
                    False,
                    f"interval_s {interval_s:g} s: systemd's watchdog ({WATCHDOG_S:.0f} s) would kill heatctl",
                    fix,
                )
            )
        elif interval_s < FAST_INTERVAL_S:
            fix = "5–60 s is what a room needs; the default is 30 s"
            detail = f"interval_s {interval_s:g} s: NVML read and the state published {1 / interval_s:.0f}× a second"
            rows.append(CheckRow(part, True, detail, fix, warn=True))
    return rows


def check_house(cfg: Config) -> CheckRow:
    """The house's NATS server with JetStream, and who reports into its bucket."""
    import asyncio

    assert cfg.house is not None
    house = cfg.house

    async def pool_line(js: Any) -> str:
        """The pool's stream: requests waiting and pulled (or that no batch has made it yet)."""
        from nats.js.errors import NotFoundError

        from heatctl.house.pool import Pool

        pool = Pool(house.name, js)
        try:
            waiting, pulled = await pool.waiting()
        except NotFoundError:
            return "; the pool's stream is made with the first batch"
        fleet = f", fleet {house.fleet.name} through domain {house.fleet.domain}" if house.fleet else ""
        return f"; pool {pool.stream}: {waiting} waiting, {pulled} running{fleet}"

    async def probe() -> str:
        import nats
        from nats.js.errors import BucketNotFoundError, NoKeysError

        nc = await nats.connect(servers=[house.nats], connect_timeout=3, allow_reconnect=False)
        try:
            js = nc.jetstream()
            await js.account_info()  # raises without JetStream (a server started without -js)
            try:
                kv = await js.key_value(f"heatctl_{house.name}")
                keys = sorted(await kv.keys())
            except (BucketNotFoundError, NoKeysError):
                keys = []
            reporting = f"reporting: {', '.join(keys)}" if keys else "no heater has reported yet"
            pool = await pool_line(js) if cfg.batch_api is not None else ""
            return f"{house.nats}: JetStream ready, house {house.name} ({house.budget_w:g} W), {reporting}{pool}"
        finally:
            await nc.close()

    try:
        detail = asyncio.run(asyncio.wait_for(probe(), 8.0))
    except Exception as exc:  # nats-py's and the OS's errors alike: one row, never a traceback
        why = plain(exc) or type(exc).__name__
        fix = "run nats-server with JetStream (nats-server -js, deploy/nats/house.conf) and check house.nats"
        return _row("house", False, f"{house.nats}: {why}", fix)
    return _row("house", True, detail)


def check_main_heating(cfg: Config, zone: ZoneConfig) -> CheckRow:
    """Whether heatctl may steer this zone's main heating (its read-back is a source row of its own)."""
    from heatctl.mainheat.devices import ha_call, mqtt_message, through_homeassistant
    from heatctl.mainheat.kinds import main_kind
    from heatctl.mainheat.steer import load_held, shares_thermostat

    main = zone.main_heating
    assert main is not None
    part = f"{zone.name} main heating"
    kept = load_held(cfg.resolved_state_dir()).get(zone.name)
    left = " — HELD BACK by a run that did not stop: heatctl restore gives it back" if kept and kept.steered else ""
    shared = "; it is also the zone's thermostat (heatctl's writes are told apart)" if shares_thermostat(zone) else ""
    sample = main_kind(main).sample()
    if not through_homeassistant(main):
        topic = mqtt_message(main, sample).topic
        return CheckRow(part, True, f"heatctl writes {topic} (MQTT){shared}{left}", warn=bool(left))
    call = ha_call(main, sample)
    domain, service, entity = call.domain, call.service, str(call.data["entity_id"])
    assert cfg.homeassistant is not None  # the config's cross-checks require it
    try:
        from heatctl.sources.homeassistant import make_client

        with make_client(cfg.homeassistant, timeout_s=5.0) as client:
            state = client.get_state(entity_id=entity)
            services = client.get_domain(domain)
    except Exception as exc:
        return _row(part, False, f"{entity}: {plain(exc)}", "check the entity id and Home Assistant")
    attributes = dict(state.attributes or {})
    can = services is not None and service in getattr(services, "services", {})
    if domain == "climate" and (int(attributes.get("supported_features", 0)) & 1) == 0:
        can = False
    if not can:
        return _row(part, False, f"{entity} does not take {domain}.{service}", "give a climate entity with a target")
    return CheckRow(part, True, f"heatctl may steer {entity} ({domain}.{service}){shared}{left}", warn=bool(left))


def check_batch_api(api: BatchApiConfig) -> CheckRow:
    """The running service's API answers with the token; or, with heatctl stopped, its address is free."""
    import http.client
    import json
    import socket

    part = "batch api"
    url = f"http://{api.listen}/v1"
    conn = http.client.HTTPConnection(api.host, api.port, timeout=5)
    try:
        conn.request("GET", "/v1/batches?limit=1", headers={"Authorization": f"Bearer {api.token.get_secret_value()}"})
        response = conn.getresponse()
        body = response.read()
    except OSError:
        try:
            with socket.create_server((api.host, api.port)):
                pass
        except OSError as exc:
            return _row(part, False, f"{api.listen}: {plain(exc)}", "another program holds this address: change listen")
        return CheckRow(part, True, f"{url}: not running now (heatctl run serves it); the address is free", warn=True)
    finally:
        conn.close()
    if response.status == 401:
        return _row(part, False, f"{url} refuses the token", "batch_api.token must be the running heatctl's")
    if response.status != 200:
        return _row(part, False, f"{url}: HTTP {response.status}", "is it heatctl listening there?")
    listed = json.loads(body or b"{}").get("data", [])
    return _row(part, True, f"{url} answers; {len(listed)} recent batch(es); max file {api.max_file_mb:g} MB")


def check_state_dir(cfg: Config, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> CheckRow:
    """Writable, room to write (results, the previous copies of state files), no damaged state file."""
    path = cfg.resolved_state_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".check"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return _row("state_dir", False, f"{path}: {exc}", "create it writable for the heatctl user")
    free_mb = disk_usage(path).free / 1e6
    need_mb = MIN_FREE_MB + (2 * cfg.batch_api.max_file_mb if cfg.batch_api is not None else 0.0)
    space = f"{free_mb:,.0f} MB free"
    if free_mb < 1.0:
        return _row("state_dir", False, f"{path}: {space}", "free space: state and results cannot be written")
    damaged = [problem for name in STATE_FILES if (problem := _damaged(path / name)) is not None]
    if damaged:
        fix = "heatctl takes the safe side (mode off, the driver's default limit); check what it says, then run it"
        return CheckRow("state_dir", True, f"{path} is writable, {space}; " + "; ".join(damaged), fix, warn=True)
    if free_mb < need_mb:
        fix = f"free space: below {need_mb:,.0f} MB, uploads and results may fail (they are retried, nothing is lost)"
        return CheckRow("state_dir", True, f"{path} is writable, only {space}", fix, warn=True)
    return _row("state_dir", True, f"{path} is writable, {space}")


MIN_FREE_MB = 100.0  # state files, their copies, a day of logs


STATE_FILES = ("state.json", "limits.json", "main_heating.json")


def _damaged(path: Path) -> str | None:
    """What is wrong with a state file (None: it reads, or it is not there)."""
    from heatctl.state import StateFile

    state = StateFile(path)
    state.load()
    return state.problem


def check_mqtt(cfg: Config) -> list[CheckRow]:
    """The broker, then every MQTT source's current value; each source gets a row even when the broker fails."""
    rows = _check_mqtt(cfg)
    if rows[0].ok or len(rows) > 1:
        return rows
    return rows + [
        _row(f"{zone.name}.{role}", False, f"{source.topic}: not checked, the broker is unreachable")
        for zone in cfg.zones
        for role, source in _zone_sources(zone)
        if source.topic is not None
    ]


def _zone_sources(zone: ZoneConfig) -> Iterator[tuple[str, SourceConfig]]:
    from heatctl.sources.mqtt import zone_sources

    yield from zone_sources(zone)


def _check_mqtt(cfg: Config) -> list[CheckRow]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.reasoncodes import ReasonCode

    from heatctl.mqtt_link import short_lived_client
    from heatctl.sources.mqtt import read_requests

    assert cfg.mqtt is not None
    m = cfg.mqtt
    try:
        client = short_lived_client(m, "check")
    except (OSError, ValueError) as exc:
        return [_row("mqtt", False, f"TLS setup: {exc}", "check mqtt.tls paths")]
    connected = threading.Event()
    result: list[str] = []
    last: dict[str, tuple[bytes, float]] = {}

    def on_connect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        result.append(str(rc))
        if not rc.is_failure:
            for topic in _topics(cfg):
                c.subscribe(topic)
            for topic, payload in read_requests(cfg).items():  # zigbee2mqtt: ask for a fresh reading
                c.publish(topic, payload, qos=1)
        connected.set()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        last[msg.topic] = (bytes(msg.payload), time.monotonic())

    client.on_connect = on_connect
    client.on_message = on_message
    where = f"{m.host}:{m.port}"
    try:
        client.connect(m.host, m.port, keepalive=10)
    except OSError as exc:
        return [
            _row("mqtt", False, f"{where}: {plain(exc)}", "is the broker running and reachable? check mqtt.host/port")
        ]
    client.loop_start()
    try:
        if not connected.wait(5.0):
            return [_row("mqtt", False, f"{where}: no answer in 5 s", "check mqtt.host/port and TLS")]
        if result and result[0] != "Success":
            return [_row("mqtt", False, f"{where}: refused: {result[0]}", "check mqtt.username/password")]
        rows = [_row("mqtt", True, f"connected to {where}" + (" (TLS)" if m.tls else ""))]
        time.sleep(LISTEN_S)  # retained values arrive at once; live ones may take a moment
        rows += _source_rows(cfg, last)
        return rows
    finally:
        client.loop_stop()
        client.disconnect()


def _topics(cfg: Config) -> set[str]:
    from heatctl.sources.mqtt import zone_sources

    return {s.topic for z in cfg.zones for _, s in zone_sources(z) if s.topic is not None}


def _source_rows(cfg: Config, last: dict[str, tuple[bytes, float]]) -> list[CheckRow]:
    from heatctl.sources.extract import PayloadError, describe, extract
    from heatctl.sources.mqtt import zone_sources

    rows = []
    for zone in cfg.zones:
        for role, source in zone_sources(zone):
            if source.topic is None:
                continue
            part = f"{zone.name}.{role}"
            seen = last.get(source.topic)
            if seen is None:
                required = role in ("temperature", "setpoint")
                rows.append(
                    _row(
                        part,
                        not required,
                        f"{source.topic}: nothing in {LISTEN_S:g} s"
                        + (" (asked it with /get)" if source.asks_at_start else " (not retained?)"),
                        "check the topic; heatctl fails safe until it reports" if required else "",
                    )
                )
                continue
            try:
                value = extract(seen[0], source, role)
            except PayloadError as exc:
                rows.append(_row(part, False, f"{source.topic}: {exc}", _fix_for(source)))
                continue
            rows.append(_row(part, True, f"{source.topic}: {describe(value, role)}"))
    return rows


def _fix_for(source: SourceConfig) -> str:
    if source.json_path:
        return f"check json_path {source.json_path!r} against the payload"
    return "set json_path or value_template for this payload"


def check_influx(cfg: Config) -> CheckRow:
    from heatctl.publish.influx import probe_influx

    assert cfg.influxdb is not None
    ok, detail, fix = probe_influx(cfg.influxdb, cfg.node_id)
    return _row("influxdb", ok, detail, fix)


def check_homeassistant(cfg: Config) -> list[CheckRow]:
    from heatctl.sources.homeassistant import probe_homeassistant

    assert cfg.homeassistant is not None
    return [_row(part, ok, detail, fix) for part, ok, detail, fix in probe_homeassistant(cfg)]


def check_gpu(cfg: Config, gcfg: GpuConfig) -> list[CheckRow]:
    from heatctl.gpu.registry import open_gpu

    part = f"gpu {gcfg.id}"
    try:
        gpu = open_gpu(gcfg, state_dir=cfg.resolved_state_dir(), time_fn=time.monotonic)
    except InstanceConflict as exc:  # a running heatctl steers it: check leaves it alone
        return [_row(part, True, f"not probed: {str(exc).replace(': stop it first', '')}"), check_workload(gcfg)]
    except HeatctlError as exc:
        fix = "install the NVIDIA driver; nvidia-smi must work" if gcfg.backend == "nvml" else ""
        return [_row(part, False, str(exc), fix), check_workload(gcfg)]
    sim_rows = []
    if gcfg.backend == "sim":
        sim_rows.append(
            CheckRow(
                part,
                True,
                "SIMULATED GPU (backend: sim): heatctl heats nothing on this machine",
                "set backend: nvml for the real GPU",
                warn=True,
            )
        )
    try:
        lo, hi = gpu.limits_w()
        reading = gpu.read()
        power = f"{reading.power_w:.0f} W" if reading.power_w is not None else "power n/a"
        temp = f"{reading.temperature_c:.0f} °C" if reading.temperature_c is not None else "temperature n/a"
        name = getattr(gpu, "name", gcfg.backend)
        if reading.fault is not None:
            rows = [_row(part, False, f"{name}: {reading.fault}")]
        else:
            rows = [_row(part, True, f"{name}: {power}, {temp}, limits {lo:.0f}–{hi:.0f} W")]
        problem = gpu.limit_problem
        rows.append(
            _row(
                f"{part} limit",
                gpu.can_set_limit,
                "may set power limits" if gpu.can_set_limit else f"cannot set power limits: {problem}",
                "" if gpu.can_set_limit else "run as root (the systemd unit in deploy/ does)",
            )
        )
        if not gpu.can_set_limit and gcfg.workload.type == "none":
            rows.append(
                _row(
                    f"{part} lever",
                    False,
                    "neither the power limit nor the workload (type none) can be steered: no way to stop its heat",
                    "give a workload heatctl can pause (process or openai), or let it set power limits",
                )
            )
        if reading.energy_j is None:
            rows.append(_row(f"{part} energy", True, "no energy counter: energy is integrated from power"))
    except BackendError as exc:
        rows = [_row(part, False, str(exc))]
    finally:
        gpu.restore()
    rows.append(check_workload(gcfg))
    if (surface := check_surface(cfg, gcfg)) is not None:
        rows.append(surface)
    return sim_rows + rows


def check_surface(cfg: Config, gcfg: GpuConfig) -> CheckRow | None:
    """An LLM server's GPU: calibrated on this card, or starting from the published shape."""
    from heatctl.calibrate import load_calibration, surface_path
    from heatctl.config import OpenAIWorkloadConfig

    if not isinstance(gcfg.workload, OpenAIWorkloadConfig):
        return None
    part = f"gpu {gcfg.id} surface"
    calibration = load_calibration(cfg.resolved_state_dir(), gcfg)
    if calibration is None:
        path = surface_path(cfg.resolved_state_dir(), gcfg.id, gcfg.workload.model)
        detail = f"not calibrated ({path}): requests in flight and cap chosen from the published shape"
        return CheckRow(
            part, True, detail, f"heatctl calibrate -c <config> --gpu {gcfg.id} measures this card", warn=True
        )
    best = max(calibration.points, key=lambda p: p.tokens_per_j)
    detail = (
        f"calibrated {calibration.created} for {calibration.model}: {len(calibration.points)} points, best"
        f" {best.tokens_per_j:.3f} tokens/J ({best.in_flight} in flight, cap {best.cap_w:.0f} W)"
    )
    return _row(part, True, detail)


def _check_openai(w: OpenAIWorkloadConfig, part: str) -> CheckRow:
    from heatctl.workloads.openai import RequestError, probe_server

    try:
        models = probe_server(w.url)
    except RequestError as exc:
        return _row(part, False, f"{w.url}: {exc}", "is the inference server running? check workload.url")
    serves = f"{w.url} serves {models or 'no models listed'}"
    if w.jobs is None:
        return _row(part, True, serves)
    spool = Path(w.jobs).expanduser()
    jobs = len(list(spool.glob("*.jsonl"))) if spool.is_dir() else 0
    return _row(part, True, f"{serves}; {jobs} job file(s) in {spool}")


def check_workload(gcfg: GpuConfig) -> CheckRow:
    w = gcfg.workload
    part = f"gpu {gcfg.id} workload"
    if isinstance(w, OpenAIWorkloadConfig):
        return _check_openai(w, part)
    if w.type == "process":
        if w.command is not None:
            argv = shlex.split(w.command) if isinstance(w.command, str) else w.command
            exe = shutil.which(argv[0])
            if exe is None:
                return _row(part, False, f"command {argv[0]!r} not found", "give the full path in workload.command")
            return _row(part, True, f"command {exe}, period {w.period_s:g} s, on exit {w.on_exit}")
        return _row(part, True, f"adopts the process in {w.pid_file}")
    return _row(part, True, f"type {w.type}")


def run_check(path: Path) -> int:
    cfg = load_config(path)
    rows = [CheckRow("config", True, f"{path}: {len(cfg.zones)} zone(s), {len(cfg.gpus)} gpu(s)")]
    rows += all_checks(cfg)
    print(format_rows(rows))
    return 0 if all(r.ok for r in rows) else 1


def format_rows(rows: list[CheckRow]) -> str:
    width = max(len(r.part) for r in rows)
    lines = []
    for r in rows:
        mark = "FAIL" if not r.ok else ("WARN" if r.warn else "ok  ")
        line = f"{mark}  {r.part:<{width}}  {r.detail}"
        if r.fix and (r.warn or not r.ok):
            line += f"\n      {'':<{width}}  fix: {r.fix}"
        lines.append(line)
    return "\n".join(lines)

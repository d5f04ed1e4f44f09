"""``heatctl status``: what a running service is doing, in a person's words, from its retained MQTT state."""

from __future__ import annotations

import json
import math
import queue
import time
from datetime import UTC, datetime
from typing import Any

from heatctl.config import Config, work_unit
from heatctl.errors import HeatctlError, plain

WAIT_S = 5.0


def describe_state(
    state: dict[str, Any], *, node_id: str, online: bool | None, units: dict[str, str] | None = None
) -> str:
    """Several lines, like ``systemctl status``: the node, each zone, each GPU, the totals, any fail-safe."""
    mode = state.get("mode", "?")
    heat_w = _num(state.get("heat_w"))
    heating = any((z.get("demand_w") or 0) > 0 for z in (state.get("zones") or {}).values())
    if mode != "heat":
        doing = "off"
    elif heating:
        doing = "heating"
    else:
        doing = "in fail-safe, no heat" if state.get("failsafe") else "idle, no heat wanted"
    availability = {True: "online", False: "OFFLINE (its last state follows)", None: "availability unknown"}[online]
    max_w = _num(state.get("max_power_w"))
    lines = [f"heatctl {node_id}: {availability}, {doing}; {heat_w:.0f} W of heat now, max {max_w:.0f} W"]
    for name, z in (state.get("zones") or {}).items():
        room = _temp(z.get("temperature_c"))
        target = _temp(z.get("setpoint_c"))
        window = _window(z)
        zone_mode = "" if z.get("mode", "heat") == "heat" else ", zone off"
        why = f"  FAIL-SAFE: {z['failsafe']}" if z.get("failsafe") else ""
        lines.append(f"  zone {name}: {room} → {target}, asks {_num(z.get('demand_w')):.0f} W{window}{zone_mode}{why}")
    units = units or {}
    for gid, g in (state.get("gpus") or {}).items():
        lines.append("  " + _gpu_line(gid, g, units.get(gid, "work")))
    energy = _num(state.get("energy_kwh"))
    reused = _num(state.get("heat_reused_kwh"))
    work = _num(state.get("work_done"))
    lines.append(f"  energy {energy:.2f} kWh so far, {reused:.2f} kWh of it heat the room wanted; work done {work:.0f}")
    if (money := state.get("money")) is not None:
        lines.append("  " + _money_line(money))
    if (batches := state.get("batches")) is not None:
        due = "; running for a deadline" if batches.get("due") else ""
        deadline = f", next deadline {batches['next_deadline']}" if batches.get("next_deadline") else ""
        lines.append(
            f"  batches: {batches.get('queued', 0)} queued, {batches.get('in_progress', 0)} in progress, "
            f"{batches.get('requests_left', 0)} request(s) left"
            f"{deadline}{due}; API {state.get('batch_api', '?')}"
        )
    if state.get("work_starved"):
        lines.append("  heat wanted but no work queued: the GPU cannot heat (give it batches or jobs)")
    if state.get("failsafe"):
        lines.append(f"  FAIL-SAFE: {state['failsafe']}")
    if state.get("bad_payloads") or state.get("rejected_commands"):
        lines.append(
            f"  {state.get('bad_payloads', 0)} bad payload(s), {state.get('rejected_commands', 0)} rejected command(s)"
        )
    lines.append(f"  state of {_age(state.get('updated'))}")
    return "\n".join(lines)


def _money_line(money: dict[str, Any]) -> str:
    """Today's and all-time money, as a person compares it with a bill."""
    currency = money.get("currency", "")

    def part(label: str, day: Any) -> str:
        if not isinstance(day, dict) or day.get("net") is None:
            return f"{label} no price known"
        net = _num(day.get("net"))
        return (
            f"{label} heat worth {_num(day.get('heat_value')):.2f} {currency} replaced"
            f" ({_num(day.get('heat_reused_kwh')):.2f} kWh), electricity {_num(day.get('electricity_cost')):.2f}"
            f" {currency} ({_num(day.get('electricity_kwh')):.2f} kWh), net {'+' if net >= 0 else '−'}{abs(net):.2f}"
            f" {currency}"
        )

    total = money.get("total")
    if not isinstance(total, dict) or total.get("net") is None:
        return "money: no electricity price known (set tariff: price_per_kwh) — kWh only"
    return f"{part('money today:', money.get('today'))}; {part('in all:', total)}"


def _age(updated: Any) -> str:
    try:
        when = datetime.fromisoformat(str(updated))
    except ValueError:
        return "unknown age"
    age_s = (datetime.now(UTC) - when).total_seconds()
    return f"{when.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({age_s:.0f} s ago)"


def _window(zone: dict[str, Any]) -> str:
    last = zone.get("window_open")
    last_word = "never heard" if last is None else "open" if last else "closed"
    word = zone.get("window")
    if word == "unknown":
        return f", window unknown (contact silent; last {last_word})"
    if word is None:  # no contact, or an older heatctl's state with its last state alone
        return "" if last is None else f", window {last_word}"
    return f", window {word}"


def _gpu_line(gid: str, g: dict[str, Any], unit: str) -> str:
    if g.get("fault"):
        return f"gpu {gid}: NO WORK: {g['fault']}"
    power = f"{_num(g.get('power_w')):.0f} W"
    limit = f"limit {_num(g.get('power_limit_w')):.0f} W" if g.get("power_limit_w") is not None else "limit unknown"
    if g.get("limit_control") is False:
        limit += " (not settable)"
    temp = _temp(g.get("temperature_c"))
    level = _num(g.get("level"))
    work = f", {g['work_rate']:.1f} {unit}/s" if isinstance(g.get("work_rate"), int | float) else ""
    notes = []
    settable = g.get("limit_control") is not False and g.get("power_limit_w") is not None
    if settable and _num(g.get("power_w")) > _num(g.get("power_limit_w")) + 5.0:  # read at the tick's start
        notes.append("power as read before the new limit took hold")
    if g.get("limit_mismatches"):
        notes.append(f"limit found changed {g['limit_mismatches']}×")
    if g.get("level_mismatches"):
        notes.append(f"work found running {g['level_mismatches']}×")
    if g.get("steerable") is False:
        notes.append("heatctl CANNOT take heat away from it")
    elif g.get("workload") == "none" and g.get("regime") == "idle" and _num(g.get("power_w")) > _num(g.get("target_w")):
        # Without a workload heatctl can pause, the lowest limit the driver takes is the least heat.
        notes.append("no heat wanted: held at its lowest limit, the floor without a workload to pause")
    extra = f" [{'; '.join(notes)}]" if notes else ""
    return f"gpu {gid}: {power} ({limit}), {temp}, work level {level:.2f}{work}; {g.get('workload', '')}{extra}"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _temp(value: Any) -> str:
    return f"{value:.1f} °C" if isinstance(value, int | float) else "-- °C"


def run_status(cfg: Config, *, follow: bool, wait_s: float = WAIT_S) -> int:
    """Print the state once (or every time it changes, with ``follow``). Exit 1 if there is none."""
    from heatctl.mqtt_link import short_lived_client

    if cfg.mqtt is None:
        raise HeatctlError("status reads the service's MQTT state, and this config has no 'mqtt:' section")
    base = f"{cfg.mqtt.base_topic}/{cfg.node_id}"
    inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    try:
        client = short_lived_client(cfg.mqtt, "status")
    except (OSError, ValueError) as exc:
        raise HeatctlError(f"MQTT TLS setup: {exc}") from exc
    # Network thread: only hands messages over.
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(f"{base}/state", 0), (f"{base}/availability", 0)])
    client.on_message = lambda c, u, msg: inbox.put((msg.topic, bytes(msg.payload)))
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
    except OSError as exc:
        raise HeatctlError(f"cannot reach the MQTT broker at {cfg.mqtt.host}:{cfg.mqtt.port}: {plain(exc)}") from exc
    client.loop_start()
    try:
        units = {g.id: work_unit([g.workload]) for g in cfg.gpus}
        return _print_states(inbox, cfg.node_id, units, follow=follow, wait_s=wait_s)
    except KeyboardInterrupt:
        return 0
    finally:
        client.loop_stop()
        client.disconnect()


def _print_states(
    inbox: queue.SimpleQueue[tuple[str, bytes]], node_id: str, units: dict[str, str], *, follow: bool, wait_s: float
) -> int:
    online: bool | None = None
    state: dict[str, Any] | None = None
    deadline = time.monotonic() + wait_s
    shown = 0
    while True:
        timeout = None if follow and shown else max(deadline - time.monotonic(), 0.0)
        try:
            messages = [inbox.get(timeout=timeout)]
        except queue.Empty:
            break
        time.sleep(0.05)  # retained state and availability arrive together: take both
        while not inbox.empty():
            messages.append(inbox.get())
        fresh_state = False
        for topic, payload in messages:
            if topic.endswith("/availability"):
                online = payload.strip() == b"online"
                continue
            try:
                state = json.loads(payload)
                fresh_state = True
            except ValueError:
                continue
        if state is None or not (fresh_state or follow):
            continue
        print(("\n" if shown else "") + describe_state(state, node_id=node_id, online=online, units=units), flush=True)
        shown += 1
        if not follow:
            return 0
    if state is None:
        print(f"no state from heatctl {node_id} on the broker within {wait_s:g} s: is it running with this config?")
        return 1
    return 0

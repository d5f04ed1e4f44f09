"""Home Assistant MQTT discovery: pure builders of the retained config messages."""

from __future__ import annotations

from typing import Any

from heatctl import __version__
from heatctl.commands import SETPOINT_RANGE_C, preset_names
from heatctl.config import Config, work_unit

Messages = dict[str, dict[str, Any]]  # discovery topic → config payload
TIMESTAMP: dict[str, Any] = {"device_class": "timestamp", "state_class": None}


def _sensor(
    key: str,
    name: str,
    template: str,
    *,
    unit: str | None = None,
    device_class: str | None = None,
    state_class: str | None = "measurement",
    icon: str | None = None,
    precision: int | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": name, "value_template": template}
    if unit:
        payload["unit_of_measurement"] = unit
    if device_class:
        payload["device_class"] = device_class
    if state_class:
        payload["state_class"] = state_class
    if icon:
        payload["icon"] = icon
    if precision is not None:
        payload["suggested_display_precision"] = precision
    return {key: payload}


def discovery_messages(cfg: Config, *, node_max_w: float) -> Messages:
    """Every discovery message for this node: one device, its climate zones and sensors."""
    assert cfg.mqtt is not None
    node, prefix = cfg.node_id, cfg.mqtt.discovery_prefix
    base = f"{cfg.mqtt.base_topic}/{node}"
    state = f"{base}/state"
    common = {
        "availability_topic": f"{base}/availability",
        "device": {
            "identifiers": [f"heatctl_{node}"],
            "name": "heatctl" if node == "heatctl" else f"heatctl {node}",  # never "heatctl heatctl …"
            "manufacturer": "heatctl",
            "model": "GPU compute heater",
            "sw_version": __version__,
        },
        "origin": {"name": "heatctl", "sw_version": __version__},
    }
    messages: Messages = {}

    def add(component: str, object_id: str, payload: dict[str, Any], topic: str = state) -> None:
        uid = f"heatctl_{node}_{object_id}"
        entity = f"heatctl_{object_id}" if node == "heatctl" else uid  # sensor.heatctl_heat_w, not heatctl_heatctl_…
        payload = {"unique_id": uid, "object_id": entity, "state_topic": topic, **payload, **common}
        if isinstance(name := payload.get("name"), str) and name:
            payload["name"] = name[0].upper() + name[1:]  # one casing: "Office heat demand", "Heat output"
        if component == "climate":
            del payload["state_topic"]
        if payload.get("device_class") == "timestamp":
            # Home Assistant warns ("Invalid state message") at every state whose timestamp is None: a
            # timestamp has a topic of its own, sent only when it is one, and is unavailable meanwhile.
            del payload["value_template"], payload["availability_topic"]
            payload["state_topic"] = timestamp_topic(base, object_id)
            payload["availability"] = [
                {"topic": f"{base}/availability"},
                {"topic": f"{base}/time/{object_id}/available"},
            ]
            payload["availability_mode"] = "all"
        messages[f"{prefix}/{component}/{node}/{object_id}/config"] = payload

    for zone in cfg.zones:
        z = f"value_json.zones.{zone.name}"
        add(
            "climate",
            f"{zone.name}_climate",
            {
                "name": zone.name.replace("_", " ").title(),
                "modes": ["off", "heat"],
                "mode_command_topic": f"{base}/{zone.name}/mode/set",
                "mode_state_topic": state,
                "mode_state_template": f"{{{{ 'heat' if value_json.mode == 'heat' and {z}.mode == 'heat' "
                "else 'off' }}",
                "current_temperature_topic": state,
                "current_temperature_template": f"{{{{ {z}.temperature_c }}}}",
                "temperature_command_topic": f"{base}/{zone.name}/setpoint/set",
                "temperature_state_topic": state,
                "temperature_state_template": f"{{{{ {z}.setpoint_c }}}}",
                "action_topic": state,
                "action_template": f"{{{{ {z}.action }}}}",
                "min_temp": SETPOINT_RANGE_C[0],  # HA refuses what heatctl would (one range, said once)
                "max_temp": SETPOINT_RANGE_C[1],
                "temp_step": 0.5,
                "precision": 0.1,
                "temperature_unit": "C",
                "preset_modes": preset_names(cfg, zone.name),
                "preset_mode_command_topic": f"{base}/{zone.name}/preset/set",
                "preset_mode_state_topic": state,
                "preset_mode_value_template": f"{{{{ value_json.presets.{zone.name} | default('none') }}}}",
            },
        )
        if zone.main_heating is not None:
            m = f"value_json.main_heating.{zone.name}"
            add(
                "sensor",
                f"{zone.name}_main_stage",
                {
                    "name": f"{zone.name} heating stage",
                    "value_template": f"{{{{ {m}.stage }}}}",
                    "icon": "mdi:radiator",
                    "json_attributes_topic": state,
                    "json_attributes_template": f"{{{{ {m} | tojson }}}}",
                },
            )
        if cfg.planner is not None:
            for key, payload in _planner_sensors(zone.name).items():
                add("binary_sensor" if key.endswith("_trusted") else "sensor", key, payload)
        for key, payload in _sensor(
            f"{zone.name}_demand_w",
            f"{zone.name} heat demand",
            f"{{{{ {z}.demand_w }}}}",
            unit="W",
            device_class="power",
            precision=0,
        ).items():
            add("sensor", key, payload)

    node_sensors = {
        **_sensor("heat_w", "Heat output", "{{ value_json.heat_w }}", unit="W", device_class="power", precision=0),
        **_sensor(
            "energy_kwh",
            "Energy",
            "{{ value_json.energy_kwh }}",
            unit="kWh",
            device_class="energy",
            state_class="total_increasing",
            precision=3,
        ),
        **_sensor(
            "heat_reused_kwh",
            "Heat reused",
            "{{ value_json.heat_reused_kwh }}",
            unit="kWh",
            device_class="energy",
            state_class="total_increasing",
            precision=3,
        ),
        **_sensor(
            "work_done",
            "Work done",
            "{{ value_json.work_done }}",
            unit=work_unit([g.workload for g in cfg.gpus]),
            state_class="total_increasing",
            icon="mdi:chip",
        ),
        **_money_sensors(cfg.currency),
    }
    for key, payload in node_sensors.items():
        add("sensor", key, payload)
    for gpu in cfg.gpus:
        g = f"value_json.gpus.{gpu.id}"
        gpu_sensors = {
            **_sensor(
                f"{gpu.id}_power_w",
                f"{gpu.id} power",
                f"{{{{ {g}.power_w }}}}",
                unit="W",
                device_class="power",
                precision=0,
            ),
            **_sensor(
                f"{gpu.id}_power_limit_w",
                f"{gpu.id} power limit",
                f"{{{{ {g}.power_limit_w }}}}",
                unit="W",
                device_class="power",
                precision=0,
            ),
            **_sensor(
                f"{gpu.id}_temperature_c",
                f"{gpu.id} temperature",
                f"{{{{ {g}.temperature_c }}}}",
                unit="°C",
                device_class="temperature",
                precision=0,
            ),
            **_sensor(
                f"{gpu.id}_work_rate",
                f"{gpu.id} work rate",
                f"{{{{ {g}.work_rate }}}}",
                unit=f"{work_unit([gpu.workload])}/s",
                icon="mdi:speedometer",
            ),
            **(
                _sensor(
                    f"{gpu.id}_j_per_token",
                    f"{gpu.id} energy per token",
                    f"{{{{ {g}.energy_per_work_j }}}}",
                    unit="J",
                    icon="mdi:lightning-bolt-circle",
                    precision=3,
                )
                if gpu.workload.type == "openai"
                else {}
            ),
            **_sensor(
                f"{gpu.id}_efficiency",
                f"{gpu.id} efficiency",
                f"{{{{ {g}.efficiency }}}}",
                unit=f"{work_unit([gpu.workload])}/kWh",
                icon="mdi:leaf",
            ),
        }
        for key, payload in gpu_sensors.items():
            add("sensor", key, payload)
    add(
        "number",
        "max_power_w",
        {
            "name": "Max power",
            "command_topic": f"{base}/max_power_w/set",
            "value_template": "{{ value_json.max_power_w }}",
            "min": 0,
            "max": round(node_max_w),
            "step": 5,
            "unit_of_measurement": "W",
            "device_class": "power",
            "mode": "box",
        },
    )
    if cfg.batch_api is not None:
        batch_sensors = {
            **_sensor(
                "batch_requests_left",
                "Batch requests left",
                "{{ value_json.batches.requests_left }}",
                icon="mdi:tray-full",
            ),
            **_sensor(
                "batches_queued", "Batches queued", "{{ value_json.batches.queued }}", icon="mdi:format-list-checks"
            ),
            **_sensor(
                "next_batch_deadline",
                "Next batch deadline",
                "{{ value_json.batches.next_deadline }}",
                device_class="timestamp",
                state_class=None,
            ),
        }
        for key, payload in batch_sensors.items():
            add("sensor", key, payload)
    if cfg.house is not None:
        for key, payload in _house_sensors(pooled=cfg.batch_api is not None).items():
            add("binary_sensor" if key == "house_connected" else "sensor", key, payload)
    if cfg.planner is not None:
        add(
            "sensor",
            "planner_status",
            {
                "name": "Planner",
                "value_template": "{{ value_json.planner.status }}",
                "icon": "mdi:calendar-clock",
                "json_attributes_topic": state,
                "json_attributes_template": "{{ {'reason': value_json.planner.reason} | tojson }}",
            },
        )
    add(
        "switch",
        "heating",
        {
            "name": "Heating",
            "command_topic": f"{base}/mode/set",
            "payload_on": "heat",
            "payload_off": "off",
            "value_template": "{{ value_json.mode }}",
            "state_on": "heat",
            "state_off": "off",
            "icon": "mdi:heat-wave",
        },
    )
    add(
        "binary_sensor",
        "work_starved",
        {
            "name": "Heat wanted, no work",
            "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.work_starved else 'OFF' }}",
            "icon": "mdi:tray-remove",
        },
    )
    add(
        "binary_sensor",
        "failsafe",
        {
            "name": "Fail-safe",
            "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.failsafe else 'OFF' }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'reason': value_json.failsafe} | tojson }}",
        },
    )
    return messages


def _house_sensors(*, pooled: bool) -> dict[str, dict[str, Any]]:
    """A house's heaters: this node's share of the budget, the budget, whether NATS is reached; with a
    Batch API, the pool: requests waiting house-wide and those run here."""

    def house(path: str) -> str:
        return f"{{{{ value_json.house.{path} if value_json.house is defined else None }}}}"

    sensors = {
        **_sensor("house_share_w", "House budget share", house("share_w"), unit="W", device_class="power"),
        **_sensor("house_budget_w", "House budget", house("budget_w"), unit="W", device_class="power"),
        "house_connected": {
            "name": "House reached",
            "device_class": "connectivity",
            "value_template": "{{ 'ON' if value_json.house is defined and value_json.house.connected else 'OFF' }}",
        },
    }
    if pooled:
        pool = "value_json.house.pool"
        sensors |= _sensor(
            "house_pool_waiting",
            "House pool waiting",
            f"{{{{ {pool}.waiting if value_json.house is defined and {pool} is defined else None }}}}",
            icon="mdi:tray-full",
        )
        sensors |= _sensor(
            "house_pool_done_here",
            "House pool requests run here",
            f"{{{{ {pool}.done_here if value_json.house is defined and {pool} is defined else None }}}}",
            state_class="total_increasing",
            icon="mdi:home-import-outline",
        )
    return sensors


def timestamp_topic(base: str, object_id: str) -> str:
    return f"{base}/time/{object_id}"


def timestamp_paths(cfg: Config) -> dict[str, tuple[str, ...]]:
    """Each timestamp sensor's object id → where its value is in the state (``MqttOutputs`` sends it)."""
    paths: dict[str, tuple[str, ...]] = {}
    if cfg.batch_api is not None:
        paths["next_batch_deadline"] = ("batches", "next_deadline")
    if cfg.planner is not None:
        for zone in cfg.zones:
            for key in ("next_heat_start", "next_setpoint_change"):
                paths[f"{zone.name}_{key}"] = ("planner", "zones", zone.name, key)
    return paths


def _money_sensors(currency: str) -> dict[str, dict[str, Any]]:
    """What the heat was worth, in the tariff's currency: totals for the energy dashboard (monetary,
    state_class total: net may fall), today's net as a plain reading. ``None`` until a price is known."""

    def money(path: str) -> str:
        return f"{{{{ value_json.money.{path} if value_json.money is defined else None }}}}"

    sensors: dict[str, dict[str, Any]] = {}
    for key, name, path, icon in (
        ("heat_value", "Heat value", "total.heat_value", "mdi:radiator"),
        ("electricity_cost", "Electricity cost", "total.electricity_cost", "mdi:cash-minus"),
        ("net_saving", "Net saving", "total.net", "mdi:piggy-bank"),
        ("net_saving_today", "Net saving today", "today.net", "mdi:piggy-bank-outline"),
    ):
        state_class = None if key.endswith("_today") else "total"
        sensors |= _sensor(
            key,
            name,
            money(path),
            unit=currency,
            device_class="monetary",
            state_class=state_class,
            icon=icon,
            precision=2,
        )
    return sensors


def _planner_sensors(zone: str) -> dict[str, dict[str, Any]]:
    """Per zone: what the planner learned of the room and what it plans (None until it knows)."""
    p = f"value_json.planner.zones.{zone}"

    def model(field: str) -> str:
        return f"{{{{ {p}.model.{field} if {p}.model else none }}}}"

    return {
        **_sensor(f"{zone}_next_heat_start", f"{zone} next heat start", f"{{{{ {p}.next_heat_start }}}}", **TIMESTAMP),
        **_sensor(
            f"{zone}_planned_kwh_24h",
            f"{zone} planned energy 24 h",
            f"{{{{ {p}.planned_kwh_24h }}}}",
            unit="kWh",
            state_class=None,
            icon="mdi:lightning-bolt-outline",
            precision=2,
        ),
        **_sensor(
            f"{zone}_planned_cost_24h",
            f"{zone} planned cost 24 h",
            f"{{{{ {p}.planned_cost_24h }}}}",
            state_class=None,
            icon="mdi:cash-clock",
            precision=2,
        ),
        **_sensor(
            f"{zone}_next_setpoint_change",
            f"{zone} next setpoint change",
            f"{{{{ {p}.next_setpoint_change }}}}",
            **TIMESTAMP,
        ),
        **_sensor(
            f"{zone}_next_setpoint_c",
            f"{zone} next setpoint",
            f"{{{{ {p}.next_setpoint_c }}}}",
            unit="°C",
            device_class="temperature",
            state_class=None,
            precision=1,
        ),
        **_sensor(f"{zone}_heat_loss", f"{zone} heat loss", model("ua_w_per_k"), unit="W/K", icon="mdi:home-export"),
        **_sensor(f"{zone}_time_constant", f"{zone} time constant", model("tau_h"), unit="h", icon="mdi:timer-sand"),
        **_sensor(f"{zone}_model_error", f"{zone} model error", model("fit_rmse_k"), unit="K", precision=2),
        **_sensor(f"{zone}_model_data", f"{zone} model data", model("data_h"), unit="h", icon="mdi:database-clock"),
        f"{zone}_model_trusted": {
            "name": f"{zone} model trusted",
            "value_template": f"{{{{ 'ON' if {p}.model and {p}.model.trusted else 'OFF' }}}}",
            "icon": "mdi:check-decagram",
        },
    }


def removal_topics(previous: list[str], current: Messages) -> list[str]:
    """Discovery topics announced before but not now: an empty retained payload removes them."""
    return sorted(set(previous) - set(current))

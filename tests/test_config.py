from __future__ import annotations

from pathlib import Path

import pytest

from heatctl.config import load_config, parse_config
from heatctl.errors import ConfigError
from tests.conftest import MINIMAL_YAML


def problems_of(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, name="cfg.yaml", **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_minimal_config_gets_safe_defaults() -> None:
    cfg = parse_config(MINIMAL_YAML)
    zone = cfg.zones[0]
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883 and cfg.mqtt.base_topic == "heatctl"
    assert zone.temperature.stale_after_s == 900
    assert zone.control.interval_s == 30 and zone.control.max_room_c == 26
    assert cfg.gpus[0].max_temp_c == 83
    assert cfg.influxdb is None and cfg.homeassistant is None


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("node_id: Bad Name", "node_id: string should match pattern"),
        ("mqtt: {port: 70000}", "mqtt.port: input should be less than or equal to 65535"),
        ("mqtt: {hots: x}", "mqtt.hots: unknown key"),
        ("duty: {period_s: -1}", "duty.period_s: input should be greater than 0"),
        ("influxdb: {bucket: b}", "influxdb.url: field required"),
    ],
)
def test_top_level_problems_name_their_path(snippet: str, expected: str) -> None:
    base = MINIMAL_YAML.replace("node_id: test-node\n", "") if snippet.startswith("node_id") else MINIMAL_YAML
    problems = problems_of(base + snippet)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once_with_lines() -> None:
    text = """\
node_id: office
mqtt:
  port: nope
zones:
  - name: office
    temperature: {topic: a, json_path: t, value_template: "{{ x }}"}
    setpoint: {json_path: y}
    control: {kp: -1}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: cuda
    workload: {type: openai}
"""
    problems = problems_of(text)
    expected = [
        "cfg.yaml:3: mqtt.port: input should be a valid integer",
        "cfg.yaml:6: zones[0].temperature: give at most one of 'json_path' and 'value_template'",
        "cfg.yaml:7: zones[0].setpoint: give exactly one of 'topic' (MQTT) or 'entity'",
        "cfg.yaml:8: zones[0].control.kp: input should be greater than or equal to 0",
        "cfg.yaml:12: gpus[0].backend: input should be 'nvml' or 'sim'",
        "cfg.yaml:13: gpus[0].workload.url: field required",
        "cfg.yaml:13: gpus[0].workload.model: field required",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected)


def test_missing_thermostat_source_is_field_required() -> None:
    text = MINIMAL_YAML.replace("    setpoint: {topic: z2m/office_trv, json_path: occupied_heating_setpoint}\n", "")
    assert problems_of(text) == ["cfg.yaml:4: zones[0].setpoint: field required"]


def test_zone_referring_to_unknown_or_shared_gpu() -> None:
    text = MINIMAL_YAML.replace("gpus: [gpu0]", "gpus: [gpu0, gpu9]")
    assert any("unknown gpu 'gpu9'" in p for p in problems_of(text))


def test_env_substitution_and_default() -> None:
    text = MINIMAL_YAML + "mqtt: {host: '${BROKER}', port: '${PORT:-1884}', password: '${PW}'}\n"
    cfg = parse_config(text, env={"BROKER": "broker.lan", "PW": "hunter2"})
    assert cfg.mqtt is not None
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("broker.lan", 1884)
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg)


def test_missing_env_variable_is_reported_with_path() -> None:
    problems = problems_of(MINIMAL_YAML + "mqtt:\n  password: ${MQTT_PASSWORD}\n", env={})
    assert problems == ["cfg.yaml:12: mqtt.password: environment variable MQTT_PASSWORD is not set"]


def test_secret_from_secrets_yaml(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("mqtt_pw: s3cr3t-value\n")
    cfg_file = tmp_path / "heatctl.yaml"
    cfg_file.write_text(MINIMAL_YAML + "mqtt: {password: !secret mqtt_pw}\n")
    cfg = load_config(cfg_file)
    assert cfg.mqtt is not None and cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cr3t-value"


def test_unknown_secret_and_secret_values_never_in_errors(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("influx_token: tok-123456\n")
    cfg_file = tmp_path / "heatctl.yaml"
    cfg_file.write_text(MINIMAL_YAML + "mqtt: {password: !secret nope, port: !secret influx_token}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    text = "\n".join(info.value.problems)
    assert "mqtt.password: secret 'nope' not found" in text
    assert "mqtt.port: input should be a valid integer" in text
    assert "tok-123456" not in text


@pytest.mark.parametrize(
    "text",
    ["- a list\n", "key: [unclosed\n"],
)
def test_not_a_mapping_or_not_yaml(text: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1 and problems[0].startswith("cfg.yaml")
    assert "\n" not in problems[0]  # one line, naming the file (and the line where YAML could tell)


def test_unknown_keys_suggest_the_known_one_and_cross_references_come_with_the_rest() -> None:
    text = (
        MINIMAL_YAML.replace("node_id: test-node", "node_id: test-node\nmqtt: {prot: 1883}").replace(
            "gpus: [gpu0]", "gpus: [gpu1]"
        )
        + "    max_powr_w: 200\n"
    )
    assert problems_of(text) == [
        "cfg.yaml:3: mqtt.prot: unknown key (did you mean 'port'?)",
        "cfg.yaml:12: gpus[0].max_powr_w: unknown key (did you mean 'max_power_w'?)",
        "cfg.yaml:8: zones[0].gpus[0]: unknown gpu 'gpu1' (did you mean 'gpu0'?)",
    ]


def test_a_missing_secrets_file_is_said_once(tmp_path: Path) -> None:
    cfg_file = tmp_path / "heatctl.yaml"
    cfg_file.write_text(MINIMAL_YAML + "mqtt: {password: !secret a, username: !secret b}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file)
    assert err.value.problems == [
        f"{cfg_file}:11: mqtt.password: !secret used, but there is no {tmp_path}/secrets.yaml"
    ]


def test_unquoted_env_in_flow_mapping_gets_a_hint() -> None:
    (problem,) = problems_of(MINIMAL_YAML + "mqtt: {password: ${MQTT_PASSWORD}}\n")
    assert "not valid YAML" in problem and 'password: "${MQTT_PASSWORD}"' in problem


def test_empty_file_lists_what_is_required() -> None:
    assert problems_of("") == ["cfg.yaml: zones: field required", "cfg.yaml: gpus: field required"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in info.value.problems[0]


def test_state_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(MINIMAL_YAML + "state_dir: /somewhere\n")
    monkeypatch.setenv("HEATCTL_STATE_DIR", str(tmp_path))
    assert cfg.resolved_state_dir() == tmp_path
    monkeypatch.delenv("HEATCTL_STATE_DIR")
    assert str(cfg.resolved_state_dir()) == "/somewhere"


def test_a_bare_yaml_off_means_mode_off() -> None:
    assert parse_config(MINIMAL_YAML + "mode: off\n").mode == "off"
    assert parse_config(MINIMAL_YAML + "mode: heat\n").mode == "heat"


def test_work_is_named_tokens_where_the_workload_counts_tokens() -> None:
    from heatctl.config import work_unit
    from heatctl.publish.discovery import discovery_messages

    openai = "    workload: {type: openai, url: 'http://x/v1', model: m, jobs: /tmp/j}\n"
    cfg = parse_config(MINIMAL_YAML + openai)
    assert work_unit([g.workload for g in cfg.gpus]) == "tokens"
    units = {t: m.get("unit_of_measurement") for t, m in discovery_messages(cfg, node_max_w=300).items()}
    assert units["homeassistant/sensor/test-node/gpu0_work_rate/config"] == "tokens/s"
    assert units["homeassistant/sensor/test-node/work_done/config"] == "tokens"
    sim = parse_config(MINIMAL_YAML)
    assert work_unit([g.workload for g in sim.gpus]) == "units"


def test_a_key_given_twice_is_an_error_not_the_last_one_silently() -> None:
    problems = problems_of(MINIMAL_YAML + "node_id: other\n")
    assert len(problems) == 1 and "the key 'node_id' is given twice (first on line 2)" in problems[0]


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ("{max_room_c: 95}", "control.max_room_c: input should be less than or equal to 35"),
        ("{max_room_c: 5}", "control.max_room_c: input should be greater than or equal to 15"),
    ],
)
def test_a_control_setting_no_room_can_use_is_refused(control: str, expected: str) -> None:
    text = MINIMAL_YAML.replace("    gpus: [gpu0]", f"    control: {control}\n    gpus: [gpu0]")
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems

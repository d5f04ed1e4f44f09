"""The command line as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from heatctl import __version__
from tests.conftest import SCENARIOS
from tests.services import heatctl

DESIGN_COLUMNS = [
    "time_s",
    "room_c",
    "setpoint_c",
    "outdoor_c",
    "demand_w",
    "gpu_power_w",
    "power_limit_w",
    "level",
    "work_rate",
    "work_done",
    "backup_w",
    "mode",
    "failsafe",
    "price_per_kwh",  # added after DESIGN's columns
    "main_w",
    "main_setpoint_c",
    "plan_w",
    "target_c",
    "surplus_w",
    "carbon_g_per_kwh",
    "in_flight",
]
DESIGN_KPIS = {
    "rms_error_k",
    "max_overshoot_k",
    "discomfort_kh",
    "overheat_kh",
    "energy_kwh",
    "backup_kwh",
    "added_kwh",
    "heat_reused_kwh",
    "erf",
    "work_done",
    "work_per_kwh",
    "limit_writes_per_h",
}


def test_version() -> None:
    proc = heatctl("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"heatctl {__version__}"


def test_simulate_writes_csv_summary_and_plot(tmp_path: Path) -> None:
    scenario = tmp_path / "short.yaml"
    scenario.write_text(
        (SCENARIOS / "window-and-dropout.yaml").read_text().replace("duration_h: 168", "duration_h: 36")
    )
    (tmp_path / "weather-feb.csv").write_text((SCENARIOS / "weather-feb.csv").read_text())
    out = tmp_path / "out"
    proc = heatctl("simulate", "--scenario", str(scenario), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "rms_error_k" in proc.stdout and "work_per_kwh" in proc.stdout
    with (out / "timeseries.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == DESIGN_COLUMNS
    assert len(rows) == 1 + 36 * 3600 // 10
    failsafe = rows[0].index("failsafe")
    assert any(r[failsafe] == "room: window open" for r in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["kpis"]) >= DESIGN_KPIS
    png = (out / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("controller", ["hysteresis", "dutycycle"])
def test_simulate_baselines(tmp_path: Path, controller: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("duration_h: 12\nstep_s: 60\nweather: {constant_c: 5}\n")
    proc = heatctl("simulate", "--scenario", str(scenario), "--controller", controller, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["controller"] == controller


def test_simulate_uses_the_config_file_a_user_deploys(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("duration_h: 12\nstep_s: 30\nweather: {constant_c: 5}\n")
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text((Path(__file__).parent.parent / "examples" / "heatctl.yaml").read_text())
    capped = tmp_path / "capped.yaml"
    capped.write_text(cfg.read_text().replace("max_power_w: 250", "max_power_w: 150"))
    proc = heatctl("simulate", "--scenario", str(scenario), "-c", str(capped), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "timeseries.csv").open() as fh:
        powers = [float(r["gpu_power_w"]) for r in csv.DictReader(fh)]
    assert max(powers) == pytest.approx(150.0)


def test_bad_scenario_lists_problems_and_exits_2(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("duration_h: -1\nroom: {model: 3r3c}\nweather: {}\nevents: [{at_h: 1}]\n")
    proc = heatctl("simulate", "--scenario", str(scenario))
    assert proc.returncode == 2
    for path in ("duration_h", "room", "weather", "events[0]"):
        assert f": {path}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_config_exits_2_without_traceback(tmp_path: Path, command: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("node_id: x\nmqtt: {port: 0, password: '${NOT_SET_ANYWHERE}'}\nzones: []\ngpus: []\n")
    proc = heatctl(command, "-c", str(cfg))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for path in ("mqtt.port", "mqtt.password", "zones", "gpus"):
        assert "bad.yaml:" in proc.stderr and f": {path}:" in proc.stderr


def test_usage_error_exits_2() -> None:
    assert heatctl("frobnicate").returncode == 2


def test_config_schema_is_json_schema() -> None:
    proc = heatctl("config", "schema")
    schema = json.loads(proc.stdout)
    assert schema["type"] == "object" and "zones" in schema["properties"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--log-level", "verbose", "run", "-c", "x.yaml"], "argument --log-level: invalid choice: 'verbose'"),
        (["demo", "--speed", "0"], "argument --speed: must be a number above 0, got '0'"),
        (["demo", "--speed", "-5"], "argument --speed: must be a number above 0, got '-5'"),
        (["demo", "--speed", "fast"], "argument --speed: expected a number, got 'fast'"),
        (["demo", "--port", "99999"], "argument --port: must be a port from 1 to 65535, got '99999'"),
        (["demo", "--duration", "nan"], "argument --duration: must be a number above 0, got 'nan'"),
        (["simulate", "--controller", "pid"], "argument --controller: invalid choice: 'pid'"),
        (["run"], "the following arguments are required: -c/--config"),
        (["check"], "the following arguments are required: -c/--config"),
        (["restore"], "the following arguments are required: -c/--config"),
        (["config"], "the following arguments are required: ACTION"),
        (["status"], "the following arguments are required: -c/--config"),
        (["init", "--mode", "warm"], "argument --mode: invalid choice: 'warm'"),
        (
            ["init", "--yes", "--mqtt", "broker:eighty", "--out", "/tmp/heatctl-init-never.yaml"],
            "the port must be a number",
        ),
        (["run", "-c", "/nonexistent/heatctl.yaml"], "/nonexistent/heatctl.yaml: cannot read"),
        (["simulate", "--scenario", "/nonexistent/s.yaml"], "/nonexistent/s.yaml: cannot read"),
    ],
)
def test_bad_command_line_values_are_one_clean_line(args: list[str], says: str) -> None:
    proc = heatctl(*args)
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) <= 2  # "configuration problems:" + one


@pytest.mark.parametrize("command", ["run", "demo", "simulate", "check", "restore", "config", "status", "init"])
def test_every_command_has_help_with_a_description(command: str) -> None:
    proc = heatctl(command, "--help")
    assert proc.returncode == 0
    usage, _, rest = proc.stdout.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith("usage: heatctl") and len(description.strip()) > 10
    options = rest.split("options:")[1]
    for line in options.splitlines():
        if line.strip().startswith("-") and "  " in line.strip():
            assert line.split("  ")[-1].strip(), f"an option without help: {line}"


def test_check_with_everything_down_gives_every_part_a_plain_row(tmp_path: Path) -> None:
    from tests.services import free_port

    ports = [free_port() for _ in range(4)]  # nothing listens on them
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text(f"""
node_id: down
state_dir: {tmp_path / "state"}
mqtt: {{host: 127.0.0.1, port: {ports[0]}}}
influxdb: {{url: "http://127.0.0.1:{ports[1]}", token: t, org: o, bucket: b}}
homeassistant: {{url: "http://127.0.0.1:{ports[2]}", token: x}}
zones:
  - name: office
    temperature: {{topic: z/t}}
    setpoint: {{entity: climate.office, attribute: temperature}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: process, command: [no-such-binary-anywhere]}}}}
""")
    proc = heatctl("check", "-c", str(cfg))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = {line.split()[1]: line for line in proc.stdout.splitlines() if line[:4] in ("ok  ", "FAIL", "WARN")}
    for part in ("mqtt", "influxdb", "homeassistant", "office.temperature", "office.setpoint", "gpu"):
        assert part in rows, proc.stdout
    assert "connection refused" in rows["mqtt"] and "connection refused" in rows["influxdb"]
    assert "not checked, the broker is unreachable" in rows["office.temperature"]
    assert "not checked, Home Assistant unreachable" in rows["office.setpoint"]
    assert "WARN  gpu gpu0" in proc.stdout and "SIMULATED GPU" in proc.stdout
    assert "object at 0x" not in proc.stdout and "(Caused by" not in proc.stdout

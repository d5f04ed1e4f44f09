"""InfluxDB output against a real time-series server (VictoriaMetrics speaks the v2 write API)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from heatctl.config import InfluxConfig, parse_config
from heatctl.publish.influx import InfluxSink, line, probe_influx, snapshot_lines
from heatctl.service import Service
from tests.conftest import MINIMAL_YAML
from tests.services import VictoriaMetrics, free_port, wait_until

pytestmark = pytest.mark.integration


def series(vm: VictoriaMetrics, name: str, count: int | None = None) -> dict[str, Any]:
    """The one series of this name, once it (with ``count`` samples) is searchable."""

    def ready() -> dict[str, Any] | None:
        found = [s for s in vm.export() if s["metric"]["__name__"] == name]
        assert len(found) <= 1, found
        if found and (count is None or len(found[0]["values"]) >= count):
            return found[0]
        return None

    result: dict[str, Any] = wait_until(ready, 20, f"series {name}")
    return result


def test_line_protocol_fields_are_floats_and_tags_escaped() -> None:
    text = line("zone", {"node": "my node", "zone": "a,b=c"}, {"demand_w": 120, "pid_i": None}, 5)
    assert text == r"zone,node=my\ node,zone=a\,b\=c demand_w=120.0 5"
    assert line("zone", {}, {"x": float("nan")}, 1) is None


def make_service(tmp_path: Path, url: str, extra: str = "") -> Service:
    influx = f"influxdb: {{url: {url}, bucket: heat, org: home, tags: {{site: flat}}{extra}}}\n"
    text = MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path / 'state'}\n" + influx
    svc = Service(parse_config(text))
    svc.start()
    svc.store.put("office", "temperature", 19.5, "test")
    svc.store.put("office", "setpoint", 21.0, "test")
    return svc


def test_service_points_arrive_with_schema(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    svc = make_service(tmp_path, victoria.url)
    try:
        for _ in range(3):
            svc.tick()
        sink = svc.sinks[0]
        wait_until(lambda: sink.written >= 9, 10, "points written")  # type: ignore[attr-defined]
    finally:
        svc.shutdown()
    temp = series(victoria, "zone_temperature_c", 3)
    labels = {k: v for k, v in temp["metric"].items() if k != "db"}
    assert labels == {"__name__": "zone_temperature_c", "node": "test-node", "zone": "office", "site": "flat"}
    assert temp["values"] == [19.5, 19.5, 19.5]
    assert series(victoria, "zone_setpoint_c", 3)["values"] == [21.0] * 3
    assert series(victoria, "zone_failsafe", 3)["values"] == [0.0] * 3
    assert series(victoria, "gpu_power_limit_w")["metric"]["gpu"] == "gpu0"
    for name in (
        "zone_demand_w",
        "zone_pid_p",
        "zone_pid_i",
        "gpu_power_w",
        "gpu_level",
        "gpu_energy_kwh",
        "node_heat_w",
        "node_energy_kwh",
        "node_heat_reused_kwh",
        "node_work_done",
    ):
        assert len(series(victoria, name, 3)["values"]) == 3
    assert max(series(victoria, "node_energy_kwh", 3)["values"]) > 0


def test_outage_buffers_in_order_and_loses_nothing(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    svc = make_service(tmp_path, victoria.url)
    sink: InfluxSink = svc.sinks[0]  # type: ignore[assignment]
    try:
        svc.tick()
        wait_until(lambda: sink.written >= 3, 10, "first points")
        victoria.stop()
        for _ in range(20):
            svc.tick()  # the control loop goes on; points wait
        wait_until(lambda: sink.last_error is not None, 10, "the outage noticed")
        assert sink.buffered >= 20 * 3 - 3
        victoria.start()
        wait_until(lambda: sink.buffered == 0, 60, "buffer drained after the server came back")
    finally:
        svc.shutdown()
    assert len(series(victoria, "zone_temperature_c", 21)["values"]) == 21
    ts = series(victoria, "node_energy_kwh", 21)["timestamps"]
    assert ts == sorted(ts)
    assert sink.dropped == 0


def test_full_buffer_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    cfg = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", buffer_points=100)
    sink = InfluxSink(cfg, "n")
    try:
        sink.enqueue([f"m v={i}.0 {i}" for i in range(150)])
        assert sink.buffered == 100 and sink.dropped == 50
        assert sink.stats()["dropped"] == 50
    finally:
        sink.close(timeout_s=0.5)


class _InfluxLike(BaseHTTPRequestHandler):
    """Answers writes as InfluxDB 2 does: 400 for a line that does not parse, 204 otherwise."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        if b"not line protocol" in body:
            payload = b'{"code":"invalid","message":"unable to parse \'this is not line protocol\': missing fields"}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_rejected_points_are_logged_once_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    # VictoriaMetrics skips a bad line and answers 204, so this unit test uses a stand-in
    # that answers 400 with InfluxDB's error body, as InfluxDB 2.x does.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InfluxLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _InfluxLike.received = []
    sink = InfluxSink(InfluxConfig(url=f"http://127.0.0.1:{server.server_address[1]}", bucket="heat"), "n")
    try:
        sink.enqueue(["this is not line protocol"])
        wait_until(lambda: sink.rejected == 1, 10, "rejection")
        sink.enqueue(["good v=1.0"])
        wait_until(lambda: sink.written == 1, 10, "the next good point written")
    finally:
        sink.close()
        server.shutdown()
        server.server_close()
    assert len(_InfluxLike.received) == 2  # the bad point was sent once, never again
    messages = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(messages) == 1 and "HTTP 400" in messages[0] and "unable to parse" in messages[0]


def test_spool_survives_a_restart_during_an_outage(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    spool = tmp_path / "influx.spool"
    victoria.stop()
    first = InfluxSink(InfluxConfig(url=victoria.url, bucket="heat", spool=str(spool)), "n")
    now_ns = time.time_ns()
    first.enqueue([f"spooled v={i}.0 {now_ns + i * 1_000_000_000}" for i in range(5)])
    wait_until(lambda: first.last_error is not None, 10, "outage noticed")
    first.close(timeout_s=0.5)
    assert len(spool.read_text().splitlines()) == 5
    victoria.start()
    second = InfluxSink(InfluxConfig(url=victoria.url, bucket="heat", spool=str(spool)), "n")
    try:
        wait_until(lambda: second.written == 5, 20, "spooled points sent")
    finally:
        second.close()
    assert series(victoria, "spooled_v", 5)["values"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not spool.exists()


def test_check_probe(victoria: VictoriaMetrics) -> None:
    ok, detail, _ = probe_influx(InfluxConfig(url=victoria.url, bucket="heat"), "n")
    assert ok, detail
    ok, detail, fix = probe_influx(InfluxConfig(url=f"http://127.0.0.1:{free_port()}"), "n")
    assert not ok and detail.endswith(": connection refused")
    assert "InfluxDB running" in fix


def test_snapshot_lines_cover_the_schema(tmp_path: Path) -> None:
    svc = Service(parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n"))
    svc.start()
    try:
        snap = svc.tick()
    finally:
        svc.shutdown()
    lines = snapshot_lines(snap, "n", {}, 1)
    assert [ln.split(",")[0] for ln in lines] == ["zone", "gpu", "node"]
    assert "failsafe=1.0" in lines[0]  # nothing received yet: fail-safe

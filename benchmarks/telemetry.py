"""InfluxDB output: points written per second, and the control loop's tick time with the
server up, slow (a proxy adding 2 s to every request) and down.

    python benchmarks/telemetry.py [--ticks 300]

Target: tick time unchanged (within noise) in all three. Needs victoria-metrics (Debian).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.config import parse_config  # noqa: E402
from heatctl.publish.influx import InfluxSink  # noqa: E402
from heatctl.service import Service  # noqa: E402
from tests.conftest import MINIMAL_YAML  # noqa: E402
from tests.services import VictoriaMetrics, free_port, wait_until  # noqa: E402


class SlowProxy:
    """Forwards TCP to a port on loopback, holding every client→server chunk for ``delay_s``."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, self.delay_s), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
        try:
            while data := src.recv(65536):
                if delay_s:
                    time.sleep(delay_s)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def run(url: str, ticks: int, tmp: Path, label: str) -> dict[str, float]:
    text = MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp / label}\ninfluxdb: {{url: '{url}', bucket: bench}}\n"
    svc = Service(parse_config(text))
    svc.start()
    svc.store.put("office", "temperature", 20.0, "bench")
    svc.store.put("office", "setpoint", 21.0, "bench")
    sink: InfluxSink = svc.sinks[0]  # type: ignore[assignment]
    times = []
    t0 = time.perf_counter()
    for _ in range(ticks):
        start = time.perf_counter()
        svc.tick()
        times.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.005)  # ticks come apart in real life; give the writer a chance
    drain_deadline = time.perf_counter() + 30
    while sink.buffered and time.perf_counter() < drain_deadline and label != "down":
        time.sleep(0.01)
    wall = time.perf_counter() - t0  # ticks and draining
    written, buffered = sink.written, sink.buffered
    svc.shutdown()
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p99_ms": times[int(0.99 * (len(times) - 1))],
        "written": written,
        "buffered": buffered,
        "points_per_s": written / wall,
    }


def burst_rate(url: str) -> float:
    """Raw write throughput of the sink: points per second for a 50 000-point backlog."""
    from heatctl.config import InfluxConfig

    sink = InfluxSink(InfluxConfig(url=url, bucket="bench", buffer_points=100_000), "bench")
    now = time.time_ns()
    lines = [f"burst,node=b v={i}.0 {now + i * 1000}" for i in range(50_000)]
    t0 = time.perf_counter()
    sink.enqueue(lines)
    wait_until(lambda: sink.written == len(lines), 120, "backlog written")
    rate = len(lines) / (time.perf_counter() - t0)
    sink.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vm = VictoriaMetrics(tmp)
        vm.start()
        proxy = SlowProxy(vm.port, 2.0)
        try:
            results = {
                "up": run(vm.url, args.ticks, tmp, "up"),
                "slow (+2 s)": run(f"http://127.0.0.1:{proxy.port}", args.ticks, tmp, "slow"),
                "down": run(f"http://127.0.0.1:{free_port()}", args.ticks, tmp, "down"),
            }
            rate = burst_rate(vm.url)
        finally:
            proxy.close()
            vm.stop()
    base = results["up"]["median_ms"]
    print(f"{'InfluxDB':<12} {'tick p50':>9} {'tick p99':>9} {'vs up':>6} {'written':>8} {'waiting':>8}")
    for name, r in results.items():
        print(
            f"{name:<12} {r['median_ms']:7.2f}ms {r['p99_ms']:7.2f}ms {r['median_ms'] / base:6.2f} "
            f"{r['written']:8.0f} {r['buffered']:8.0f}"
        )
    print(f"sink throughput with a backlog: {rate:,.0f} points/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

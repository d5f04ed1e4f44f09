"""Helpers for benchmarks that need a real broker and a running ``heatctl run``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import Mosquitto, Probe, wait_until  # noqa: E402

__all__ = ["Mosquitto", "Probe", "running_heatctl", "start_heatctl", "wait_until"]

CONFIG = """
node_id: bench
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {port}}}
zones:
  - name: office
    temperature: {{topic: bench/trv, json_path: local_temperature}}
    setpoint: {{topic: bench/trv, json_path: occupied_heating_setpoint}}
    control: {{interval_s: 30}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
"""


def start_heatctl(port: int, workdir: Path | None = None) -> subprocess.Popen[bytes]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="heatctl-bench-"))
    cfg = workdir / "heatctl.yaml"
    cfg.write_text(CONFIG.format(state=workdir / "state", port=port))
    log = (workdir / "heatctl.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "heatctl", "--log-level", "warning", "run", "-c", str(cfg)], stderr=log
    )


@contextmanager
def running_heatctl(room_c: float) -> Iterator[tuple[subprocess.Popen[bytes], Probe]]:
    """A broker, ``heatctl run`` on sim backends, and a probe on its state, with the room at ``room_c``."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        proc = start_heatctl(broker.port, Path(tmp))
        probe = Probe(broker.port, ("heatctl/bench/state",))
        try:
            probe.publish("bench/trv", json.dumps({"local_temperature": room_c, "occupied_heating_setpoint": 21}))
            wait_until(lambda: probe.on("heatctl/bench/state"), 30, "first state")
            yield proc, probe
        finally:
            probe.close()
            proc.terminate()
            proc.wait(10)
            broker.stop()

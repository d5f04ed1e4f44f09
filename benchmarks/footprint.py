"""``heatctl run`` with sim backends, idle for 60 s: peak RSS and CPU share.

    python benchmarks/footprint.py [--seconds 60]

Target: ≤ 60 MB peak RSS and ≤ 1 % of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _broker import Mosquitto, Probe, start_heatctl, wait_until


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        proc = start_heatctl(broker.port, Path(tmp))
        probe = Probe(broker.port, ("heatctl/bench/state",))
        try:
            trv = {"local_temperature": 22.0, "occupied_heating_setpoint": 21}
            probe.publish("bench/trv", json.dumps(trv))
            wait_until(lambda: probe.on("heatctl/bench/state"), 30, "first state")
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            share = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100
            rss = peak_rss_mb(proc.pid)
            print(f"idle {args.seconds:g} s: CPU {share:.2f} % of one core, peak RSS {rss:.1f} MB")
            print(f"targets ≤ 1 % and ≤ 60 MB: {'met' if share <= 1 and rss <= 60 else 'MISSED'}")
        finally:
            probe.close()
            proc.terminate()
            proc.wait(10)
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``heatctl run`` with sim backends, idle for 60 s: peak RSS and CPU share.

    python benchmarks/footprint.py [--seconds 60]

Target: ≤ 60 MB peak RSS and ≤ 1 % of one core.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _broker import running_heatctl


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
    with running_heatctl(room_c=22.0) as (proc, _):
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        share = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100
        rss = peak_rss_mb(proc.pid)
    print(f"idle {args.seconds:g} s: CPU {share:.2f} % of one core, peak RSS {rss:.1f} MB")
    print(f"targets ≤ 1 % and ≤ 60 MB: {'met' if share <= 1 and rss <= 60 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

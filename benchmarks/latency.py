"""Command → state latency through a real Mosquitto broker and ``heatctl run``.

    python benchmarks/latency.py [--n 200]

Publishes `mode/set` (off/heat alternately) and `<zone>/setpoint/set`, and times each until
the retained state message that reflects it arrives. Prints p50/p99 (target p99 ≤ 50 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _broker import running_heatctl, wait_until


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    state = "heatctl/bench/state"
    with running_heatctl(room_c=19.0) as (_, probe):
        results: dict[str, list[float]] = {"mode/set": [], "setpoint/set": []}
        for i in range(args.n):
            if i % 2 == 0:
                mode = "off" if (i // 2) % 2 == 0 else "heat"
                topic, payload, check = "mode/set", mode, (lambda d, m=mode: d["mode"] == m)
            else:
                sp = 20.0 + (i % 7) * 0.5 + 0.25
                topic, payload = "office/setpoint/set", str(sp)
                check = lambda d, sp=sp: d["zones"]["office"]["setpoint_c"] == sp  # noqa: E731
            probe.clear()
            t0 = time.perf_counter()
            probe.client.publish(f"heatctl/bench/{topic}", payload, qos=0)
            arrived = wait_until(
                lambda check=check: next(
                    (at for t, p, at in list(probe.arrivals) if t == state and check(json.loads(p))), None
                ),
                5,
                "state",
            )
            results["mode/set" if topic == "mode/set" else "setpoint/set"].append((arrived - t0) * 1000)
    every = [v for vs in results.values() for v in vs]
    for name, values in [*results.items(), ("all", every)]:
        print(
            f"{name:<13} n={len(values):4d}  p50 {statistics.median(values):6.1f} ms  "
            f"p99 {percentile(values, 0.99):6.1f} ms  max {max(values):6.1f} ms"
        )
    print(f"target p99 ≤ 50 ms: {'met' if percentile(every, 0.99) <= 50 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

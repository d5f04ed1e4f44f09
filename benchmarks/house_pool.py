"""The house's pool of work on a real ``nats-server -js``: throughput, pull latency, NATS's overhead.

    .venv/bin/python benchmarks/house_pool.py [--requests 600]

Three nodes (the service, in one process, ticked every 50 ms) with a fast stand-in inference server
(every answer at once, so what is measured is the queue): how many requests per second the pool
runs with every room cold; the median time from a node's room wanting heat to its first pulled
request (the pool waiting, the other rooms warm); and one node's requests per second through the
house's pool against the same node with its local SQLite queue (the overhead of NATS per request).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from heatctl.config import parse_config  # noqa: E402
from heatctl.service import Service  # noqa: E402
from tests.services import NatsServer, StandInServer, free_port  # noqa: E402

TOKEN = "house-pool-benchmark"


def node_yaml(name: str, state: Path, port: int, llm_url: str, nats_url: str | None) -> str:
    house = (
        f'house: {{nats: "{nats_url}", name: bench, budget_w: 900, nodes: 3, publish_every_s: 0.2, ack_wait_s: 10}}'
        if nats_url
        else ""
    )
    return f"""
node_id: {name}
mqtt: null
state_dir: {state / name}
batch_api: {{listen: "127.0.0.1:{port}", token: {TOKEN}}}
{house}
zones: [{{name: room, temperature: {{topic: t}}, setpoint: {{topic: s}}, control: {{interval_s: 1}}, gpus: [gpu0]}}]
gpus:
  - id: gpu0
    backend: sim
    workload: {{type: openai, url: "{llm_url}", model: m, max_concurrency: 4, request_timeout_s: 10}}
"""


class Nodes:
    def __init__(self, state: Path, llm_url: str, nats_url: str | None, names: tuple[str, ...]) -> None:
        self.now = [1000.0]
        self.ports = {n: free_port() for n in names}
        self.nodes = {
            n: Service(parse_config(node_yaml(n, state, self.ports[n], llm_url, nats_url)), clock=lambda: self.now[0])  # type: ignore[arg-type]
            for n in names
        }
        for svc in self.nodes.values():
            svc.start()
        if nats_url:
            deadline = time.monotonic() + 30
            while not all(s.house and s.house.pool and s.house.pool._house for s in self.nodes.values()):
                if time.monotonic() > deadline:
                    raise SystemExit("the nodes never reached the pool")
                time.sleep(0.05)

    def tick(self, rooms_c: dict[str, float]) -> None:
        self.now[0] += 1.0
        for name, svc in self.nodes.items():
            svc.store.put("room", "temperature", rooms_c.get(name, 22.5), "t")
            svc.store.put("room", "setpoint", 21.0, "s")
            svc.tick()

    def stop(self) -> None:
        for svc in self.nodes.values():
            svc.shutdown()


def submit(port: int, n: int, prefix: str) -> str:
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=2)
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    lines = "".join(
        json.dumps({"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
        for i in range(n)
    )
    uploaded = sdk.files.create(file=("work.jsonl", lines.encode()), purpose="batch")
    return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id


def completed(nodes: Nodes, origin: str, batch_id: str) -> int:
    store = nodes.nodes[origin].batches.store  # type: ignore[union-attr]
    row = store.batch_row(batch_id)
    return int(row["completed"]) if row is not None else 0


def run_batch(nodes: Nodes, origin: str, n: int, rooms_c: dict[str, float], prefix: str) -> float:
    """Requests per second, from the batch's creation to its last result recorded at its node."""
    started = time.monotonic()
    batch_id = submit(nodes.ports[origin], n, prefix)
    while completed(nodes, origin, batch_id) < n:
        nodes.tick(rooms_c)
        time.sleep(0.05)
        if time.monotonic() - started > 600:
            raise SystemExit(f"the batch did not finish: {completed(nodes, origin, batch_id)}/{n}")
    return n / (time.monotonic() - started)


def pull_latency(nodes: Nodes, tries: int) -> list[float]:
    """Seconds from the tick whose decision first lets a node's workers run (its room turned cold) to its
    first request pulled from the waiting pool."""
    names = list(nodes.nodes)
    warm = dict.fromkeys(names, 22.5)
    submit(nodes.ports[names[0]], 1000, "lat")  # plenty waiting in the pool
    first = nodes.nodes[names[0]].house.pool  # type: ignore[union-attr]
    while first.waiting < 500:
        nodes.tick(warm)
        time.sleep(0.05)
    seen: list[float] = []
    for i in range(tries):
        name = names[i % len(names)]
        for _ in range(5):  # everyone warm: nothing pulled, what was pulled goes back
            nodes.tick(warm)
            time.sleep(0.1)
        link = nodes.nodes[name].house.pool  # type: ignore[union-attr]
        before = link.done_here + link.state()["here"]
        started, deadline = None, time.monotonic() + 60
        while started is None or link.done_here + link.state()["here"] <= before:
            if started is None:  # ticks (its loop's demand ramps up) until a decision lets its workers run
                nodes.tick(warm | {name: 17.0})
                snap = nodes.nodes[name].snapshot
                if snap is not None and snap.gpus["gpu0"].level > 0:
                    started = time.monotonic()
            time.sleep(0.002)
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} never pulled")
        seen.append(time.monotonic() - started)
    return seen


def main() -> int:
    logging.getLogger("heatctl").setLevel(logging.ERROR)  # the nodes' start-up notes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3, help="batches a setup; the median is shown")
    args = parser.parse_args()
    server = StandInServer()  # every answer at once: what is measured is the queue
    llm_url = server.url
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        nats = NatsServer(state, name="nats")
        nats.start()
        try:
            cold = dict.fromkeys(("a", "b", "c"), 17.0)
            house = Nodes(state / "house", llm_url, nats.url, ("a", "b", "c"))
            try:
                house_rates = [run_batch(house, "a", args.requests, cold, f"h{i}-") for i in range(args.repeat)]
                latencies = pull_latency(house, 9)
            finally:
                house.stop()
            one = Nodes(state / "one-pooled", llm_url, nats.url, ("solo",))
            try:
                pooled_rates = [
                    run_batch(one, "solo", args.requests, {"solo": 17.0}, f"p{i}-") for i in range(args.repeat)
                ]
            finally:
                one.stop()
        finally:
            nats.stop()
        local = Nodes(state / "one-local", llm_url, None, ("solo",))
        try:
            local_rates = [
                run_batch(local, "solo", args.requests, {"solo": 17.0}, f"l{i}-") for i in range(args.repeat)
            ]
        finally:
            local.stop()
    server.close()
    house_rate, pooled_rate, local_rate = (statistics.median(r) for r in (house_rates, pooled_rates, local_rates))
    print(f"batches of {args.requests} requests, a stand-in server answering at once, 4 slots a node;")
    print(f"the median of {args.repeat} batches each (all of them: requests/s)")
    for label, rate, rates in (
        ("three nodes, one pool (NATS)", house_rate, house_rates),
        ("one node, the house pool (NATS)", pooled_rate, pooled_rates),
        ("one node, its local queue (SQLite)", local_rate, local_rates),
    ):
        print(f"{label:<40}{rate:8.1f} requests/s   ({', '.join(f'{r:.0f}' for r in rates)})")
    overhead_ms = (1 / pooled_rate - 1 / local_rate) * 1000 * 4  # per request, each of 4 slots busy
    print(f"NATS's overhead per request (one node, 4 slots): {overhead_ms:+.1f} ms of a slot's time")
    print(
        f"room wants heat → first pulled request: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} tries"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

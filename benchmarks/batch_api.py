"""The Batch API under a real ``heatctl run``, the official ``openai`` SDK and llama.cpp.

    python benchmarks/batch_api.py [--requests 1000] [--samples 500]

1. Durability: a batch of ``--requests`` chat requests; heatctl is killed with SIGKILL while
   it runs and started again, and the inference server is killed and restarted meanwhile.
   Prints how many output lines came back, how many custom_ids are missing or duplicated.
2. Overhead: p50/p99 of ``GET /v1/batches/{id}`` while the batch runs, and p50 of one
   interactive ``/v1/chat/completions`` (max_tokens 1) straight to llama.cpp vs through
   heatctl's passthrough. Targets (issue #11): 0 lost and 0 duplicated; GET p99 ≤ 10 ms;
   passthrough adds ≤ 5 ms p50.

Needs mosquitto and the llama.cpp build the tests use (``bash tests/run.sh`` makes it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from benchmarks._broker import Mosquitto, Probe, wait_until  # noqa: E402
from tests.services import TinyLLM, free_port  # noqa: E402

TOKEN = "bench-token-of-16-chars"
CONFIG = """
node_id: bench
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {mqtt}}}
batch_api: {{listen: "127.0.0.1:{api}", token: {token}}}
zones:
  - name: office
    temperature: {{topic: bench/t}}
    setpoint: {{topic: bench/sp}}
    control: {{interval_s: 5}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    workload: {{type: openai, url: "{llm}", model: tinyllm, max_concurrency: 4, request_timeout_s: 60}}
"""


def start_heatctl(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "heatctl", "--log-level", "info", "run", "-c", str(cfg)], stderr=fh, cwd=ROOT
        )


def lines(n: int) -> bytes:
    out = []
    for i in range(n):
        body = {"model": "tinyllm", "messages": [{"role": "user", "content": f"heat {i}"}], "max_tokens": 8}
        out.append(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return ("\n".join(out) + "\n").encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def chat_ms(url: str, token: str | None) -> float:
    body = json.dumps({"model": "tinyllm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
        r.read()
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp)
        broker.start()
        os.environ.setdefault("TINYLLM_HOME", str(Path.home() / ".cache/heatctl/tinyllm"))
        llm = TinyLLM(tmp)
        llm.start()
        api_port = free_port()
        cfg = tmp / "heatctl.yaml"
        cfg.write_text(CONFIG.format(state=tmp / "state", mqtt=broker.port, api=api_port, token=TOKEN, llm=llm.url))
        log = tmp / "heatctl.log"
        probe = Probe(broker.port, ("heatctl/bench/state",))
        proc = start_heatctl(cfg, log)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key=TOKEN, max_retries=0)
        try:
            wait_until(lambda: probe.on("heatctl/bench/state"), 60, "heatctl running")
            probe.publish("bench/t", "18.0", retain=True)
            probe.publish("bench/sp", "21.0", retain=True)
            f = client.files.create(file=("bench.jsonl", lines(args.requests)), purpose="batch")
            batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            started = time.monotonic()

            def completed() -> int:
                return client.batches.retrieve(batch.id).request_counts.completed  # type: ignore[union-attr]

            wait_until(lambda: completed() >= args.requests * 0.3, 600, "30 % done")
            get_ms = []
            for _ in range(args.samples):
                t0 = time.perf_counter()
                client.batches.retrieve(batch.id)
                get_ms.append((time.perf_counter() - t0) * 1000)
            direct = [chat_ms(f"{llm.url}/chat/completions", None) for _ in range(5)]  # warm both paths
            direct, proxied = [], []
            for _ in range(60):
                direct.append(chat_ms(f"{llm.url}/chat/completions", None))
                proxied.append(chat_ms(f"http://127.0.0.1:{api_port}/v1/chat/completions", TOKEN))
            at_kill = completed()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            llm.stop()  # the inference server dies too ...
            proc = start_heatctl(cfg, log)
            time.sleep(2.0)  # ... and comes back while heatctl retries
            llm.start()
            wait_until(
                lambda: client.batches.retrieve(batch.id).status in ("completed", "failed", "expired"),
                1200,
                "batch finished",
            )
            elapsed_s = time.monotonic() - started
            done = client.batches.retrieve(batch.id)
            assert done.output_file_id is not None
            out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
            errors = []
            if done.error_file_id:
                errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
            retries = log.read_text().count("trying again")
        finally:
            probe.close()
            proc.terminate()
            proc.wait(20)
            llm.stop()
            broker.stop()
    ids = [x["custom_id"] for x in out]
    wanted = {f"r{i}" for i in range(args.requests)}
    lost = len(wanted - set(ids) - {e["custom_id"] for e in errors})
    duplicated = len(ids) - len(set(ids))
    heat = (done.model_extra or {}).get("heat", {})
    print(f"batch of {args.requests}: status {done.status} after {elapsed_s:.0f} s; killed at {at_kill} done")
    print(f"  output lines {len(out)}, error lines {len(errors)}, lost {lost}, duplicated {duplicated}")
    print(
        f"  energy {heat.get('energy_kwh')} kWh, reused {heat.get('heat_reused_share')}, "
        f"J/token {heat.get('j_per_token')}; {retries} request(s) waited while the inference server was down"
    )
    print(f"GET /v1/batches/{{id}} while it runs: p50 {pct(get_ms, 0.5):.2f} ms, p99 {pct(get_ms, 0.99):.2f} ms")
    overhead = statistics.median(proxied) - statistics.median(direct)
    print(
        f"interactive chat (max_tokens 1): direct p50 {statistics.median(direct):.2f} ms, "
        f"through heatctl p50 {statistics.median(proxied):.2f} ms, overhead {overhead:.2f} ms"
    )
    ok = lost == 0 and duplicated == 0 and done.status == "completed" and pct(get_ms, 0.99) <= 10 and overhead <= 5
    print(f"targets: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

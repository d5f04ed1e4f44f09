"""A ~200 MB batch file validated and queued: what it costs in memory.

    .venv/bin/python benchmarks/batch_memory.py [--requests 100000]

Writes a batch input file of ``--requests`` chat requests (about 2 kB each) into a fresh store,
then validates and queues it as ``run`` does, in this process, and prints the resident memory
before, at the peak and after. The file is read line by line and each queued request keeps its
body as the JSON text it is stored as (parsed again when a worker takes it).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.batch.queue import BatchQueue  # noqa: E402
from heatctl.batch.store import BatchStore  # noqa: E402
from heatctl.config import BatchApiConfig  # noqa: E402

CHAT = "/v1/chat/completions"


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def lines(n: int) -> Iterator[bytes]:
    content = "the room wants heat; " * 90  # about 1.9 kB of prompt
    for i in range(n):
        body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 64}
        yield (json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}) + "\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heatctl-batch-memory-") as tmp:
        store = BatchStore(Path(tmp) / "batch")
        queue = BatchQueue(store, BatchApiConfig(token="t" * 16, max_requests=1_000_000), slots=1)  # type: ignore[arg-type]
        record = store.add_file("in.jsonl", "batch", lines(args.requests))
        gc.collect()
        before = rss_mb()
        batch = store.create_batch(record.id, CHAT, "24h", 86400, {})
        queue._validate(str(batch["id"]), record.id, CHAT)  # the manager thread's step, measured alone
        gc.collect()
        after = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        status = (store.get_batch(str(batch["id"])) or {}).get("status")
        store.close()
    print(f"file {record.bytes / 1e6:.0f} MB, {args.requests:,} requests, batch {status}")
    print(f"resident memory: {before:.0f} MB before, peak {peak:.0f} MB, {after:.0f} MB after (the queue holds it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Batch API's own server under slow and stuck clients: timeouts hold, the event loop stays free.

These run the API's server alone (store, queue, aiohttp) with a raw socket or urllib as the client:
what is tested is the server's handling of the connection, not the SDK."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatctl.batch.api import BatchApi, BatchApiServer
from heatctl.batch.queue import BatchQueue
from heatctl.batch.store import BatchStore
from heatctl.config import BatchApiConfig
from tests.services import free_port

TOKEN = "a-token-of-enough-length"


class Api:
    def __init__(self, tmp_path: Path, **timeouts: float) -> None:
        self.port = free_port()
        self.cfg = BatchApiConfig(listen=f"127.0.0.1:{self.port}", token=TOKEN)  # type: ignore[arg-type]
        self.store = BatchStore(tmp_path / "batch")
        self.queue = BatchQueue(self.store, self.cfg, slots=1)
        api = BatchApi(self.cfg, self.store, self.queue, body_idle_s=timeouts.get("body_idle_s", 30.0))
        self.server = BatchApiServer(
            api,
            "127.0.0.1",
            self.port,
            header_timeout_s=timeouts.get("header_timeout_s", 15.0),
            max_connections=int(timeouts.get("max_connections", 256)),
        )
        self.server.start()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def close(self) -> None:
        self.server.stop()
        self.store.close()


@pytest.fixture
def made() -> Iterator[list[Api]]:
    apis: list[Api] = []
    yield apis
    for api in apis:
        api.close()


def closed_within(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server sent before closing the connection; fails if it is still open after ``timeout_s``."""
    sock.settimeout(timeout_s)
    received = b""
    while chunk := sock.recv(4096):  # raises TimeoutError while the server holds it open
        received += chunk
    return received


def test_a_half_sent_body_is_answered_408_and_closed(tmp_path: Path, made: list[Api]) -> None:
    api = Api(tmp_path, body_idle_s=0.5)
    made.append(api)
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(
            b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"input_file_id": '
        )
        answer = closed_within(sock, 10.0)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_half_sent_headers_are_closed(tmp_path: Path, made: list[Api]) -> None:
    api = Api(tmp_path, header_timeout_s=0.5)
    made.append(api)
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert closed_within(sock, 10.0) == b""
    assert api.request("GET", "/v1/batches")[0] == 200  # others are served as before


def test_a_slow_store_write_does_not_hold_up_other_requests(tmp_path: Path, made: list[Api]) -> None:
    """Creating a batch commits to SQLite (an fsync; seconds on an SD card): reads go on meanwhile."""
    api = Api(tmp_path)
    made.append(api)
    record = api.store.add_file("in.jsonl", "batch", [b'{"custom_id": "a"}\n'])
    entered, release = threading.Event(), threading.Event()
    create = api.store.create_batch

    def slow_create(*args: Any) -> Any:
        entered.set()
        release.wait(10.0)  # the disk is slow until the test lets it go
        return create(*args)

    api.store.create_batch = slow_create  # type: ignore[method-assign]
    finished: list[str] = []
    body = json.dumps({"input_file_id": record.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})

    def post() -> None:
        api.request("POST", "/v1/batches", body.encode())
        finished.append("create")

    poster = threading.Thread(target=post)
    poster.start()
    assert entered.wait(10.0)  # the create is in its slow write now
    status, files = api.request("GET", "/v1/files")
    finished.append("list")
    release.set()
    poster.join(10.0)
    assert status == 200 and [f["id"] for f in files["data"]] == [record.id]
    assert finished == ["list", "create"]


def post_raw(port: int, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/files", data=body, method="POST")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_malformed_or_doubled_uploads_are_400_and_keep_nothing(tmp_path: Path, made: list[Api]) -> None:
    api = Api(tmp_path)
    made.append(api)
    status, body = post_raw(api.port, b"--x\r\nnot a part at all", "multipart/form-data; boundary=x")
    assert status == 400 and "multipart" in body["error"]["message"]
    two = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{}\n\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\n{}\n\r\n--b--\r\n'
    )
    status, body = post_raw(api.port, two, "multipart/form-data; boundary=b")
    assert status == 400 and body["error"]["param"] == "file"
    assert api.request("GET", "/v1/files")[1]["data"] == []


def test_files_are_listed_a_page_at_a_time(tmp_path: Path, made: list[Api]) -> None:
    api = Api(tmp_path)
    made.append(api)
    ids = [api.store.add_file(f"{i}.jsonl", "batch", [b"{}\n"]).id for i in range(5)]
    status, page = api.request("GET", "/v1/files?limit=2")
    assert status == 200 and [f["id"] for f in page["data"]] == ids[::-1][:2] and page["has_more"]
    _, rest = api.request("GET", f"/v1/files?limit=10&after={page['last_id']}")
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:] and not rest["has_more"]
    assert api.request("GET", "/v1/files?limit=many")[0] == 400


def test_passthrough_is_refused_while_heatctl_makes_no_heat(tmp_path: Path, made: list[Api]) -> None:
    port = free_port()
    cfg = BatchApiConfig(listen=f"127.0.0.1:{port}", token=TOKEN)  # type: ignore[arg-type]
    store = BatchStore(tmp_path / "batch")
    queue = BatchQueue(store, cfg, slots=1)
    server = BatchApiServer(BatchApi(cfg, store, queue, upstream="http://127.0.0.1:9/v1"), "127.0.0.1", port)
    server.start()
    try:
        queue.set_heat_wanted(False, off_reason="heatctl is off")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=b'{"messages": []}', method="POST"
        )
        req.add_header("Authorization", f"Bearer {TOKEN}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        answer = json.loads(refused.value.read())
        assert refused.value.code == 503 and "heatctl is off" in answer["error"]["message"]
        assert queue.interactive == 0  # nothing was started
    finally:
        server.stop()
        store.close()


def test_a_short_token_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        BatchApiConfig(token="")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 16 characters"):
        BatchApiConfig(token="short-token")  # type: ignore[arg-type]


def test_connections_over_the_cap_are_turned_away_with_503_and_the_api_recovers(
    tmp_path: Path, made: list[Api]
) -> None:
    api = Api(tmp_path, max_connections=4)
    made.append(api)
    idle = [socket.create_connection(("127.0.0.1", api.port)) for _ in range(4)]  # slow clients, holding on
    wait_for(lambda: len(api.server._runner.server.connections), lambda n: n == 4)  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", api.port)) as extra:
        answer = closed_within(extra, 5.0)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    assert b'"code": "too_many_connections"' in answer and b"Retry-After: 5" in answer
    assert api.server.refused_connections >= 1
    for sock in idle:
        sock.close()
    _, body = wait_for(lambda: api.request("GET", "/v1/batches"), lambda r: r[0] == 200)
    assert body["object"] == "list"


def wait_for(call: Any, ok: Any, timeout_s: float = 10.0) -> Any:
    from tests.services import wait_until

    return wait_until(lambda: (r := call()) and ok(r) and r, timeout_s, "the API to answer")


def test_event_loop_errors_are_logged_once_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    from heatctl.batch.api import RateLimitedLoopErrors

    now = [0.0]
    handler = RateLimitedLoopErrors(every_s=60.0, clock=lambda: now[0])
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    with caplog.at_level("ERROR", logger="heatctl.batch.api"):
        for second in range(125):  # asyncio says it once a second while descriptors run out
            now[0] = float(second)
            handler(None, context)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # at 0 s, 60 s and 120 s
    assert "too many open files" in lines[0] and "more like it" not in lines[0]
    assert lines[1].endswith("(59 more like it since)") and lines[2].endswith("(59 more like it since)")

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
            api, "127.0.0.1", self.port, header_timeout_s=timeouts.get("header_timeout_s", 15.0)
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

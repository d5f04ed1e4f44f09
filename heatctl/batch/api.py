"""The OpenAI Batch API subset the official SDKs use, served with aiohttp on its own thread.

``/v1/files`` (upload with purpose ``batch``, get, content, delete, list), ``/v1/batches``
(create, get, list, cancel) and, with ``passthrough``, the interactive endpoints proxied to
the local inference server: a person's request takes a batch slot while it runs.

Errors have the OpenAI API's shape (``{"error": {"message", "type", "param", "code"}}``) and
status codes, so the SDK raises the exception a user expects (``AuthenticationError``,
``NotFoundError``, ``BadRequestError``). Nothing a client sends can stop the service.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import BodyPartReader, ClientError, ClientSession, ClientTimeout, web
from aiohttp.http_exceptions import HttpProcessingError

from heatctl.batch.queue import ENDPOINTS, BatchQueue
from heatctl.batch.store import BatchStore
from heatctl.config import BatchApiConfig, duration_s
from heatctl.errors import plain
from heatctl.untrusted import UntrustedJsonError, parse_json

_LOGGER = logging.getLogger(__name__)
PASSTHROUGH = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_METADATA = 16
HEADER_TIMEOUT_S = 15.0  # a connection that has not sent a whole request by then is closed (slowloris)
BODY_IDLE_S = 30.0  # a request body that stalls this long is answered 408
LINGER_S = 1.0  # ... and the connection closed after this
T = TypeVar("T")


def api_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


class BatchApi:
    """The handlers; ``upstream`` is the inference server's base URL (``…/v1``) for passthrough."""

    def __init__(
        self,
        cfg: BatchApiConfig,
        store: BatchStore,
        queue: BatchQueue,
        *,
        upstream: str | None = None,
        upstream_key: str | None = None,
        body_idle_s: float = BODY_IDLE_S,
    ) -> None:
        self.cfg = cfg
        self.body_idle_s = body_idle_s
        self.store = store
        self.queue = queue
        self._upstream = upstream.rstrip("/") if upstream else None
        self._upstream_key = upstream_key
        self._token = cfg.token.get_secret_value().encode()
        self._session: ClientSession | None = None

    def app(self) -> web.Application:
        max_bytes = int(self.cfg.max_file_mb * 1024 * 1024)
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=max_bytes + 1024 * 1024)
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{id}", self.get_file)
        app.router.add_delete("/v1/files/{id}", self.delete_file)
        app.router.add_get("/v1/files/{id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel_batch)
        if self.cfg.passthrough and self._upstream is not None:
            for path in PASSTHROUGH:
                app.router.add_post(path, self.proxy)
            app.router.add_get("/v1/models", self.proxy)
        app.on_cleanup.append(self._close_session)
        return app

    async def _off(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call (SQLite, fsync) on a worker thread: the event loop keeps serving meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    async def _body(self, read: Awaitable[T]) -> T:
        """A read of the request body that may stall at most ``body_idle_s`` (a slow or stuck client)."""
        return await asyncio.wait_for(read, self.body_idle_s)

    # --- middleware -----------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            return api_error(
                401,
                "Incorrect API key provided. Use the token of heatctl's batch_api as the API key.",
                code="invalid_api_key",
            )
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return api_error(
                413, f"The request is larger than the limit of {self.cfg.max_file_mb:g} MB.", code="file_too_large"
            )
        except web.HTTPNotFound:
            return api_error(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
        except web.HTTPMethodNotAllowed:
            return api_error(405, f"{request.method} is not allowed on {request.path}.", code="method_not_allowed")
        except TimeoutError:
            _LOGGER.info(
                "batch API: %s %s: the body stalled for %.0f s", request.method, request.path, self.body_idle_s
            )
            response = api_error(408, "The request body did not arrive in time.", code="request_timeout")
            response.force_close()
            return response
        except Exception:
            _LOGGER.exception("batch API: %s %s failed", request.method, request.path)
            return api_error(500, "The server had an error while processing your request.", kind="server_error")

    # --- files ----------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.Response:  # noqa: PLR0911 - one answer per problem
        if not request.content_type.startswith("multipart/"):
            return api_error(400, "Uploads are multipart/form-data with 'file' and 'purpose'.")
        max_bytes = int(self.cfg.max_file_mb * 1024 * 1024)
        purpose, filename, files = None, "upload.jsonl", 0
        upload = self.store.begin_file()  # streamed to disk: a large file never sits in memory
        try:
            reader = await request.multipart()
            while (part := await self._body(reader.next())) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "purpose":
                    purpose = (await self._body(part.text())).strip()
                elif part.name == "file":
                    files += 1
                    if files > 1:
                        upload.abort()
                        return api_error(400, "Send one 'file' part per upload.", param="file")
                    filename = part.filename or filename
                    while chunk := await self._body(part.read_chunk(1 << 16)):
                        upload.write(chunk)
                        if upload.size > max_bytes:
                            upload.abort()
                            return api_error(
                                413,
                                f"The file is larger than the limit of {self.cfg.max_file_mb:g} MB.",
                                param="file",
                                code="file_too_large",
                            )
        except (ValueError, AssertionError, HttpProcessingError) as exc:  # aiohttp's words for a malformed body
            upload.abort()
            return api_error(400, f"The upload is not well-formed multipart/form-data: {plain(exc)}.")
        except BaseException:
            upload.abort()
            raise
        if purpose != "batch" or upload.size == 0:
            upload.abort()
            if purpose != "batch":
                return api_error(400, f"'purpose' must be 'batch' here, not {purpose!r}.", param="purpose")
            return api_error(400, "The 'file' part is missing or empty.", param="file")
        record = await self._off(upload.commit, filename, purpose)
        return web.json_response(record.to_api())

    async def list_files(self, request: web.Request) -> web.Response:
        """A page of files, newest first (``limit`` up to 10,000, ``after`` the last id seen)."""
        try:
            limit = min(max(int(request.query.get("limit", "10000")), 1), 10_000)
        except ValueError:
            return api_error(400, "limit must be an integer from 1 to 10000.", param="limit")
        files, more = await self._off(self.store.list_files, request.query.get("after"), limit)
        data = [f.to_api() for f in files]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more})

    async def get_file(self, request: web.Request) -> web.Response:
        record = await self._off(self.store.get_file, request.match_info["id"])
        if record is None:
            return _no_such("File", request.match_info["id"])
        return web.json_response(record.to_api())

    async def delete_file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if not await self._off(self.store.delete_file, file_id):
            return _no_such("File", file_id)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if await self._off(self.store.get_file, file_id) is None:
            return _no_such("File", file_id)
        return web.FileResponse(self.store.file_path(file_id), headers={"Content-Type": "application/jsonl"})

    # --- batches --------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            data = parse_json(await self._body(request.read()))
        except UntrustedJsonError as exc:
            return api_error(400, f"The body is not valid JSON ({exc}).")
        if not isinstance(data, dict):
            return api_error(400, "The body must be a JSON object.")
        file_id = data.get("input_file_id")
        record = await self._off(self.store.get_file, file_id) if isinstance(file_id, str) else None
        problem = self._batch_problem(data, record)
        if problem is not None:
            return problem
        window = data["completion_window"]
        batch = await self._off(
            self.store.create_batch,
            data["input_file_id"],
            data["endpoint"],
            window,
            duration_s(window),
            data.get("metadata"),
        )
        self.queue.poke()
        _LOGGER.info("batch %s created: %s, window %s", batch["id"], batch["endpoint"], window)
        return web.json_response(batch)

    def _batch_problem(self, data: dict[str, Any], record: Any) -> web.Response | None:  # noqa: PLR0911 - one per rule
        """What is wrong with a batch's parameters (``record``: its input file, None if there is none)."""
        for key in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(data.get(key), str):
                return api_error(
                    400, f"Missing required parameter: {key!r}.", param=key, code="missing_required_parameter"
                )
        if data["endpoint"] not in ENDPOINTS:
            return api_error(
                400, f"Invalid endpoint {data['endpoint']!r}; one of {', '.join(ENDPOINTS)}.", param="endpoint"
            )
        if data["completion_window"] not in self.cfg.completion_windows:
            allowed = ", ".join(repr(w) for w in self.cfg.completion_windows)
            return api_error(
                400,
                f"Invalid completion_window {data['completion_window']!r}; one of {allowed}.",
                param="completion_window",
            )
        metadata = data.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > MAX_METADATA
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            return api_error(400, "metadata is at most 16 string keys with string values.", param="metadata")
        if record is None:
            return api_error(400, f"No such File object: {data['input_file_id']}.", param="input_file_id")
        if record.purpose != "batch":
            return api_error(400, "The input file's purpose must be 'batch'.", param="input_file_id")
        return None

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = await self._off(self.store.get_batch, request.match_info["id"])
        if batch is None:
            return _no_such("Batch", request.match_info["id"])
        return web.json_response(batch)

    async def list_batches(self, request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 100)
        except ValueError:
            return api_error(400, "limit must be an integer from 1 to 100.", param="limit")
        data, more = await self._off(self.store.list_batches, request.query.get("after"), limit)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        batch = await self._off(self.store.get_batch, batch_id)
        if batch is None:
            return _no_such("Batch", batch_id)
        if not await self._off(self._cancel, batch_id):
            return api_error(409, f"Cannot cancel a batch with status '{batch['status']}'.")
        self.queue.poke()
        return web.json_response(await self._off(self.store.get_batch, batch_id))

    def _cancel(self, batch_id: str) -> bool:
        return self.store.set_status(batch_id, "cancelling", only_from=("validating", "in_progress"))

    # --- interactive passthrough ----------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward to the inference server, streaming the answer back; a batch slot yields meanwhile."""
        assert self._upstream is not None
        if self.queue.passthrough_block is not None and not self.cfg.passthrough_when_off:
            reason = f"heatctl makes no heat now ({self.queue.passthrough_block}): passthrough is off meanwhile"
            return api_error(503, reason, kind="server_error", code="heat_not_wanted")
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10))
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if self._upstream_key:
            headers["Authorization"] = f"Bearer {self._upstream_key}"
        url = self._upstream + request.path.removeprefix("/v1")
        body = await self._body(request.read())
        self.queue.interactive_started()
        try:
            async with self._session.request(request.method, url, data=body, headers=headers) as upstream:
                response = web.StreamResponse(status=upstream.status)
                for name in ("Content-Type", "Cache-Control"):
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except ClientError as exc:
            return api_error(502, f"The inference server did not answer: {exc}", kind="server_error")
        finally:
            self.queue.interactive_ended()

    async def _close_session(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


def _no_such(kind: str, object_id: str) -> web.Response:
    return api_error(404, f"No such {kind} object: {object_id}", param="id")


class BatchApiServer:
    """Runs the API on a thread of its own with its own event loop; never stops the control loop."""

    def __init__(
        self,
        api: BatchApi,
        host: str,
        port: int,
        *,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        max_connections: int = 256,
    ) -> None:
        self.api = api
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections
        self.refused_connections = 0  # turned away at the cap (the event loop's thread)
        self.host, self.port = host, port
        self.error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="batch-api", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error:
            _LOGGER.error("batch API: cannot listen on %s:%d: %s", self.host, self.port, self.error)
        else:
            _LOGGER.info("batch API on http://%s:%d/v1", self.host, self.port)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(RateLimitedLoopErrors())
        try:
            self._loop.run_until_complete(self._open())
        except OSError as exc:
            self.error = str(exc)
            self._loop.run_until_complete(self._close())
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._close())
        self._loop.close()

    async def _open(self) -> None:
        # keepalive_timeout also bounds a connection's wait for its first whole request; after an
        # answer to a body that stalled, the rest of it is waited for (lingering) only briefly.
        self._runner = web.AppRunner(
            self.api.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._header_timeout_s,
            lingering_time=LINGER_S,
        )
        await self._runner.setup()
        site = CappedSite(self._runner, self.host, self.port, cap=self._max_connections, on_refuse=self._refused)
        await site.start()

    def _refused(self) -> None:
        self.refused_connections += 1
        if self.refused_connections == 1 or self.refused_connections % 1000 == 0:
            _LOGGER.warning(
                "batch API: %d connections open, the most it takes (max_connections); %d turned away with 503 so far",
                self._max_connections,
                self.refused_connections,
            )

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10.0)


class CappedSite(web.TCPSite):
    """A TCP site that holds at most ``cap`` connections: the one over it is answered ``503`` and
    closed at once, so a flood of idle clients cannot take the process's file descriptors."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, cap: int, on_refuse: Callable[[], None]) -> None:
        super().__init__(runner, host, port)
        self._cap = cap
        self._on_refuse = on_refuse

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._cap:
                self._on_refuse()
                return _TurnAway()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port, reuse_address=self._reuse_address)


class _TurnAway(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        body = json.dumps(
            {
                "error": {
                    "message": "Too many connections; try again shortly.",
                    "type": "server_error",
                    "param": None,
                    "code": "too_many_connections",
                }
            }
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        transport.write(head.encode() + body)
        transport.close()


class RateLimitedLoopErrors:
    """The API loop's exception handler: what asyncio reports (``accept() out of system resource``
    when file descriptors run out, once a second) is logged once a minute per kind, with a count."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        now_s = self._clock()
        said_s, missed = self._last.get(message, (-math.inf, 0))
        if now_s - said_s < self._every_s:
            self._last[message] = (said_s, missed + 1)
            return
        self._last[message] = (now_s, 0)
        exc = context.get("exception")
        more = f" ({missed} more like it since)" if missed else ""
        _LOGGER.error("batch API: %s%s%s", message, f": {plain(exc)}" if exc else "", more)

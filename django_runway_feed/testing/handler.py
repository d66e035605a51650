"""The fake CometAPI's HTTP side: the threaded server and the request handler that routes each
request (create routes, the feed, output files) and answers it.

The handler asks :class:`~django_runway_feed.testing.FakeCometAPI` for faults, tasks and feed
answers, records each request there, and writes its answers with
:class:`~django_runway_feed.testing.answers.Answers`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from .answers import Answers, shut_down
from .recording import CreateRequest, FeedCall, OutputRequest
from .tasks import OUTPUTS_PREFIX, check_signed_query, output_bytes, parse_output_name

if TYPE_CHECKING:
    from .server import FakeCometAPI

logger = logging.getLogger(__name__)

FEED_PATH: Final = "/runway/feed"
CREATE_ROUTES: Final = {
    "/runway/pro/generate": "generate",
    "/runway/pro/video2video": "video2video",
    "/runway/pro/act_one": "act_one",
}
# Per route, groups of alternatives: each group needs one non-empty string among its fields,
# and the first field of a group names it in the error.
REQUIRED_FIELDS: Final = {
    "generate": (("prompt", "image"),),
    "video2video": (("video",),),
    "act_one": (("video",), ("image",)),
}


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Handler threads may be parked on idle keep-alive connections; stop() closes those itself.
    block_on_close = False
    # The poller and the benchmarks open many connections at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], *, fake: FakeCometAPI) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> bool:
        with self._connections_lock:
            if self._closing:
                return False
            self._connections.add(connection)
            return True

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            shut_down(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (timeouts, resets, huge bodies) are expected here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        logger.exception("FakeCometAPI: error while answering %s", client_address)


class RequestHandler(Answers):
    """Routes each request and answers it from the server's state, faults first."""

    server: FakeHTTPServer

    @property
    def fake(self) -> FakeCometAPI:
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        if not self.server.track(self.connection):
            shut_down(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # Routing ----------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        # One handler serves every request of a keep-alive connection: reset per request.
        self.head_only = method == "HEAD"
        try:
            raw_body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send_html(400, "400 Bad Request")
            return
        path = urlsplit(self.path).path
        if path == FEED_PATH or path in CREATE_ROUTES:
            self._api(method, path, raw_body)
        elif path.startswith(OUTPUTS_PREFIX):
            self._output(method, path[len(OUTPUTS_PREFIX) :])
        else:
            # COMETAPI.md: a wrong path may come back as an HTML page rather than JSON.
            self._send_html(404, "404 Not Found")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(size)

    def _read_chunked_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _api(self, method: str, path: str, raw_body: bytes) -> None:
        fake = self.fake
        arrived = fake.now()
        fake._enter_request()
        try:
            if fake.latency:
                time.sleep(fake.latency)
            if path == FEED_PATH:
                self._feed(method, raw_body, arrived)
            else:
                self._create(method, CREATE_ROUTES[path], raw_body, arrived)
        finally:
            fake._leave_request()

    def _feed(self, method: str, raw_body: bytes, arrived: float) -> None:
        body = _parse_json(raw_body)
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not task_id:
            task_id = None

        def record(status: int) -> None:
            self.fake._record_feed_call(FeedCall(task_id, arrived, status))

        with self._recording(record):
            if method != "POST":
                self._send_method_not_allowed()
                return
            fault = self.fake._take_fault("feed", task_id)
            if fault is not None and self._send_fault(fault):
                return
            if not self._authorized():
                self._send_unauthorized()
            elif not isinstance(body, dict):
                self._send_error(400, "request body is not valid JSON", code="invalid_request")
            elif task_id is None:
                self._send_error(400, "task_id is required", code="invalid_request")
            else:
                status, payload = self.fake._feed_answer(task_id)
                self._send_json(status, payload)

    def _create(self, method: str, route: str, raw_body: bytes, arrived: float) -> None:
        body = _parse_json(raw_body)
        authorized = self._authorized()
        task_id: str | None = None

        def record(status: int) -> None:
            self.fake._record_create_request(
                CreateRequest(
                    route=route,
                    body=body if body is not _NOT_JSON else None,
                    authorized=authorized,
                    headers=self._recorded_headers(),
                    task_id=task_id,
                    status_code=status,
                    at=arrived,
                )
            )

        with self._recording(record):
            if method != "POST":
                self._send_method_not_allowed()
                return
            fault = self.fake._take_fault("create", None)
            if fault is not None and self._send_fault(fault):
                return
            if not authorized:
                self._send_unauthorized()
            elif not isinstance(body, dict):
                self._send_error(400, "request body is not valid JSON", code="invalid_request")
            elif missing := _missing_field(route, body):
                self._send_error(400, f"{missing} is required", code="invalid_request")
            elif not isinstance(body.get("callback_url"), str) or not body["callback_url"]:
                # The legacy refusal: HTTP 200, the reason in ``msg``.
                self._send_json(200, {"code": 400, "msg": "callback_url_empty", "data": None})
            else:
                task_id = self.fake._create_task(route, body)
                self._send_json(200, self._create_success(task_id))

    @contextlib.contextmanager
    def _recording(self, record: Callable[[int], None]) -> Iterator[None]:
        """Record the request as its status line goes out.

        Recording before the body is written means a test that has its response can already
        see the call. A request that got no answer at all is recorded with status 0.
        """
        self._record_status = record
        try:
            yield
        finally:
            if self._record_status is not None:
                self._record_status = None
                record(0)

    def _create_success(self, task_id: str) -> dict[str, Any]:
        if self.fake.create_style == "older":
            return {"code": 200, "msg": "success", "data": {"task_id": task_id}, "exec_time": 0.42}
        return {"code": 200, "message": "", "msg": "success", "data": {"task_id": task_id}}

    def _output(self, method: str, name: str) -> None:
        if method not in ("GET", "HEAD"):
            self._send_method_not_allowed(allow="GET, HEAD")
            return
        fake = self.fake
        headers = {
            key.lower(): "<redacted>" if key.lower() == "authorization" else value
            for key, value in self.headers.items()
        }

        def record(status: int) -> None:
            fake._record_output_request(OutputRequest(self.path, headers, status))

        self._record_status = record
        parsed = parse_output_name(name)
        if parsed is None or not fake._has_task(parsed[0]):
            self._send_html(404, "404 Not Found")
            return
        task_id, suffix, content_type = parsed
        if fake.output_url_ttl is not None:
            query = parse_qs(urlsplit(self.path).query)
            problem = check_signed_query(
                fake._url_secret,
                task_id,
                next(iter(query.get("expires", [])), None),
                next(iter(query.get("signature", [])), None),
                fake.now(),
            )
            if problem:
                self._send(403, problem.encode(), "text/plain")
                return
        self._send(200, output_bytes(task_id, suffix), content_type)

    def _authorized(self) -> bool:
        api_key = self.fake.api_key
        if api_key is None:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        )

    def _recorded_headers(self) -> dict[str, str]:
        names = ("Content-Type", "User-Agent", "X-Runway-Version")
        return {name: value for name in names if (value := self.headers.get(name)) is not None}

    def _request_id(self) -> str:
        return self.fake._request_id()


_NOT_JSON: Final[Any] = object()


def _parse_json(raw_body: bytes) -> Any:
    """The parsed body, or ``_NOT_JSON``."""
    try:
        return json.loads(raw_body)
    except ValueError:
        return _NOT_JSON


def _missing_field(route: str, body: dict[str, Any]) -> str:
    for alternatives in REQUIRED_FIELDS[route]:
        if not any(isinstance(body.get(name), str) and body[name] for name in alternatives):
            return alternatives[0]
    return ""

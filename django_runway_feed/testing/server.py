"""A fake CometAPI: a real HTTP server that speaks the Runway routes of COMETAPI.md.

Host sites use it in their own tests (through the pytest plugin) and for local work (the
``runway_fakeapi`` management command). It imports nothing from Django, so it runs without
settings.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hmac
import itertools
import json
import logging
import math
import random
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import requests

from .clock import FakeClock
from .scripts import (
    PROXY_ERROR_STATUSES,
    Fault,
    TaskScript,
    default_error_message,
    error_envelope,
    proxy_error_page,
)
from .tasks import (
    TASK_NOT_EXIST_BODY,
    TERMINAL_PHASES,
    FakeTask,
    check_signed_query,
    feed_payload,
    legacy_record,
    output_bytes,
    parse_output_name,
    signed_query,
)

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
OUTPUTS_PREFIX: Final = "/outputs/"
CREATE_STYLES: Final = ("documented", "older")

# What ``fault_rate`` draws from: the transient failures a client must retry through.
RANDOM_FAULTS: Final = (
    Fault.rate_limited("1"),
    Fault.server_error(500),
    Fault.server_error(502),
    Fault.server_error(503),
    Fault.html(),
    Fault.malformed_json(),
)

_RESET_BODY = json.dumps(
    {
        "code": "success",
        "message": "",
        "data": {
            "task_id": "",
            "action": "IMAGE_TO_VIDEO",
            "status": "IN_PROGRESS",
            "progress": "50%",
        },
    }
).encode()
_CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class FeedCall:
    """One request to ``POST /runway/feed``, faults included.

    ``task_id`` is the id asked for (None when the body had none), ``at`` the server clock when
    the request arrived, ``status_code`` the HTTP status sent (0 when the client went away
    before any answer).
    """

    task_id: str | None
    at: float
    status_code: int


@dataclass(frozen=True)
class OutputRequest:
    """One request for an output file (``GET /outputs/...``).

    ``headers`` holds every request header, names lower-cased, except that the value of an
    ``authorization`` header is replaced by ``"<redacted>"`` (its presence is what tests check).
    ``status_code`` is the HTTP status answered.
    """

    path: str
    headers: dict[str, str]
    status_code: int


@dataclass(frozen=True)
class CreateRequest:
    """One request to a create route, faults included.

    ``route`` is ``"generate"``, ``"video2video"`` or ``"act_one"``; ``body`` the parsed JSON
    (None when it was not JSON); ``authorized`` whether the right key was sent (the key itself is
    never kept); ``headers`` the ``Content-Type``, ``User-Agent`` and ``X-Runway-Version`` values
    that were sent; ``task_id`` the task created (None when none was); ``status_code`` the HTTP
    status sent (0: none); ``at`` the server clock when the request arrived.
    """

    route: str
    body: Any
    authorized: bool
    headers: dict[str, str]
    task_id: str | None
    status_code: int
    at: float


@dataclass(frozen=True)
class CallbackDelivery:
    """One callback the server sent: ``status_code`` is None when the POST itself failed."""

    task_id: str
    url: str
    status_code: int | None
    error: str = ""


@dataclass
class _InjectedFault:
    fault: Fault
    remaining: int
    route: str
    task_id: str | None

    def matches(self, route: str, task_id: str | None) -> bool:
        if self.task_id is not None:
            return route == "feed" and task_id == self.task_id
        return self.route in ("any", route)


class FakeCometAPI:
    """A real threaded HTTP server on 127.0.0.1 that speaks CometAPI's Runway routes.

    ``POST /runway/pro/generate``, ``/runway/pro/video2video`` and ``/runway/pro/act_one`` create
    tasks; ``POST /runway/feed`` answers each task's state, which is a pure function of the
    server's clock and the task's :class:`TaskScript`: advance a :class:`FakeClock` and every
    task moves. Output URLs point back at the server (``GET /outputs/<task_id>.mp4``).

    Arguments:

    - ``api_key``: the key expected as ``Authorization: Bearer <key>`` (None: no auth).
    - ``clock``: a :class:`FakeClock`, or None for real time.
    - ``host``, ``port``: where to listen (port 0: a free port, see :attr:`url`).
    - ``latency``: seconds every API response is delayed (handler threads sleep concurrently).
    - ``default_script``: the script of tasks no :meth:`script_next` / :meth:`script_prompt`
      applies to.
    - ``fault_rate``, ``seed``: that fraction of feed requests, drawn from a seeded generator,
      gets a transient fault (429 with ``Retry-After: 1``, 500, 502, 503, an HTML body or
      malformed JSON): for soak tests.
    - ``create_style``: ``"documented"`` create answers (``{code, message, msg, data}``) or
      ``"older"`` ones (``{code, msg, data, exec_time}``); COMETAPI.md shows both.
    - ``task_not_exist_status``: the HTTP status of ``task_not_exist`` answers, 400 (the
      gateway's) or 200 (COMETAPI.md: accept both).
    - ``callbacks``: when True, a background thread POSTs the legacy record to each finished
      task's ``callback_url`` once (see :meth:`deliver_callbacks`).
    - ``output_url_ttl``: when set (seconds), output URLs are signed and expire that long after
      the feed answer that handed them out (403 afterwards, as a CDN does); each feed answer
      gives fresh URLs. None: plain URLs that never expire.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        clock: FakeClock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        default_script: TaskScript | None = None,
        fault_rate: float = 0.0,
        seed: int = 0,
        create_style: str = "documented",
        task_not_exist_status: int = 400,
        callbacks: bool = False,
        output_url_ttl: float | None = None,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1; got {fault_rate!r}.")
        if latency < 0:
            raise ValueError(f"latency must not be negative; got {latency!r}.")
        if create_style not in CREATE_STYLES:
            raise ValueError(f"create_style must be one of {CREATE_STYLES}; got {create_style!r}.")
        if task_not_exist_status not in (200, 400):
            raise ValueError("task_not_exist_status must be 400 or 200.")
        self.api_key = api_key
        self.clock = clock
        self.host = host
        self.port = port
        self.latency = latency
        self.default_script = default_script if default_script is not None else TaskScript()
        self.fault_rate = fault_rate
        self.seed = seed
        self.create_style = create_style
        self.task_not_exist_status = task_not_exist_status
        self.callbacks = callbacks
        self.output_url_ttl = output_url_ttl
        self._url_secret = uuid.uuid4().bytes
        # One lock guards all shared state below; it is never held while sleeping or doing I/O.
        self._lock = threading.Lock()
        self._server: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._callback_thread: threading.Thread | None = None
        self._stop_callbacks = threading.Event()
        self._request_ids = itertools.count(1)
        self._active_requests = 0
        self._forget_everything()

    def _forget_everything(self) -> None:
        self._tasks: dict[str, FakeTask] = {}
        self._next_scripts: collections.deque[TaskScript] = collections.deque()
        self._prompt_scripts: list[tuple[str, TaskScript]] = []
        self._faults: list[_InjectedFault] = []
        self._feed_calls: list[FeedCall] = []
        self._create_requests: list[CreateRequest] = []
        self._callbacks_claimed: set[str] = set()
        self._callback_deliveries: list[CallbackDelivery] = []
        self._output_requests: list[OutputRequest] = []
        self._rng = random.Random(self.seed)
        # Requests in flight during a reset() still leave, so the count itself is kept.
        self._max_concurrent_requests = getattr(self, "_active_requests", 0)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<FakeCometAPI {where}>"

    # Life cycle -------------------------------------------------------------------------------

    def start(self) -> FakeCometAPI:
        """Bind (a free port when ``port=0``) and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("This FakeCometAPI is already running; stop() it first.")
        server = _FakeHTTPServer((self.host, self.port), fake=self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # stop() waits for the loop to notice; test suites start a server per test.
            kwargs={"poll_interval": 0.01},
            name=f"FakeCometAPI-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        if self.callbacks:
            self._stop_callbacks.clear()
            self._callback_thread = threading.Thread(
                target=self._deliver_callbacks_forever, name="FakeCometAPI-callbacks", daemon=True
            )
            self._callback_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and free the port. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stop_callbacks.set()
        server.shutdown()
        server.server_close()
        # Pooled keep-alive connections would otherwise go on being served after stop().
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        if self._callback_thread is not None:
            self._callback_thread.join(timeout=10)
        self._server = self._thread = self._callback_thread = None

    def serve_forever(self) -> None:
        """Start if needed and block until :meth:`stop` is called elsewhere or Ctrl-C."""
        if self._server is None:
            self.start()
        thread = self._thread
        try:
            while thread is not None and thread.is_alive():
                thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> FakeCometAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``, to use as ``RUNWAY_FEED['BASE_URL']``."""
        if self._server is None:
            raise RuntimeError("The FakeCometAPI is not running: call start() first.")
        return self._base_url()

    def _base_url(self) -> str:
        port = self._server.server_address[1] if self._server is not None else self.port
        # A wildcard bind is still reached through loopback from this machine.
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        return f"http://{host}:{port}"

    def now(self) -> float:
        """The server's time: the clock's, or the real time when there is no clock."""
        return self.clock.now() if self.clock is not None else time.time()

    # Scripting --------------------------------------------------------------------------------

    def script_next(self, *scripts: TaskScript) -> None:
        """Give the next created tasks these scripts, in order; later ones get the default."""
        with self._lock:
            self._next_scripts.extend(scripts)

    def script_prompt(self, substring: str, script: TaskScript) -> None:
        """Give tasks whose create ``prompt`` contains ``substring`` this script.

        Checked after the :meth:`script_next` queue and before the default; the first matching
        registration wins.
        """
        with self._lock:
            self._prompt_scripts.append((substring, script))

    def add_task(
        self,
        script: TaskScript | None = None,
        *,
        task_id: str | None = None,
        action: str | None = None,
        created_at: float | None = None,
        prompt: str = "",
        callback_url: str = "",
    ) -> str:
        """Create a task directly, as if created elsewhere, and return its id (a uuid4).

        ``script`` defaults to ``default_script``; ``action`` to the script's; ``created_at``
        (server clock) to now, so a task can be back-dated.
        """
        chosen = script if script is not None else self.default_script
        task = FakeTask(
            task_id=task_id if task_id is not None else str(uuid.uuid4()),
            script=chosen,
            created_at=created_at if created_at is not None else self.now(),
            action=action if action is not None else chosen.action,
            prompt=prompt,
            callback_url=callback_url,
        )
        with self._lock:
            if task.task_id in self._tasks:
                raise ValueError(f"A fake task {task.task_id!r} already exists.")
            self._tasks[task.task_id] = task
        return task.task_id

    def inject(
        self, fault: Fault, *, times: int = 1, task_id: str | None = None, route: str = "feed"
    ) -> None:
        """Answer the next ``times`` matching requests with ``fault``.

        ``route`` is ``"feed"``, ``"create"`` or ``"any"``; ``task_id`` restricts the fault to
        feed requests for that task. Faults are matched in the order they were injected, before
        authentication, and take precedence over ``fault_rate``.
        """
        if route not in ("feed", "create", "any"):
            raise ValueError(f"route must be 'feed', 'create' or 'any'; got {route!r}.")
        if times < 1:
            raise ValueError(f"times must be at least 1; got {times!r}.")
        if task_id is not None and route == "create":
            raise ValueError("A task_id only restricts feed faults: a create has no task id yet.")
        with self._lock:
            self._faults.append(_InjectedFault(fault, times, route, task_id))

    def clear_faults(self) -> None:
        """Drop every injected fault that has not fired yet (``fault_rate`` is unaffected)."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget tasks, scripts queued or registered, faults, recorded calls and callbacks."""
        with self._lock:
            self._forget_everything()

    # Observation ------------------------------------------------------------------------------

    def feed_calls(self, task_id: str | None = None) -> list[FeedCall]:
        """Feed requests received (all, or for one task), in the order they were answered."""
        with self._lock:
            calls = list(self._feed_calls)
        return calls if task_id is None else [call for call in calls if call.task_id == task_id]

    def call_count(self, task_id: str | None = None) -> int:
        """How many feed requests were received, in total or for one task."""
        return len(self.feed_calls(task_id))

    @property
    def create_requests(self) -> list[CreateRequest]:
        """Create requests received, in the order they were answered (a copy)."""
        with self._lock:
            return list(self._create_requests)

    @property
    def callback_deliveries(self) -> list[CallbackDelivery]:
        """Callbacks sent so far (a copy)."""
        with self._lock:
            return list(self._callback_deliveries)

    @property
    def max_concurrent_requests(self) -> int:
        """The most API requests ever handled at the same moment (since start or reset)."""
        with self._lock:
            return self._max_concurrent_requests

    def task_ids(self) -> list[str]:
        """Ids of every task the server knows, in creation order."""
        with self._lock:
            return list(self._tasks)

    def task_phase(self, task_id: str) -> str:
        """Where the task is in its script now (KeyError for an unknown id).

        One of ``invisible``, ``queued``, ``throttled``, ``running``, ``succeeded``, ``failed``,
        ``cancelled``.
        """
        return self._task(task_id).phase_at(self.now())

    def task_state(self, task_id: str) -> dict[str, Any]:
        """The feed body the task would produce now, faults aside (for debugging).

        Raises KeyError for an unknown id; an invisible task gives the ``task_not_exist`` body.
        """
        task, now = self._task(task_id), self.now()
        return feed_payload(
            task, now, base_url=self._base_url(), url_query=self._url_query(task.task_id, now)
        )

    def output_requests(self, task_id: str | None = None) -> list[OutputRequest]:
        """Requests for output files so far (for one task when ``task_id`` is given)."""
        with self._lock:
            requests_ = list(self._output_requests)
        if task_id is None:
            return requests_
        prefix = f"{OUTPUTS_PREFIX}{task_id}"
        return [r for r in requests_ if r.path.startswith(prefix)]

    def _url_query(self, task_id: str, now: float) -> str:
        if self.output_url_ttl is None:
            return ""
        return signed_query(self._url_secret, task_id, math.ceil(now + self.output_url_ttl))

    def _task(self, task_id: str) -> FakeTask:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise KeyError(f"The fake server has no task {task_id!r}.")
        return task

    # Callbacks --------------------------------------------------------------------------------

    def deliver_callbacks(self) -> list[CallbackDelivery]:
        """POST the legacy record to ``callback_url`` of each task that finished since last time.

        Each task is called back at most once, only when its script says ``callback=True``, and
        not before its script's ``callback_delay`` has passed since it finished.
        Runs by itself every quarter second when the server was built with ``callbacks=True``;
        call it directly to deliver at a moment the test chooses. Returns the new deliveries.
        """
        now = self.now()
        with self._lock:
            due = [
                task
                for task in self._tasks.values()
                if task.callback_url
                and task.script.callback
                and task.task_id not in self._callbacks_claimed
                and task.phase_at(now) in TERMINAL_PHASES
                and now >= task.finished_at + task.script.callback_delay
            ]
            self._callbacks_claimed.update(task.task_id for task in due)
        deliveries = []
        for task in due:
            body = legacy_record(
                task, now, base_url=self._base_url(), url_query=self._url_query(task.task_id, now)
            )
            try:
                response = requests.post(
                    task.callback_url, json=body, timeout=5, allow_redirects=False
                )
            except requests.RequestException as exc:
                delivery = CallbackDelivery(task.task_id, task.callback_url, None, repr(exc))
            else:
                response.close()
                delivery = CallbackDelivery(task.task_id, task.callback_url, response.status_code)
            deliveries.append(delivery)
        with self._lock:
            self._callback_deliveries.extend(deliveries)
        return deliveries

    def _deliver_callbacks_forever(self) -> None:
        while not self._stop_callbacks.wait(0.25):
            try:
                self.deliver_callbacks()
            except Exception:
                logger.exception("FakeCometAPI: delivering callbacks failed")

    # Used by the request handler --------------------------------------------------------------

    def _request_id(self) -> str:
        stamp = dt.datetime.fromtimestamp(self.now(), tz=dt.UTC).strftime("%Y%m%d%H%M%S")
        return f"{stamp}{next(self._request_ids):09d}"

    def _take_fault(self, route: str, task_id: str | None) -> Fault | None:
        with self._lock:
            for injected in self._faults:
                if injected.matches(route, task_id):
                    injected.remaining -= 1
                    if injected.remaining == 0:
                        self._faults.remove(injected)
                    return injected.fault
            if route == "feed" and self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(RANDOM_FAULTS)
        return None

    def _create_task(self, route: str, body: dict[str, Any]) -> str:
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        callback_url = body.get("callback_url")
        with self._lock:
            if self._next_scripts:
                script = self._next_scripts.popleft()
            else:
                script = next(
                    (s for substring, s in self._prompt_scripts if substring in str(prompt)),
                    self.default_script,
                )
            task = FakeTask(
                task_id=str(uuid.uuid4()),
                script=script,
                created_at=self.now(),
                action=script.action,
                route=route,
                prompt=str(prompt),
                callback_url=str(callback_url),
            )
            self._tasks[task.task_id] = task
        return task.task_id

    def _feed_answer(self, task_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            return self.task_not_exist_status, dict(TASK_NOT_EXIST_BODY)
        now = self.now()
        payload = feed_payload(
            task, now, base_url=self._base_url(), url_query=self._url_query(task_id, now)
        )
        if payload.get("code") == "task_not_exist":
            return self.task_not_exist_status, payload
        return 200, payload

    def _has_task(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._tasks

    def _enter_request(self) -> None:
        with self._lock:
            self._active_requests += 1
            self._max_concurrent_requests = max(
                self._max_concurrent_requests, self._active_requests
            )

    def _leave_request(self) -> None:
        with self._lock:
            self._active_requests -= 1

    def _record_feed_call(self, call: FeedCall) -> None:
        with self._lock:
            self._feed_calls.append(call)

    def _record_create_request(self, request: CreateRequest) -> None:
        with self._lock:
            self._create_requests.append(request)


class _FakeHTTPServer(ThreadingHTTPServer):
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
        super().__init__(address, _Handler)

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
            _shutdown(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (timeouts, resets, huge bodies) are expected here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        logger.exception("FakeCometAPI: error while answering %s", client_address)


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeCometAPI"
    sys_version = ""
    # Headers and body go out in two writes; Nagle would hold the second back on keep-alive.
    disable_nagle_algorithm = True
    server: _FakeHTTPServer

    head_only = False
    _record_status: Callable[[int], None] | None = None

    @property
    def fake(self) -> FakeCometAPI:
        return self.server.fake

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        if not self.server.track(self.connection):
            _shutdown(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib prints every request to stderr; tests and benchmarks do thousands.
        return

    def send_response(self, code: int, message: str | None = None) -> None:
        record, self._record_status = self._record_status, None
        if record is not None:
            record(code)
        super().send_response(code, message)

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
            with fake._lock:
                fake._output_requests.append(OutputRequest(self.path, headers, status))

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

    # Faults -----------------------------------------------------------------------------------

    def _send_fault(self, fault: Fault) -> bool:
        """Answer with ``fault``; False when the request should then be answered normally."""
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        if fault.kind == "status":
            body = fault.body if fault.body is not None else self._default_error_body(fault.status)
            self._send_text(fault.status, body, fault.headers)
        elif fault.kind == "body":
            self._send_text(200, fault.body or "", fault.headers)
        elif fault.kind == "redirect":
            status = fault.status if 300 <= fault.status < 400 else 301
            headers = {"Location": "https://example.invalid/elsewhere", **fault.headers}
            self._send_html(status, f"{status} Moved Permanently", headers)
        elif fault.kind == "reset":
            self._send_reset()
        elif fault.kind == "huge":
            self._send_huge(fault.size)
        else:
            status = 200 if fault.status == 200 else 400
            self._send_json(status, dict(TASK_NOT_EXIST_BODY), fault.headers)
        return True

    def _default_error_body(self, status: int) -> str:
        if status in PROXY_ERROR_STATUSES:
            return proxy_error_page(status)
        message, code = default_error_message(status)
        return error_envelope(message, code=code, request_id=self.fake._request_id())

    def _send_reset(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_RESET_BODY)))
        self.end_headers()
        self.wfile.write(_RESET_BODY[: len(_RESET_BODY) // 2])
        self.close_connection = True
        _shutdown(self.connection)

    def _send_huge(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # Looks like the start of a feed answer, so only a size limit can save the client.
        prefix = b'{"code": "success", "message": "", "data": {"padding": "'
        suffix = b'"}}'
        try:
            if size < len(prefix) + len(suffix):
                self._write_chunk((prefix + suffix)[:size])
            else:
                self._write_chunk(prefix)
                remaining = size - len(prefix) - len(suffix)
                filler = b"x" * _CHUNK_SIZE
                while remaining > 0:
                    self._write_chunk(filler[: min(remaining, _CHUNK_SIZE)])
                    remaining -= _CHUNK_SIZE
                self._write_chunk(suffix)
            self.wfile.write(b"0\r\n\r\n")
        except ConnectionError:
            # A client that stops reading is what this fault is for.
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    # Plain answers ----------------------------------------------------------------------------

    def _send_unauthorized(self) -> None:
        # The envelope never echoes the key that was sent.
        self._send_error(401, "Invalid token", code="")

    def _send_error(self, status: int, message: str, *, code: str) -> None:
        body = error_envelope(message, code=code, request_id=self.fake._request_id())
        self._send(status, body.encode(), "application/json")

    def _send_method_not_allowed(self, *, allow: str = "POST") -> None:
        self._send_html(405, "405 Not Allowed", {"Allow": allow})

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_html(self, status: int, title: str, headers: dict[str, str] | None = None) -> None:
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        self._send(status, page.encode(), "text/html", headers)

    def _send_text(self, status: int, text: str, headers: dict[str, str]) -> None:
        is_html = text.lstrip().startswith("<")
        # surrogatepass: a lone surrogate in a scripted body goes out as its (invalid) UTF-8
        # bytes, as a broken server would send it.
        body = text.encode("utf-8", errors="surrogatepass")
        self._send(status, body, "text/html" if is_html else "application/json", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        overridden = {name.lower() for name in extra}
        self.send_response(status)
        if "content-type" not in overridden:
            self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            # The framing is ours: a wrong length would desynchronise the keep-alive connection.
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)


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

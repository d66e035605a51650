"""A fake CometAPI: a real HTTP server that speaks the Runway routes of COMETAPI.md.

Host sites use it in their own tests (through the pytest plugin) and for local work (the
``runway_fakeapi`` management command). It imports nothing from Django, so it runs without
settings.

:class:`FakeCometAPI` is composed of one part per module, all sharing the server's one lock:

- :mod:`.state`: the tasks and the scripts they follow (``TaskScripting``);
- :mod:`.faults`: fault injection and ``fault_rate`` (``FaultInjection``);
- :mod:`.recording`: the requests recorded and the callbacks sent (``Recording``);
- :mod:`.handler` (with :mod:`.answers`): the HTTP server and its request handler.

This module adds the server's life cycle, and keeps the public names it always offered (the
record types, the route constants, ``Fault``, ``TaskScript``, ``FakeClock``) importable from
here.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from types import TracebackType
from typing import Final

from .clock import FakeClock
from .faults import RANDOM_FAULTS, FaultInjection
from .handler import CREATE_ROUTES, FEED_PATH, REQUIRED_FIELDS, FakeHTTPServer, RequestHandler
from .recording import CallbackDelivery, CreateRequest, FeedCall, OutputRequest, Recording
from .scripts import Fault, TaskScript
from .tasks import OUTPUTS_PREFIX

__all__ = [
    "CREATE_ROUTES",
    "CREATE_STYLES",
    "FEED_PATH",
    "OUTPUTS_PREFIX",
    "RANDOM_FAULTS",
    "REQUIRED_FIELDS",
    "CallbackDelivery",
    "CreateRequest",
    "FakeClock",
    "FakeCometAPI",
    "FakeHTTPServer",
    "Fault",
    "FeedCall",
    "OutputRequest",
    "RequestHandler",
    "TaskScript",
]

CREATE_STYLES: Final = ("documented", "older")


class FakeCometAPI(Recording, FaultInjection):
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
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._callback_thread: threading.Thread | None = None
        self._stop_callbacks = threading.Event()
        self._request_ids = itertools.count(1)
        self._active_requests = 0
        self._forget_everything()

    def _forget_everything(self) -> None:
        self._forget_tasks()
        self._forget_faults()
        self._forget_records()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<FakeCometAPI {where}>"

    # Life cycle -------------------------------------------------------------------------------

    def start(self) -> FakeCometAPI:
        """Bind (a free port when ``port=0``) and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("This FakeCometAPI is already running; stop() it first.")
        server = FakeHTTPServer((self.host, self.port), fake=self)
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

    def reset(self) -> None:
        """Forget tasks, scripts queued or registered, faults, recorded calls and callbacks."""
        with self._lock:
            self._forget_everything()

    def _request_id(self) -> str:
        stamp = dt.datetime.fromtimestamp(self.now(), tz=dt.UTC).strftime("%Y%m%d%H%M%S")
        return f"{stamp}{next(self._request_ids):09d}"

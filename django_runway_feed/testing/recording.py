"""What the fake CometAPI records, and the callbacks it sends.

:class:`Recording` is the part of :class:`~django_runway_feed.testing.FakeCometAPI` that keeps
every request it answered (:class:`FeedCall`, :class:`CreateRequest`, :class:`OutputRequest`),
how many it answered at once, and the callbacks it delivered (:class:`CallbackDelivery`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import requests

from .state import TaskScripting
from .tasks import OUTPUTS_PREFIX, TERMINAL_PHASES, legacy_record

logger = logging.getLogger(__name__)


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


class Recording(TaskScripting):
    """The requests answered and the callbacks sent, for tests to look at."""

    # Set by FakeCometAPI.__init__ (kept across a reset) and by start().
    _active_requests: int
    _stop_callbacks: threading.Event

    def _forget_records(self) -> None:
        """Forget the recorded requests and callbacks (the caller holds the lock)."""
        self._feed_calls: list[FeedCall] = []
        self._create_requests: list[CreateRequest] = []
        self._callbacks_claimed: set[str] = set()
        self._callback_deliveries: list[CallbackDelivery] = []
        self._output_requests: list[OutputRequest] = []
        # Requests in flight during a reset() still leave, so the count itself is kept.
        self._max_concurrent_requests = getattr(self, "_active_requests", 0)

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

    def output_requests(self, task_id: str | None = None) -> list[OutputRequest]:
        """Requests for output files so far (for one task when ``task_id`` is given)."""
        with self._lock:
            requests_ = list(self._output_requests)
        if task_id is None:
            return requests_
        prefix = f"{OUTPUTS_PREFIX}{task_id}"
        return [r for r in requests_ if r.path.startswith(prefix)]

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

    def _record_output_request(self, request: OutputRequest) -> None:
        with self._lock:
            self._output_requests.append(request)

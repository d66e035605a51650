"""Hard deadlines for HTTP exchanges: a watchdog cuts a connection off when its time is up.

``requests`` (through ``http.client``) applies its read timeout to each ``recv``, not to the
whole answer: a server that sends one byte of the headers, or of the body, every half second
holds a request for as long as it likes. Checking the clock between reads does not help while
``http.client`` is inside one read of the status line or the headers.

So every request of the API client and of the downloader runs inside a :func:`deadline`. The
connections it uses (through :class:`DeadlineAdapter`'s connection classes) register with it,
and one watchdog thread per process shuts their sockets down when the deadline passes. A
shut-down socket makes any blocked or later ``recv`` return end-of-file at once, so the request
ends within moments of its deadline, however the server trickles. The caller then asks
:attr:`Deadline.expired` and reports "too slow" rather than whatever half answer the cut left.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

logger = logging.getLogger(__name__)

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "runway_feed_deadline", default=None
)


class Deadline:
    """The end of one exchange (a monotonic time) and the connections it must cut then."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + max(0.0, seconds)
        self.expired = False
        self.closed = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._sockets: list[socket.socket] = []

    def __repr__(self) -> str:
        return f"<Deadline {self.seconds:g} s{' expired' if self.expired else ''}>"

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def passed(self) -> bool:
        """Whether the deadline has passed (whether or not the watchdog has fired yet)."""
        return self.expired or self.remaining() <= 0

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            # The socket too: on a "Connection: close" answer http.client drops the
            # connection's reference to it while the body is still read through it.
            sock = getattr(connection, "sock", None)
            if sock is not None and sock not in self._sockets:
                self._sockets.append(sock)
            expired = self.expired
        if expired:
            self._cut_all()

    def expire(self) -> None:
        """Cut every watched connection (the watchdog calls this at the deadline)."""
        with self._lock:
            if self.closed:
                return
            self.expired = True
        self._cut_all()

    def close(self) -> None:
        """No cut from now on: the exchange is over and its connection may serve another."""
        with self._lock:
            self.closed = True

    def _cut_all(self) -> None:
        # Under the lock, so that once close() returns no cut can still be on its way.
        with self._lock:
            if self.closed:
                return
            sockets = [getattr(connection, "sock", None) for connection in self._connections]
            sockets.extend(self._sockets)
            for sock in sockets:
                if sock is not None:
                    _cut(sock)


def _cut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its SSL object
    # under the thread that is reading with it. Shutting the descriptor down wakes that reader
    # with end-of-file; close() from another thread would not. An error means it is closed
    # already, and nothing is waiting on it.
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process that runs callbacks at monotonic times."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._run, name="runway-feed-deadlines", daemon=True)
        self._thread.start()

    def arm(self, at: float, callback: Callable[[], None]) -> int:
        with self._condition:
            handle = next(self._counter)
            heapq.heappush(self._heap, (at, handle, callback))
            self._condition.notify()
            return handle

    def cancel(self, handle: int) -> None:
        with self._condition:
            self._cancelled.add(handle)

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._condition.wait()
                    continue
                at, _handle, callback = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
            try:
                callback()
            except Exception:
                # A failed cut must not stop the watchdog for every other request.
                logger.exception("A request deadline could not be enforced")


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _get_watchdog() -> _Watchdog:
    global _watchdog
    dog = _watchdog
    # A forked worker (django-q2's) inherits the object but not the thread: start its own.
    if dog is None or dog._pid != os.getpid() or not dog._thread.is_alive():
        with _watchdog_lock:
            dog = _watchdog
            if dog is None or dog._pid != os.getpid() or not dog._thread.is_alive():
                dog = _watchdog = _Watchdog()
    return dog


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every HTTP exchange made in this block (by a :class:`DeadlineAdapter`'s session, in
    this thread) to ``seconds`` in all, headers and body included."""
    bound = Deadline(seconds)
    token = _current.set(bound)
    dog = _get_watchdog()
    handle = dog.arm(bound.expires, bound.expire)
    try:
        yield bound
    finally:
        bound.close()
        dog.cancel(handle)
        _current.reset(token)


def _watch_current(connection: HTTPConnection) -> None:
    bound = _current.get()
    if bound is not None:
        bound.watch(connection)


class _Watched(HTTPConnection):
    """Puts the connection under the current deadline before it connects or sends."""

    def connect(self) -> None:
        _watch_current(self)
        super().connect()
        _watch_current(self)  # now with its socket

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_current(self)
        super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _watch_pools(manager: PoolManager) -> None:
    # urllib3 builds each pool from this per-manager table. Only the stock classes are
    # swapped: a SOCKS manager's pools keep their own (and go unwatched).
    classes = manager.pool_classes_by_scheme
    if classes.get("http") is HTTPConnectionPool and classes.get("https") is HTTPSConnectionPool:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections obey the :func:`deadline` around each request."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager


__all__ = ["Deadline", "DeadlineAdapter", "deadline"]

"""A manual clock for the fake CometAPI server."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """A manual clock: time stands still until :meth:`advance` or :meth:`set` is called.

    Pass one to :class:`~django_runway_feed.testing.FakeCometAPI` and every fake task moves
    through its script as the clock moves, without a test ever sleeping. The same clock's
    :meth:`now` can be handed to the code under test so both sides agree on the time.
    """

    def __init__(self, start: float | None = None) -> None:
        """Start at ``start`` (unix seconds), or at the real time of creation."""
        self._now = time.time() if start is None else float(start)
        # The server reads the clock from its handler threads while a test advances it.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeClock({self.now()!r})"

    def now(self) -> float:
        """The current time in unix seconds."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError(f"A clock only moves forward; use set() to go back ({seconds=}).")
        with self._lock:
            self._now += seconds

    def set(self, timestamp: float) -> None:
        """Jump to ``timestamp`` (unix seconds), forward or back."""
        with self._lock:
            self._now = float(timestamp)

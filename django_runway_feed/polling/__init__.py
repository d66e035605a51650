"""Polling: claim due tasks, ask the feed concurrently, apply the answers, reschedule.

The package's modules, from the top: :mod:`.poller` (the :class:`Poller` and its runs),
:mod:`.rounds` (one round), then the steps of a round, :mod:`.applying`, :mod:`.holds` and
:mod:`.heartbeat` above :mod:`.claiming` and :mod:`.fetching`, and :mod:`.summary` at the base.
The names below are the package's own import path; the modules are internal.
"""

from __future__ import annotations

from .fetching import LEASE_MARGIN_SECONDS, NotSent
from .heartbeat import record_heartbeat
from .holds import AUTH_PAUSE_SECONDS, STORM_MIN_RATE_LIMITED
from .poller import Poller
from .summary import Clock, PollSummary

__all__ = [
    "AUTH_PAUSE_SECONDS",
    "LEASE_MARGIN_SECONDS",
    "STORM_MIN_RATE_LIMITED",
    "Clock",
    "NotSent",
    "PollSummary",
    "Poller",
    "record_heartbeat",
]

"""Gateway health: how many answers failed across every worker in the last minute (pure parts).

A 5xx, a timeout or a body that cannot be read says little about the one task it answered:
it is the gateway's trouble. Each poller counts its answers and those failures and hands them
to the shared request budget with its next compare-and-set (no query of its own); every round
reads them back with the shared state it reads anyway. When most answers of the last minute
failed, the first worker to notice holds the budget for every worker (see
:meth:`~django_runway_feed.budget.RequestBudget.hold`), once, and a fresh minute starts after
the hold: the first rounds after it are the probe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .conf import conf
from .exceptions import InvalidResponseError, RateLimitedError, TransientAPIError

# The window the error share is measured over.
WINDOW_SECONDS = 60.0
# Fewer answers than this in the window prove nothing either way.
MIN_ANSWERS = 10
# The share of failed answers at which the gateway is in trouble and every worker holds.
TROUBLE_SHARE = 0.5


def is_gateway_error(result: object) -> bool:
    """Whether a poll's result is the gateway's failure (5xx, timeout, unreadable body).

    429 is not: the API asked to slow down, which the storm rule handles with its Retry-After.
    """
    return isinstance(result, TransientAPIError | InvalidResponseError) and not isinstance(
        result, RateLimitedError
    )


def hold_seconds() -> float:
    """How long every worker holds when the gateway is in trouble: half of
    ``MAX_POLL_INTERVAL`` (no task would wait much longer between two polls anyway), at least
    ``POLL_INTERVAL``."""
    return max(conf.POLL_INTERVAL, conf.MAX_POLL_INTERVAL / 2)


@dataclass(frozen=True)
class GatewayReport:
    """One poller's answers not yet counted in the shared window; ``at`` is the epoch second
    of the latest (a report older than the window's start, such as one from before a hold,
    is dropped)."""

    answers: int = 0
    errors: int = 0
    at: float = 0.0

    def __bool__(self) -> bool:
        return self.answers > 0

    def add(self, answers: int, errors: int, at: float) -> GatewayReport:
        return GatewayReport(self.answers + answers, self.errors + errors, max(self.at, at))


@dataclass(frozen=True)
class GatewayHealth:
    """The shared window as read from the poller's state row."""

    answers: int = 0
    errors: int = 0
    window_start: float = 0.0

    def current(self, now: float) -> GatewayHealth:
        """This window, or an empty one when it is over (or starts after ``now``: a hold)."""
        if not self.window_start <= now < self.window_start + WINDOW_SECONDS:
            return GatewayHealth(window_start=self.window_start)
        return self

    @property
    def error_share(self) -> float:
        return self.errors / self.answers if self.answers else 0.0

    @property
    def in_trouble(self) -> bool:
        return self.answers >= MIN_ANSWERS and self.error_share >= TROUBLE_SHARE


def describe(
    health: GatewayHealth, held_until: dt.datetime | None, *, now: dt.datetime
) -> dict[str, Any]:
    """The gateway's state for ``runway_status --json`` and the admin summary.

    ``health`` is the stored window (read at ``now``); ``held_until`` the end of the last hold
    gateway trouble caused, kept only while it lasts.
    """
    window = health.current(now.timestamp())
    held = held_until if held_until is not None and held_until > now else None
    return {
        "window_seconds": WINDOW_SECONDS,
        "answers": window.answers,
        "errors": window.errors,
        "error_share": round(window.error_share, 3),
        "trouble": window.in_trouble or held is not None,
        "held_until": held,
    }


__all__ = [
    "MIN_ANSWERS",
    "TROUBLE_SHARE",
    "WINDOW_SECONDS",
    "GatewayHealth",
    "GatewayReport",
    "describe",
    "hold_seconds",
    "is_gateway_error",
]

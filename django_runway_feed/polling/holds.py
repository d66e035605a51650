"""What stops every worker from polling: the 401/403 pause, 429 storms and gateway trouble.

The pause lives in the shared ``PollerState`` row, tied to the settings it was for, so a
changed API key lifts it at once. A storm (most of a round's answers are 429) and a gateway in
trouble hold the shared request budget instead (:mod:`django_runway_feed.budget`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

from ..budget import RequestBudget
from ..exceptions import RateLimitedError
from ..gateway import GatewayHealth
from ..models import PollerState
from ..pause import settings_fingerprint
from ..planning import MAX_BACKOFF_SECONDS, error_backoff

logger = logging.getLogger(__name__)

# 401/403 pause every worker this long (the site may fix the key or top up meanwhile).
AUTH_PAUSE_SECONDS = 300.0
# A round in which at least this many answers, and at least half of them, are 429 is a storm:
# the whole budget is held (no request for any task) for the longest Retry-After seen.
STORM_MIN_RATE_LIMITED = 3


class SharedState(NamedTuple):
    """What a round reads of the shared ``PollerState`` row before it starts."""

    # The end of the pause in effect, or None.
    paused_until: dt.datetime | None
    # The shared request budget's state (``budget_tat``), None without the row.
    budget_tat: float | None
    gateway: GatewayHealth
    # The callback state every worker agreed on; None without the row.
    callbacks_state: str | None


def read_shared_state(now: dt.datetime) -> SharedState:
    """Read the shared row in one query; lifts a pause recorded for other settings."""
    row = (
        PollerState.objects.filter(pk=1)
        .values_list(
            "paused_until",
            "pause_fingerprint",
            "budget_tat",
            "gateway_answers",
            "gateway_errors",
            "gateway_window_start",
            "callbacks_state",
        )
        .first()
    )
    if row is None:
        return SharedState(None, None, GatewayHealth(), None)
    until, fingerprint, tat, answers, errors, window_start, callbacks_state = row
    gateway = GatewayHealth(answers, errors, window_start)
    if until is None or until <= now:
        return SharedState(None, tat, gateway, callbacks_state)
    if fingerprint and fingerprint != settings_fingerprint():
        lifted = PollerState.objects.filter(pk=1, pause_fingerprint=fingerprint).update(
            paused_until=None, pause_reason="", pause_fingerprint=""
        )
        if lifted:
            logger.warning("RUNWAY_FEED's API_KEY or BASE_URL changed: polling pause lifted")
        return SharedState(None, tat, gateway, callbacks_state)
    return SharedState(until, tat, gateway, callbacks_state)


def pause_polling(error: Exception, *, now: dt.datetime) -> None:
    """Pause every worker for ``AUTH_PAUSE_SECONDS``: CometAPI refused the key (401/403)."""
    until = now + dt.timedelta(seconds=AUTH_PAUSE_SECONDS)
    values = {
        "paused_until": until,
        "pause_reason": str(error)[:500],
        "pause_fingerprint": settings_fingerprint(),
    }
    # A longer pause for the same settings stands; one for other settings is replaced.
    updated = (
        PollerState.objects.filter(pk=1)
        .exclude(paused_until__gte=until, pause_fingerprint=values["pause_fingerprint"])
        .update(**values)
    )
    if not updated:
        PollerState.objects.get_or_create(pk=1, defaults=values)
    logger.error("CometAPI refused the key; polling paused until %s: %s", until, error)


def is_storm(limited: list[RateLimitedError], answered: int) -> bool:
    """Whether a round with ``answered`` answers, ``limited`` of them 429, is a storm."""
    return len(limited) >= STORM_MIN_RATE_LIMITED and 2 * len(limited) >= answered


def hold_for_storm(budget: RequestBudget, limited: list[RateLimitedError]) -> None:
    """Hold the whole budget for the longest Retry-After of a storm (a backoff without one)."""
    asked = [error.retry_after for error in limited if error.retry_after is not None]
    delay = max(asked) if asked else error_backoff(1)
    budget.hold(min(delay, MAX_BACKOFF_SECONDS))

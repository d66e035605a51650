"""The request budget every worker shares: ``MAX_REQUESTS_PER_SECOND``, kept in the database.

The budget is a GCRA (generic cell rate algorithm) over one number, ``PollerState.budget_tat``:
the "theoretical arrival time", in epoch seconds, of the next request. Granting ``n`` requests
moves it ``n / rate`` seconds forward; a grant is allowed while it stays within one burst
(``rate`` requests, one second's worth) of now. Every change is a compare-and-set
(``UPDATE ... WHERE budget_tat = <value read>``), so any number of workers on any number of hosts
share one budget without locks, and none ever waits on another: a round that gets fewer
requests than it wants sends what it got and leaves the rest due for a later round.

While the workers' clocks agree, whatever the interleaving, the requests granted between two
instants ``t0`` and ``t`` never exceed ``rate * (t - t0) + burst``: each grant raises
``budget_tat`` by exactly its cost and is refused once ``budget_tat`` would pass
``now + burst / rate``.

The same number also carries a *hold* (a 429 storm: the API asked everybody to wait): while
``budget_tat`` is in the future beyond one burst, nothing is granted, with or without a rate.

Time is wall time, so the bound above assumes the workers' clocks agree. A ``budget_tat`` further
ahead than any grant or hold can put it (one burst plus ``MAX_HOLD_SECONDS``) was written by a
clock that ran ahead, or this host's clock has since stepped back; it is treated as stale and the
budget starts afresh from now, rather than stalling every worker until the clocks meet again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Case, F, FloatField, PositiveIntegerField, Q, Value, When

from .conf import conf
from .gateway import WINDOW_SECONDS, GatewayReport
from .models import PollerState

logger = logging.getLogger(__name__)

# A compare-and-set lost this many times in a row (other workers granted meanwhile) means the
# budget is contended: send nothing this round rather than spin.
CAS_ATTEMPTS = 4
# How soon a round that lost every compare-and-set looks again.
CONTENDED_RETRY = 0.05
# The longest hold: a longer one is clamped, and a ``budget_tat`` beyond it is a clock's error.
MAX_HOLD_SECONDS = 600.0


@dataclass(frozen=True)
class Grant:
    """How many requests may start now, and when to ask again if that is fewer than wanted."""

    granted: int
    retry_in: float = 0.0
    # Whether the gateway report handed to reserve() was stored with the grant.
    reported: bool = False


def report_values(report: GatewayReport, now: float) -> dict[str, Any]:
    """The column updates that add ``report`` to the shared gateway window, in one statement.

    A window over (older than ``WINDOW_SECONDS``) starts afresh with the report; a report older
    than the window's start (its answers came before a hold) is dropped.
    """
    over = Q(gateway_window_start__lte=now - WINDOW_SECONDS)
    stale = Q(gateway_window_start__gt=report.at)

    def column(name: str, value: int) -> Case:
        return Case(
            When(over, then=Value(value)),
            When(stale, then=F(name)),
            default=F(name) + value,
            output_field=PositiveIntegerField(),
        )

    return {
        "gateway_window_start": Case(
            When(over, then=Value(now)),
            default=F("gateway_window_start"),
            output_field=FloatField(),
        ),
        "gateway_answers": column("gateway_answers", report.answers),
        "gateway_errors": column("gateway_errors", report.errors),
    }


class RequestBudget:
    """The shared budget of ``rate`` requests per second (``None``: unlimited, holds only).

    ``burst`` is how many requests may start at once after a quiet spell (default: one second's
    worth, at least 1). ``now`` returns epoch seconds (wall time by default: every worker on
    every host must agree on it).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be a positive number or None; got {rate!r}.")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else (rate or 1.0))
        self.now = now

    @classmethod
    def from_settings(cls, *, now: Callable[[], float] = time.time) -> RequestBudget:
        return cls(conf.MAX_REQUESTS_PER_SECOND, now=now)

    def __repr__(self) -> str:
        return f"<RequestBudget rate={self.rate} burst={self.burst:g}>"

    @property
    def interval(self) -> float:
        """Seconds of budget one request costs (0 without a rate)."""
        return 1.0 / self.rate if self.rate else 0.0

    @property
    def tolerance(self) -> float:
        """How far ahead of now ``budget_tat`` may run: one burst."""
        return self.burst * self.interval

    def _read(self) -> float:
        value = PollerState.objects.filter(pk=1).values_list("budget_tat", flat=True).first()
        if value is None:
            PollerState.objects.get_or_create(pk=1)
            return 0.0
        return float(value)

    def _in_effect(self, tat: float, now: float) -> float:
        """``tat``, or ``now`` when it lies further ahead than any grant or hold can put it."""
        return now if tat > now + self.tolerance + MAX_HOLD_SECONDS else tat

    def _evaluate(self, tat: float, now: float, wanted: int) -> tuple[int, float, float]:
        """(granted, new tat, seconds until the next request could be granted)."""
        tat = self._in_effect(tat, now)
        if not self.rate:
            if tat > now:  # a hold
                return 0, tat, tat - now
            return wanted, tat, 0.0
        base = max(tat, now)
        allowed = math.floor((now + self.tolerance - base) / self.interval + 1e-9)
        granted = max(0, min(wanted, allowed))
        if granted:
            return granted, base + granted * self.interval, 0.0
        return 0, tat, max(0.0, base + self.interval - self.tolerance - now)

    def available(self, wanted: int, *, tat: float | None = None) -> Grant:
        """How many of ``wanted`` requests the budget would grant now (reserves nothing).

        ``tat`` is ``PollerState.budget_tat`` when the caller has just read it (saves a query).
        """
        granted, _tat, retry_in = self._evaluate(
            self._read() if tat is None else tat, self.now(), wanted
        )
        return Grant(granted, retry_in)

    def reserve(
        self, wanted: int, *, tat: float | None = None, report: GatewayReport | None = None
    ) -> Grant:
        """Take up to ``wanted`` requests from the budget; the caller sends only that many.

        ``tat``, a value of ``budget_tat`` just read, is tried first; a stale one only costs a
        failed compare-and-set. ``report`` (the caller's answers since it last reported) rides
        along with the compare-and-set that takes the requests; ``Grant.reported`` says
        whether it was stored.
        """
        if wanted <= 0:
            return Grant(0)
        for attempt in range(CAS_ATTEMPTS):
            tat = self._read() if tat is None or attempt else tat
            now = self.now()
            granted, new_tat, retry_in = self._evaluate(tat, now, wanted)
            if not granted:
                return Grant(0, retry_in)
            if new_tat == tat:  # unlimited and not held: nothing to write
                return Grant(granted, reported=self.report(report))
            extra = report_values(report, now) if report else {}
            if PollerState.objects.filter(pk=1, budget_tat=tat).update(budget_tat=new_tat, **extra):
                return Grant(granted, reported=bool(report))
        return Grant(0, CONTENDED_RETRY)

    def report(self, report: GatewayReport | None) -> bool:
        """Add ``report`` to the shared gateway window on its own (one UPDATE, when non-empty).

        For when no compare-and-set carries it: an unlimited budget, the end of a run.
        """
        if not report:
            return False
        values = report_values(report, self.now())
        if not PollerState.objects.filter(pk=1).update(**values):
            PollerState.objects.get_or_create(pk=1)
            PollerState.objects.filter(pk=1).update(**values)
        return True

    def hold(self, seconds: float, *, gateway: bool = False) -> None:
        """Grant nothing to anybody for ``seconds`` from now: the API said to slow down.

        ``seconds`` is clamped to ``MAX_HOLD_SECONDS``; a longer hold already in effect stands.
        ``gateway``: the hold is for gateway trouble (most answers failed); it is recorded for
        the status displays, and the gateway window starts afresh when it ends.
        """
        seconds = min(max(seconds, 0.0), MAX_HOLD_SECONDS)
        for _attempt in range(CAS_ATTEMPTS):
            now = self.now()
            until = now + seconds + self.tolerance
            tat = self._read()
            if self._in_effect(tat, now) >= until:
                return
            extra: dict[str, Any] = {}
            if gateway:
                extra = {
                    "gateway_window_start": now + seconds,
                    "gateway_answers": 0,
                    "gateway_errors": 0,
                    "gateway_held_until": dt.datetime.fromtimestamp(now + seconds, tz=dt.UTC),
                }
            if PollerState.objects.filter(pk=1, budget_tat=tat).update(budget_tat=until, **extra):
                if gateway:
                    logger.warning(
                        "Most CometAPI answers of the last minute failed: no poll for %.0f s",
                        seconds,
                    )
                else:
                    logger.warning(
                        "CometAPI is rate limiting most requests: no poll for %.0f s", seconds
                    )
                return

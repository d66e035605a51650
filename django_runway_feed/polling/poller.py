"""The poller: claim due tasks, ask the feed concurrently, apply the answers, reschedule.

One :class:`Poller` lives for one run (a django-q2 job, a ``runway_poll`` invocation). A run is
made of rounds; each round

1. claims up to ``BATCH_SIZE`` due tasks under a lease with a fresh owner token
   (:mod:`.claiming`), so concurrent workers never take the same rows;
2. asks the feed about them concurrently on one pooled session, outside any transaction
   (:mod:`.fetching`);
3. writes the answers (:mod:`.applying`): rows without a status change in one bulk ``UPDATE``,
   each transition in its own small transaction together with its TaskEvent (the outbox),
   every write conditional on the lease (and, for transitions, on the status read), so a late
   or concurrent answer never overwrites newer state.

Between rounds it minds what holds every worker back (:mod:`.holds`): the 401/403 pause, 429
storms, a gateway in trouble, and the shared request budget. What each answer means (the next
status, the next poll time, a give-up) is decided by the pure functions of
:mod:`django_runway_feed.planning`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from functools import partial

from .. import outbox
from ..conf import conf
from ..gateway import GatewayReport
from . import claiming
from .heartbeat import record_heartbeat
from .rounds import RoundRunner, StartedRound, empty_round
from .summary import PollSummary


class Poller(RoundRunner):
    """Polls due tasks. Build one per run; :meth:`close` it (or use ``with``) when done."""

    def seconds_until_due(self, now: dt.datetime) -> float | None:
        """Seconds until the earliest pollable task is due (0 if one is due), None if none."""
        return claiming.seconds_until_due(now)

    def run(
        self,
        *,
        window: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_idle_sleep: float = 2.0,
        hand_back: Callable[[], bool] | None = None,
    ) -> PollSummary:
        """Keep polling due tasks for ``window`` seconds (``POLL_WINDOW``), then return.

        With ``window=0`` it runs rounds until nothing is due right now (for at most
        ``POLL_WINDOW`` seconds, so an overload cannot pin it). While one batch is being written
        the next is already claimed and its requests queued, so the HTTP pool never idles on the
        database nor on the last, partial wave of a batch.

        ``hand_back`` is asked whenever nothing is due; when it says so the run returns early,
        so that jobs queued behind it (result downloads, with a single worker) can run.
        """
        window = conf.POLL_WINDOW if window is None else window
        ends = time.monotonic() + (window or conf.POLL_WINDOW)
        self.stop_sending_at = ends
        total = PollSummary()
        self._guarded(lambda: outbox.sweep(now=self.clock()), 0)
        ahead: StartedRound | None = None
        while True:
            database_errors = self.database_errors
            current = ahead or self._guarded(self._start_round_unless_paused, empty_round())
            ahead = None
            if isinstance(current, StartedRound) and time.monotonic() < ends:
                following = self._guarded(self._start_round_unless_paused, empty_round())
                ahead = following if isinstance(following, StartedRound) else None
            summary = self._guarded(partial(self._finish_round, current), PollSummary(rounds=1))
            total.add(summary)
            if ahead is not None:
                continue
            remaining = ends - time.monotonic()
            if self.database_errors > database_errors and remaining > 0:
                # Give a restarting database (or a busy SQLite writer) a moment.
                sleep(min(max_idle_sleep, remaining))
                continue
            if remaining <= 0 or (window == 0 and not summary.claimed and not summary.throttled):
                break
            if window == 0 and summary.throttled and self.budget_retry_in > max_idle_sleep:
                break  # a long hold (a 429 storm): a one-off run does not sit it out
            if summary.throttled and not summary.claimed:
                # The budget is spent: wait (briefly) for it rather than spin on the database.
                sleep(min(max(self.budget_retry_in, 0.01), max_idle_sleep, remaining))
                continue
            if window == 0 or summary.claimed:
                continue
            if hand_back is not None and not summary.paused and self._guarded(hand_back, False):
                break
            wait = (
                None
                if summary.paused
                else self._guarded(lambda: self.seconds_until_due(self.clock()), None)
            )
            wait = max_idle_sleep if wait is None else min(max(wait, 0.2), max_idle_sleep)
            sleep(min(wait, remaining))
        self.stop_sending_at = None
        self._guarded(lambda: record_heartbeat(total, now=self.clock()), None)
        if self._guarded(lambda: self.budget.report(self.gateway_report), False):
            self.gateway_report = GatewayReport()
        return total

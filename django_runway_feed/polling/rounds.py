"""One poll round: claim a batch, queue its requests, apply the answers.

:class:`RoundRunner` holds what a run keeps from round to round (the thread pool, the client,
the request budget, the gateway report, the run's hindsight) and runs single rounds; the
:class:`~django_runway_feed.polling.poller.Poller` adds the run, rounds for a window. Each step
is one of the modules below: :mod:`.claiming`, :mod:`.fetching`, :mod:`.applying`, and
:mod:`.holds` for what holds every worker back (the 401/403 pause, 429 storms, a gateway in
trouble).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self, TypeVar

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from ..budget import RequestBudget
from ..client import CometAPIClient
from ..conf import conf
from ..exceptions import RateLimitedError
from ..gateway import GatewayHealth, GatewayReport, hold_seconds, is_gateway_error
from ..history import Hindsight
from ..models import RunwayTask
from . import applying, claiming, fetching, holds
from .fetching import Answer, NotSent
from .summary import Clock, PollSummary

logger = logging.getLogger(__name__)

T = TypeVar("T")


def empty_round() -> StartedRound | PollSummary:
    return PollSummary(rounds=1)


@dataclass
class StartedRound:
    """A claimed batch whose requests are queued on the pool."""

    owner: str
    tasks: list[RunwayTask]
    futures: list[Future[Answer]]


class RoundRunner:
    """Runs poll rounds; the base of :class:`~django_runway_feed.polling.poller.Poller`."""

    def __init__(
        self,
        *,
        client: CometAPIClient | None = None,
        clock: Clock | None = None,
        concurrency: int | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self.concurrency = concurrency or conf.CONCURRENCY
        # Wall time by default, whatever ``clock`` says: every worker must agree on it.
        self.budget = budget or RequestBudget.from_settings()
        # Seconds until the budget could grant again, after a round it held back.
        self.budget_retry_in = 0.0
        # Answers (and the gateway's failures among them) not yet added to the shared window.
        self.gateway_report = GatewayReport()
        # What recent finishes say (callbacks arriving, run times), read now and then.
        self.hindsight = Hindsight()
        self.database_errors = 0
        self._own_client = client is None
        self.client = client or CometAPIClient(pool_size=self.concurrency)
        self.clock: Clock = clock or timezone.now
        self.worker_id = secrets.token_hex(6)
        self._rounds = 0
        # Set by run(): no request starts after this monotonic time.
        self.stop_sending_at: float | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="runway-feed"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._own_client:
            self.client.close()

    # -- the steps of a round ------------------------------------------------------------------

    def _new_owner(self) -> str:
        self._rounds += 1
        return f"{self.worker_id}:{self._rounds}"

    def claim(
        self,
        owner: str,
        *,
        now: dt.datetime,
        limit: int,
        task_ids: Iterable[int] | None = None,
        due_only: bool = True,
    ) -> list[RunwayTask]:
        """Lease up to ``limit`` due tasks to ``owner`` (:func:`.claiming.claim`)."""
        return claiming.claim(owner, now=now, limit=limit, task_ids=task_ids, due_only=due_only)

    def _send_deadline(self, lease_ends: float) -> float:
        return fetching.send_deadline(lease_ends, stop_sending_at=self.stop_sending_at)

    def _queue_fetches(
        self, tasks: list[RunwayTask], *, send: int | None = None, claimed_at: float | None = None
    ) -> list[Future[Answer]]:
        return fetching.queue_fetches(
            self._executor,
            self.client,
            tasks,
            send=len(tasks) if send is None else send,
            claimed_at=time.monotonic() if claimed_at is None else claimed_at,
            stop_sending_at=self.stop_sending_at,
        )

    def fetch(self, tasks: list[RunwayTask]) -> list[Answer]:
        """Ask the feed about ``tasks`` concurrently and wait for every answer."""
        return [future.result() for future in self._queue_fetches(tasks)]

    def apply(
        self, owner: str, tasks: list[RunwayTask], results: list[Answer], *, now: dt.datetime
    ) -> PollSummary:
        """Write the answers of a claimed batch; pause or hold the budget when they say so."""
        answered = sum(1 for result in results if not isinstance(result, NotSent))
        limited = [result for result in results if isinstance(result, RateLimitedError)]
        if answered:
            failed = sum(1 for result in results if is_gateway_error(result))
            self.gateway_report = self.gateway_report.add(answered, failed, self.budget.now())
        applied = applying.apply_answers(
            owner, tasks, results, now=now, hindsight=self.hindsight, clock=self.clock
        )
        if applied.refused is not None:
            holds.pause_polling(applied.refused, now=now)
            applied.summary.paused = True
        if holds.is_storm(limited, answered):
            holds.hold_for_storm(self.budget, limited)
        applying.write_quiet_rows(owner, tasks, applied, now=now, clock=self.clock)
        return applied.summary

    # -- rounds --------------------------------------------------------------------------------

    def paused_until(self, now: dt.datetime) -> dt.datetime | None:
        """When the 401/403 pause ends, or None; lifts a pause recorded for other settings."""
        return self._read_state(now)[0]

    def _read_state(
        self, now: dt.datetime
    ) -> tuple[dt.datetime | None, float | None, GatewayHealth]:
        """(end of the pause in effect, ``budget_tat``, the gateway window), in one query of
        the shared row."""
        state = holds.read_shared_state(now)
        if state.callbacks_state is not None:
            self.hindsight.agreed_state = state.callbacks_state
        return state.paused_until, state.budget_tat, state.gateway

    def run_round(
        self,
        *,
        limit: int | None = None,
        task_ids: Iterable[int] | None = None,
        due_only: bool = True,
        ignore_pause: bool = False,
    ) -> PollSummary:
        """Claim, fetch and apply one batch. Returns what it did."""

        def one_round() -> PollSummary:
            started = self._start_round_unless_paused(
                limit=limit, task_ids=task_ids, due_only=due_only, ignore_pause=ignore_pause
            )
            return self._finish_round(started)

        return self._guarded(one_round, PollSummary(rounds=1))

    def _guarded(self, step: Callable[[], T], fallback: T) -> T:
        """Run one database step of a round; a lost or locked database gives ``fallback``.

        The connection is closed so the next step opens a fresh one (after a dropped connection
        or a restarted server). Rows claimed by a round whose writes failed stay leased until
        their lease expires, then any worker polls them again.
        """
        try:
            return step()
        except (OperationalError, InterfaceError) as exc:
            self.database_errors += 1
            logger.warning("Database error in a poll round, treated as an empty round: %s", exc)
            if not connection.in_atomic_block:
                connection.close()
            return fallback

    def _start_round(
        self,
        *,
        now: dt.datetime,
        limit: int | None = None,
        task_ids: Iterable[int] | None = None,
        due_only: bool = True,
        budget_tat: float | None = None,
    ) -> StartedRound | PollSummary:
        """Claim a batch and queue its requests on the pool; a summary if nothing was claimed.

        ``budget_tat`` is the shared budget's state when the caller has just read it.
        """
        owner = self._new_owner()
        limit = limit or conf.BATCH_SIZE
        # The budget governs scheduled rounds; a poll of named tasks (an operator's, a callback's)
        # is one request someone asked for and is never held back.
        scheduled = task_ids is None
        if scheduled:
            available = self.budget.available(limit, tat=budget_tat)
            if not available.granted:
                self.budget_retry_in = available.retry_in
                return PollSummary(rounds=1, throttled=1)
            limit = available.granted
        claimed_at = time.monotonic()
        tasks = self.claim(owner, now=now, limit=limit, task_ids=task_ids, due_only=due_only)
        if not tasks:
            return PollSummary(rounds=1)
        send = len(tasks)
        if scheduled:
            # Another worker may have spent the budget since the look above: send what is
            # granted; the rest are released untouched and stay due.
            grant = self.budget.reserve(len(tasks), tat=budget_tat, report=self.gateway_report)
            send = grant.granted
            self.budget_retry_in = grant.retry_in
            if grant.reported:
                self.gateway_report = GatewayReport()
        return StartedRound(
            owner, tasks, self._queue_fetches(tasks, send=send, claimed_at=claimed_at)
        )

    def _finish_round(self, started: StartedRound | PollSummary) -> PollSummary:
        """Wait for a started round's answers and apply them."""
        if isinstance(started, PollSummary):
            return started
        results = [future.result() for future in started.futures]
        summary = self.apply(started.owner, started.tasks, results, now=self.clock())
        summary.rounds = 1
        return summary

    def _start_round_unless_paused(
        self,
        *,
        limit: int | None = None,
        task_ids: Iterable[int] | None = None,
        due_only: bool = True,
        ignore_pause: bool = False,
    ) -> StartedRound | PollSummary:
        """Read the shared state once, then start a round unless a pause holds."""
        now = self.clock()
        paused, tat, gateway = self._read_state(now)
        if paused and not ignore_pause:
            return PollSummary(rounds=1, paused=True)
        if task_ids is None and gateway.current(self.budget.now()).in_trouble:
            # Most answers of the last minute failed, on every worker: hold them all, once
            # (the hold restarts the window, so the rounds after it are the probe).
            seconds = hold_seconds()
            self.budget.hold(seconds, gateway=True)
            self.budget_retry_in = seconds
            return PollSummary(rounds=1, throttled=1)
        return self._start_round(
            now=now, limit=limit, task_ids=task_ids, due_only=due_only, budget_tat=tat
        )

"""The poller: claim due tasks, ask the feed concurrently, apply the answers, reschedule.

One :class:`Poller` lives for one run (a django-q2 job, a ``runway_poll`` invocation). A run is
made of rounds; each round

1. claims up to ``BATCH_SIZE`` due tasks under a lease with a fresh owner token, in one short
   transaction (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, one conditional ``UPDATE``
   elsewhere), so concurrent workers never take the same rows;
2. asks the feed about them concurrently on one pooled session, outside any transaction;
3. writes the answers: rows without a status change in one bulk ``UPDATE``, each transition in
   its own small transaction together with its TaskEvent (the outbox), every write conditional
   on the lease (and, for transitions, on the status read), so a late or concurrent answer never
   overwrites newer state.

What each answer means (the next status, the next poll time, a give-up) is decided by the pure
functions of :mod:`django_runway_feed.planning`; this module claims, fetches and writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import outbox
from .budget import RequestBudget
from .cleaning import clean_text
from .client import CometAPIClient, request_seconds
from .conf import conf
from .dbfeatures import supports_update_returning
from .exceptions import (
    AuthenticationError,
    ForbiddenError,
    InvalidResponseError,
    RateLimitedError,
    RunwayFeedError,
    TransientAPIError,
    UnstorableAnswerError,
)
from .feed import FeedSnapshot, parse_feed
from .gateway import GatewayHealth, GatewayReport, hold_seconds, is_gateway_error
from .history import Hindsight
from .models import PollerState, RunwayTask
from .pause import settings_fingerprint
from .planning import MAX_BACKOFF_SECONDS, Plan, error_backoff, plan_error, plan_snapshot
from .statuses import TERMINAL_STATUSES
from .writes import DATABASE_TROUBLE, ROW_WRITE_ERRORS, bulk_write, statement_guard

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
T = TypeVar("T")

# 401/403 pause every worker this long (the site may fix the key or top up meanwhile).
AUTH_PAUSE_SECONDS = 300.0
# A round in which at least this many answers, and at least half of them, are 429 is a storm:
# the whole budget is held (no request for any task) for the longest Retry-After seen.
STORM_MIN_RATE_LIMITED = 3
# A request ends this long before its task's lease, for the time between reading the clock
# and writing the lease (and clocks that disagree a little).
LEASE_MARGIN_SECONDS = 0.5
# The answer is read this long before the lease ends, so that decoding and cleaning it (linear
# in its size, bounded by MAX_RESPONSE_BYTES: milliseconds, see benchmarks/bench_cleaning.py)
# also happen under the lease. An answer only ready after the lease ended is dropped unapplied.
HANDLING_MARGIN_SECONDS = 2.0


@dataclass
class PollSummary:
    """What a round or a run did; returned by jobs and printed by commands."""

    rounds: int = 0
    claimed: int = 0
    polled: int = 0
    transitions: int = 0
    errors: int = 0
    paused: bool = False
    # Rounds the request budget (MAX_REQUESTS_PER_SECOND, or a 429 storm) held back.
    throttled: int = 0

    def add(self, other: PollSummary) -> None:
        self.rounds += other.rounds
        self.claimed += other.claimed
        self.polled += other.polled
        self.transitions += other.transitions
        self.errors += other.errors
        self.paused = self.paused or other.paused
        self.throttled += other.throttled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotSent(Exception):
    """A request that was not sent: its lease or its run's window ran out first."""


def _empty_round() -> _Round | PollSummary:
    return PollSummary(rounds=1)


@dataclass
class _Round:
    """A claimed batch whose requests are queued on the pool."""

    owner: str
    tasks: list[RunwayTask]
    futures: list[Future[FeedSnapshot | Exception]]


class Poller:
    """Polls due tasks. Build one per run; :meth:`close` it (or use ``with``) when done."""

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

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._own_client:
            self.client.close()

    # -- claiming ------------------------------------------------------------------------------

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
        """Lease up to ``limit`` due tasks to ``owner``.

        ``task_ids`` restricts the claim to those rows; ``due_only=False`` takes them even
        before their next poll time (a manual poll), never from under another live lease.
        """
        expires = now + dt.timedelta(seconds=conf.LEASE_SECONDS)
        candidates = RunwayTask.objects.pollable().unleased(now)
        if task_ids is not None:
            candidates = candidates.filter(pk__in=list(task_ids))
        if due_only:
            candidates = candidates.filter(next_poll_at__lte=now)
        candidates = candidates.order_by("next_poll_at")
        if supports_update_returning():
            return self._claim_returning(candidates, owner, expires, limit)
        # A locked database (SQLite's "database is locked" under several writers) raises here;
        # the run's guard makes it an empty round and waits a moment before the next.
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic():
                ids = list(
                    candidates.select_for_update(skip_locked=True).values_list("pk", flat=True)[
                        :limit
                    ]
                )
                if ids:
                    RunwayTask.objects.filter(pk__in=ids).update(
                        lease_owner=owner, lease_expires_at=expires
                    )
        else:
            # The UPDATE re-checks every condition: atomic where writes are serialised, so a
            # row another worker took since the SELECT is not leased (nor read back) here.
            ids = list(candidates.values_list("pk", flat=True)[:limit])
            if ids:
                RunwayTask.objects.filter(pk__in=ids).pollable().unleased(now).update(
                    lease_owner=owner, lease_expires_at=expires
                )
        if not ids:
            return []
        # Read back by primary key: lease_owner has no index, and filtering on it alone scans
        # the whole table (most of a round's database time at a million rows).
        leased = RunwayTask.objects.filter(pk__in=ids, lease_owner=owner)
        return list(leased.order_by("next_poll_at"))

    def _claim_returning(
        self, candidates: QuerySet[RunwayTask], owner: str, expires: dt.datetime, limit: int
    ) -> list[RunwayTask]:
        """Lease and read the batch in one ``UPDATE ... RETURNING``, without a transaction.

        On PostgreSQL the candidates are locked (``FOR UPDATE SKIP LOCKED``) in a materialized
        CTE, so the statement leases exactly the rows it locked and two workers never take the
        same row; SQLite runs one statement at a time. Rows are found by the due index and
        written by primary key: nothing reads ``lease_owner``, which has no index.
        """
        meta = RunwayTask._meta
        quote = connection.ops.quote_name
        table = quote(meta.db_table)
        pk = f"{table}.{quote(str(meta.pk.column))}"
        chosen, params = (
            candidates.values("pk")[:limit].query.get_compiler(connection=connection).as_sql()
        )
        assignments = f"{quote('lease_owner')} = %s, {quote('lease_expires_at')} = %s"
        values = [owner, connection.ops.adapt_datetimefield_value(expires)]
        if connection.vendor == "postgresql":
            sql = (
                f"WITH claimed AS MATERIALIZED ({chosen} FOR UPDATE SKIP LOCKED) "  # noqa: S608
                f"UPDATE {table} SET {assignments} FROM claimed "
                f"WHERE {pk} = claimed.{quote('pk')} RETURNING {table}.*"
            )
            tasks = list(RunwayTask.objects.raw(sql, [*params, *values]))
        else:
            sql = f"UPDATE {table} SET {assignments} WHERE {pk} IN ({chosen}) RETURNING *"  # noqa: S608
            tasks = list(RunwayTask.objects.raw(sql, [*values, *params]))
        tasks.sort(key=lambda task: (task.next_poll_at or expires, task.pk))
        return tasks

    # -- fetching ------------------------------------------------------------------------------

    def _send_deadline(self, lease_ends: float) -> float:
        # A request takes at most request_seconds(), so one sent before this ends while the
        # lease still protects its row (E004: the lease is longer than a request; if it is not,
        # half the lease). Nothing is sent once the run's window is over, so a run lasts its
        # window plus one request.
        lease = conf.LEASE_SECONDS
        deadline = lease_ends - min(request_seconds(), lease / 2)
        if self.stop_sending_at is not None:
            deadline = min(deadline, self.stop_sending_at)
        return deadline

    def _fetch(self, task_id: str, deadline: float, lease_ends: float) -> FeedSnapshot | Exception:
        if time.monotonic() > deadline:
            return NotSent()
        try:
            # However the server trickles, the request ends before the lease does: another
            # worker may claim the task then, and two polls of one task must never overlap.
            answer = self.client.feed(task_id, until=lease_ends - HANDLING_MARGIN_SECONDS)
            snapshot = parse_feed(answer)
            if time.monotonic() > lease_ends:
                # Another worker may hold the task by now: its answer is the one that counts.
                raise TransientAPIError(
                    f"The answer about task {task_id} was ready only after its lease ended"
                )
            if snapshot.task_id != task_id:
                raise InvalidResponseError(
                    f"The feed answered about task {snapshot.task_id!r} instead of {task_id!r}"
                )
            return snapshot
        except RunwayFeedError as exc:
            return exc
        except Exception as exc:  # a bug must cost one task one poll, never the whole run
            logger.exception("Unexpected error while polling task %s", task_id)
            return exc

    def _queue_fetches(
        self,
        tasks: list[RunwayTask],
        *,
        send: int | None = None,
        claimed_at: float | None = None,
    ) -> list[Future[FeedSnapshot | Exception]]:
        """Queue the requests of the first ``send`` tasks (all by default); the rest get NotSent.

        ``claimed_at`` is the ``time.monotonic()`` just before the claim: the leases end
        ``LEASE_SECONDS`` after it (less a margin for the clock the claim used).
        """
        claimed_at = time.monotonic() if claimed_at is None else claimed_at
        lease_ends = claimed_at + conf.LEASE_SECONDS - LEASE_MARGIN_SECONDS
        deadline = self._send_deadline(lease_ends)
        send = len(tasks) if send is None else send
        futures = [
            self._executor.submit(self._fetch, str(task.task_id), deadline, lease_ends)
            for task in tasks[:send]
        ]
        for _task in tasks[send:]:
            unsent: Future[FeedSnapshot | Exception] = Future()
            unsent.set_result(NotSent())
            futures.append(unsent)
        return futures

    def fetch(self, tasks: list[RunwayTask]) -> list[FeedSnapshot | Exception]:
        """Ask the feed about ``tasks`` concurrently and wait for every answer."""
        return [future.result() for future in self._queue_fetches(tasks)]

    # -- applying ------------------------------------------------------------------------------

    def apply(
        self,
        owner: str,
        tasks: list[RunwayTask],
        results: list[FeedSnapshot | Exception],
        *,
        now: dt.datetime,
    ) -> PollSummary:
        summary = PollSummary(claimed=len(tasks))
        quiet: list[tuple[RunwayTask, Plan]] = []
        progressed: list[RunwayTask] = []
        refused: Exception | None = None
        # A row not written below (not sent, refused, a lost race) keeps its lease until released.
        left_leased = False
        answered = sum(1 for result in results if not isinstance(result, NotSent))
        limited = [result for result in results if isinstance(result, RateLimitedError)]
        if answered:
            failed = sum(1 for result in results if is_gateway_error(result))
            self.gateway_report = self.gateway_report.add(answered, failed, self.budget.now())
        outlook = self.hindsight.at(now)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, NotSent):
                left_leased = True  # released below, untouched: the next round polls it
                continue
            if isinstance(result, AuthenticationError | ForbiddenError):
                refused = result  # one pause per round, however many tasks saw it
                left_leased = True
                continue
            if isinstance(result, FeedSnapshot):
                plan = plan_snapshot(task, result, now=now, outlook=outlook)
                summary.polled += 1
                if plan.new_status in TERMINAL_STATUSES:
                    self.hindsight.noticed_finish(
                        task,
                        plan.fields.get("started_at", task.started_at),
                        plan.fields.get("finished_at"),
                    )
            else:
                plan = plan_error(task, result, now=now)
                summary.errors += int(plan.error)
                if plan.error:
                    logger.info("Polling task %s failed: %s", task.task_id, result)
            # update() and raw writes skip auto_now, so the row's change time is set here.
            plan.fields["updated_at"] = now
            if plan.new_status is None:
                quiet.append((task, plan))
            else:
                try:
                    moved = self._transition(
                        owner, task, plan, payload=getattr(result, "raw", None)
                    )
                except DATABASE_TROUBLE:
                    raise
                except ROW_WRITE_ERRORS as exc:
                    self._write_failed(owner, task, exc, now=now)
                    summary.errors += 1
                    left_leased = True  # the release below is the net under that write
                    continue
                if not moved:
                    left_leased = True
                    continue
                summary.transitions += 1
            if plan.progressed:
                task.progress = plan.fields["progress"]
                progressed.append(task)
        if refused is not None:
            self._pause(refused, now=now)
            summary.paused = True
        if len(limited) >= STORM_MIN_RATE_LIMITED and 2 * len(limited) >= answered:
            self._hold_for_storm(limited)
        not_written = self._write_quiet(owner, quiet, now=now)
        summary.errors += len(not_written)
        if left_leased or not_written:
            self._release(owner, [task.pk for task in tasks])
        for task in progressed:
            if task.pk not in not_written:
                outbox.send_progress(task)
        return summary

    def _write_quiet(
        self, owner: str, rows: list[tuple[RunwayTask, Plan]], *, now: dt.datetime
    ) -> set[int]:
        """One UPDATE per group for every row whose status did not change.

        Returns the rows whose write was refused; each of them got a recorded error instead.
        """
        not_written: set[int] = set()
        for error in (False, True):
            group = [(task, plan) for task, plan in rows if plan.error is error]
            if not group:
                continue
            names = {"poll_count", "error_count", "lease_owner", "lease_expires_at"}
            for _task, plan in group:
                names.update(plan.fields)
            for task, plan in group:
                for name, value in plan.fields.items():
                    setattr(task, name, value)
                # The lease makes this worker the only writer, so plain values are safe.
                task.poll_count += 1
                task.error_count = task.error_count + 1 if error else 0
                task.lease_owner, task.lease_expires_at = "", None
            tasks = [task for task, _plan in group]
            try:
                with statement_guard():
                    bulk_write(owner, tasks, sorted(names))
            except DATABASE_TROUBLE:
                raise
            except ROW_WRITE_ERRORS:
                # Some row's values were refused: row by row, so only that row's task pays.
                for task in tasks:
                    try:
                        with statement_guard():
                            bulk_write(owner, [task], sorted(names))
                    except DATABASE_TROUBLE:
                        raise
                    except ROW_WRITE_ERRORS as exc:
                        not_written.add(task.pk)
                        self._write_failed(owner, task, exc, now=now)
        return not_written

    def _write_failed(
        self, owner: str, task: RunwayTask, error: Exception, *, now: dt.datetime
    ) -> None:
        """Record that the database refused ``task``'s answer: an error, a later poll, no lease.

        What is written here is ours only (no value from the answer), so it cannot be refused
        for the same reason. Past ``TASK_TIMEOUT`` the task is given up, without the payload.
        """
        logger.warning(
            "Task %s: the database refused its poll result (%s)",
            task.task_id,
            type(error).__name__,
            # Not a database error: a value Python itself refused; keep where it came from.
            exc_info=not isinstance(error, DatabaseError),
        )
        detail = clean_text(str(error)).strip().splitlines()
        failure = UnstorableAnswerError(
            f"the database refused this answer ({type(error).__name__}"
            + (f": {detail[0]}" if detail else "")
            + "); the task is polled again later"
        )
        # The in-memory row holds the refused values: decide from what is stored.
        try:
            task.refresh_from_db()
        except RunwayTask.DoesNotExist:
            return  # deleted meanwhile (an operator): nothing left to record
        plan = plan_error(task, failure, now=now)
        plan.fields["updated_at"] = now
        if plan.new_status is not None:
            # A lost race or a refused give-up leaves the row to the caller's release.
            try:
                self._transition(owner, task, plan)
            except DATABASE_TROUBLE:
                raise
            except ROW_WRITE_ERRORS:
                logger.exception("Task %s: even its give-up could not be written", task.task_id)
            return
        try:
            with statement_guard():
                RunwayTask.objects.filter(pk=task.pk, lease_owner=owner).update(
                    **plan.fields,
                    poll_count=F("poll_count") + 1,
                    error_count=F("error_count") + 1,
                    lease_owner="",
                    lease_expires_at=None,
                )
        except DATABASE_TROUBLE:
            raise
        except ROW_WRITE_ERRORS:
            logger.exception("Task %s: even its error could not be recorded", task.task_id)

    def _transition(self, owner: str, task: RunwayTask, plan: Plan, *, payload: Any = None) -> bool:
        """Apply one status change and write its event, atomically; False if it lost a race."""
        previous = task.status
        new_status = plan.new_status
        assert new_status is not None
        values = {
            **plan.fields,
            "status": new_status,
            "poll_count": task.poll_count + 1,
            "error_count": 0,
            "lease_owner": "",
            "lease_expires_at": None,
        }
        with transaction.atomic():
            changed = RunwayTask.objects.filter(
                pk=task.pk, status=previous, lease_owner=owner
            ).update(**values)
            if not changed:
                logger.info("Task %s changed under us; dropping a stale answer", task.task_id)
                return False
            outbox.record_transition(
                task,
                previous=previous,
                status=new_status,
                progress=plan.fields.get("progress", task.progress),
                message=plan.message,
                payload=payload,
                now=plan.fields.get("last_polled_at") or self.clock(),
            )
        logger.info("Task %s: %s -> %s", task.task_id, previous, new_status)
        return True

    def _release(self, owner: str, task_pks: list[int]) -> None:
        # Rows not written this round (a pause, a lost race) become claimable again at once.
        # By primary key first: lease_owner alone has no index.
        RunwayTask.objects.filter(pk__in=task_pks, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None
        )

    def _hold_for_storm(self, limited: list[RateLimitedError]) -> None:
        asked = [error.retry_after for error in limited if error.retry_after is not None]
        delay = max(asked) if asked else error_backoff(1)
        self.budget.hold(min(delay, MAX_BACKOFF_SECONDS))

    def _pause(self, error: Exception, *, now: dt.datetime) -> None:
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

    # -- rounds and runs -----------------------------------------------------------------------

    def paused_until(self, now: dt.datetime) -> dt.datetime | None:
        """When the 401/403 pause ends, or None; lifts a pause recorded for other settings."""
        return self._read_state(now)[0]

    def _read_state(
        self, now: dt.datetime
    ) -> tuple[dt.datetime | None, float | None, GatewayHealth]:
        """(end of the pause in effect, ``budget_tat``, the gateway window), in one query of
        the shared row."""
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
            return None, None, GatewayHealth()
        until, fingerprint, tat, answers, errors, window_start, callbacks_state = row
        self.hindsight.agreed_state = callbacks_state
        gateway = GatewayHealth(answers, errors, window_start)
        if until is None or until <= now:
            return None, tat, gateway
        if fingerprint and fingerprint != settings_fingerprint():
            lifted = PollerState.objects.filter(pk=1, pause_fingerprint=fingerprint).update(
                paused_until=None, pause_reason="", pause_fingerprint=""
            )
            if lifted:
                logger.warning("RUNWAY_FEED's API_KEY or BASE_URL changed: polling pause lifted")
            return None, tat, gateway
        return until, tat, gateway

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
    ) -> _Round | PollSummary:
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
        return _Round(owner, tasks, self._queue_fetches(tasks, send=send, claimed_at=claimed_at))

    def _finish_round(self, started: _Round | PollSummary) -> PollSummary:
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
    ) -> _Round | PollSummary:
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

    def seconds_until_due(self, now: dt.datetime) -> float | None:
        """Seconds until the earliest pollable task is due (0 if one is due), None if none."""
        soonest = (
            RunwayTask.objects.pollable()
            .filter(next_poll_at__isnull=False)
            .order_by("next_poll_at")
            .values_list("next_poll_at", flat=True)
            .first()
        )
        if soonest is None:
            return None
        return max(0.0, (soonest - now).total_seconds())

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
        ahead: _Round | None = None
        while True:
            database_errors = self.database_errors
            current = ahead or self._guarded(self._start_round_unless_paused, _empty_round())
            ahead = None
            if isinstance(current, _Round) and time.monotonic() < ends:
                following = self._guarded(self._start_round_unless_paused, _empty_round())
                ahead = following if isinstance(following, _Round) else None
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


def record_heartbeat(summary: PollSummary, *, now: dt.datetime) -> None:
    """Store how the last run went in the single PollerState row."""
    values: dict[str, Any] = {"last_run_at": now, "last_run": summary.as_dict()}
    if summary.polled or not summary.errors:
        values["last_success_at"] = now
    if not PollerState.objects.filter(pk=1).update(**values):
        PollerState.objects.get_or_create(pk=1, defaults=values)

"""What a feed answer means for a task, and when to ask again: pure decisions, no I/O.

Each function takes the task's current state and the answer (or the error) and returns a
:class:`Plan`, the writes the answer asks for; the poller (:mod:`django_runway_feed.polling`)
applies it. Nothing here reads or writes the database, so these rules are tested without one.
A task is anything shaped like a ``RunwayTask`` row (:class:`TaskState`): this module does not
import the models.

What the past says about a task comes in an :class:`~django_runway_feed.outlook.Outlook`, read
by :mod:`django_runway_feed.history` from recently finished tasks: whether callbacks are
arriving (then polling is only a safety net) and how long tasks of the same profile ran (so
polls go where finishes are likely).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from .conf import conf
from .exceptions import (
    RateLimitedError,
    TaskNotVisibleError,
)
from .feed import FeedSnapshot
from .outlook import NO_OUTLOOK, CallbackVerdict, Outlook, RunTimes
from .statuses import TERMINAL_STATUSES, FailureCode, Status, is_forward

logger = logging.getLogger(__name__)


# A wrapper that says "success" before any output URL is visible is believed only after this
# long: the URL usually follows within a poll or two (COMETAPI.md, "Status vocabularies").
SUCCESS_WITHOUT_OUTPUT_GRACE = 30.0
# Upper bound for a server's Retry-After (and for error backoff, see below).
MAX_BACKOFF_SECONDS = 600.0
# A task's own error backoff stays within this many MAX_POLL_INTERVALs: an error from the
# gateway says little about one task, and sustained trouble is handled for every task at once
# (django_runway_feed.gateway), so no task is parked for minutes after a run of bad luck.
ERROR_BACKOFF_MAX_INTERVALS = 2.0
# Errors in a row retried after POLL_INTERVAL before the backoff starts doubling. Under random
# gateway faults most streaks are this short, and each retry is what ends the wait of a task
# that has finished (measured in benchmarks/bench_storm.py).
ERROR_RETRIES_AT_INTERVAL = 2
GROWTH = 1.5
JITTER = 0.1
# Runway renders a clip in seconds to a few minutes. While a task runs with no progress rate to
# aim with (coarse progress: 0 %, 30 %, 100 %), its finish could come at any poll, so the
# spacing stays at most RUNNING_SPACING x POLL_INTERVAL for USUAL_RUN_SECONDS; a task running
# longer than that is unusually slow and backs off toward MAX_POLL_INTERVAL like a queued one.
# A finish falls anywhere between two polls, so the p95 finish-to-seen delay is about 0.95 x
# the spacing: 9.5 s keeps it under 10 s with the jitter (benchmarks/bench_economy.py).
RUNNING_SPACING = 1.9
USUAL_RUN_SECONDS = 600.0
LAST_ERROR_CHARS = 2000
# The gateway's times are evidence, never authority: one before the row was created or after
# now, give or take this much clock skew, is kept in the raw answer only (docs/polling.md).
GATEWAY_CLOCK_SKEW = dt.timedelta(minutes=5)

# While callbacks arrive, a task that expects one is polled only as a safety net: this share of
# MAX_POLL_INTERVAL apart (with the jitter, always under it), so a finish whose callback was
# lost is still seen within MAX_POLL_INTERVAL.
SAFETY_NET_SHARE = 0.9


_unknown_statuses_logged: set[str] = set()


class TaskState(Protocol):
    """The fields of a task the decisions read (a ``RunwayTask`` row has them all)."""

    @property
    def status(self) -> str: ...
    @property
    def progress(self) -> int: ...
    @property
    def error_count(self) -> int: ...
    @property
    def provider_status(self) -> str: ...
    @property
    def provider_inner_status(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def submitted_at(self) -> dt.datetime | None: ...
    @property
    def started_at(self) -> dt.datetime | None: ...
    @property
    def finished_at(self) -> dt.datetime | None: ...
    @property
    def resumed_at(self) -> dt.datetime | None: ...
    @property
    def last_polled_at(self) -> dt.datetime | None: ...
    @property
    def route(self) -> str: ...
    @property
    def request(self) -> Any: ...
    @property
    def expects_callback(self) -> bool: ...


@dataclass
class Plan:
    """The writes one poll result asks for."""

    fields: dict[str, Any] = field(default_factory=dict)
    new_status: Status | None = None
    message: str = ""
    error: bool = False
    progressed: bool = False


def _seconds_between(later: dt.datetime, earlier: dt.datetime | None) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds()


def _jittered(delay: float, *, floor: float) -> float:
    return max(floor, delay * random.uniform(1 - JITTER, 1 + JITTER))


def next_poll_delay(
    task: TaskState,
    snapshot: FeedSnapshot,
    *,
    now: dt.datetime,
    outlook: Outlook = NO_OUTLOOK,
) -> float:
    """Seconds until the next poll of a task that is still unfinished after ``snapshot``.

    - While callbacks arrive and the task expects one, a safety net: ``SAFETY_NET_SHARE`` x
      ``MAX_POLL_INTERVAL``.
    - While it runs with a rising progress, aims at the finish the progress rate predicts.
    - With learned run times for its profile, see :func:`_delay_from_history`.
    - Without history: back to ``POLL_INTERVAL`` after a status change; while running, at most
      ``RUNNING_SPACING`` x ``POLL_INTERVAL`` apart for ``USUAL_RUN_SECONDS``; otherwise growing
      geometrically toward ``MAX_POLL_INTERVAL``.

    Never below ``POLL_INTERVAL``; above ``MAX_POLL_INTERVAL`` by the jitter at most (the
    safety net never).
    """
    floor, ceiling = conf.POLL_INTERVAL, conf.MAX_POLL_INTERVAL
    if task.expects_callback and outlook.callbacks().live:
        return _safety_net()
    since_last = _seconds_between(now, task.last_polled_at)
    progress = snapshot.progress
    if (
        snapshot.status == Status.RUNNING == task.status
        and progress is not None
        and progress > task.progress
        and since_last
    ):
        rate = (progress - task.progress) / since_last
        delay = (100 - progress) / rate
    elif (learned := outlook.run_times_for(task)) is not None and (
        planned := _delay_from_history(task, snapshot, learned, now=now)
    ) is not None:
        delay, exact = planned
        if exact:
            return min(max(delay, floor), ceiling)
    elif since_last is None or snapshot.status not in (None, Status(task.status)):
        delay = floor
    else:
        delay = since_last * GROWTH
        running_for = _seconds_between(now, task.started_at)
        if (
            snapshot.status == Status.RUNNING
            and running_for is not None
            and running_for < USUAL_RUN_SECONDS
        ):
            delay = min(delay, RUNNING_SPACING * floor)
    return _jittered(min(max(delay, floor), ceiling), floor=floor)


def _delay_from_history(
    task: TaskState, snapshot: FeedSnapshot, learned: RunTimes, *, now: dt.datetime
) -> tuple[float, bool] | None:
    """The next delay its profile's run times suggest, and whether to keep it exact; None when
    they say nothing (a running task without a start time from the provider, or past ``high``).

    - Queued: ``low`` + ``POLL_INTERVAL`` / 2 apart. It cannot finish before it has run
      ``low``, so the poll that first sees it running is often already past its earliest likely
      finish, rather than just before it. (A whole ``POLL_INTERVAL`` saves a few more calls but
      makes the quickest finishes of fine progress wait; see docs/benchmarks.md.)
    - Running: no poll before ``low`` after the provider's start time (that first look is exact:
      it lands on the earliest likely finish), then ``RUNNING_SPACING`` x ``POLL_INTERVAL``
      apart until ``high``.
    """
    floor = conf.POLL_INTERVAL
    status = snapshot.status or Status(task.status)
    if status == Status.QUEUED:
        return learned.low + floor / 2, False
    started = snapshot.started_at
    if status != Status.RUNNING or started is None:
        return None
    running_for = (now - started).total_seconds()
    if running_for >= learned.high:
        return None
    if learned.low - running_for >= floor:
        return learned.low - running_for, True
    return RUNNING_SPACING * floor, False


def _safety_net() -> float:
    floor, ceiling = conf.POLL_INTERVAL, conf.MAX_POLL_INTERVAL
    delay = _jittered(min(max(SAFETY_NET_SHARE * ceiling, floor), ceiling), floor=floor)
    # When POLL_INTERVAL is near MAX_POLL_INTERVAL the jitter alone could pass it, and a lost
    # callback would then be noticed later than promised.
    return max(floor, min(delay, ceiling))


def first_poll_delay(*, expects_callback: bool, callbacks: CallbackVerdict) -> float:
    """Seconds from an accepted create to the task's first poll.

    ``POLL_INTERVAL``; the safety net's spacing when callbacks arrive and the task expects one.
    """
    if expects_callback and callbacks.live:
        return _safety_net()
    return conf.POLL_INTERVAL


def error_backoff(error_count: int) -> float:
    """Exponential backoff after ``error_count`` consecutive errors (jittered, capped).

    ``POLL_INTERVAL`` after each of the first ``ERROR_RETRIES_AT_INTERVAL`` errors in a row (a
    failed answer says little about the task), then doubling, capped at
    ``ERROR_BACKOFF_MAX_INTERVALS`` x ``MAX_POLL_INTERVAL`` (and ``MAX_BACKOFF_SECONDS``).
    """
    ceiling = min(ERROR_BACKOFF_MAX_INTERVALS * conf.MAX_POLL_INTERVAL, MAX_BACKOFF_SECONDS)
    doublings = max(error_count - ERROR_RETRIES_AT_INTERVAL, 0)
    delay = conf.POLL_INTERVAL * 2.0 ** min(doublings, 16)
    # Jitter upward only (0 to 20 %): the first retry comes at POLL_INTERVAL, which must not be
    # undercut, and tasks that failed together must still not retry together.
    return min(delay, ceiling) * random.uniform(1.0, 1.0 + 2 * JITTER)


def _age(task: TaskState, now: dt.datetime) -> float:
    """Seconds since submission, or since an operator resumed the task (a fresh window)."""
    since = task.submitted_at or task.created_at
    if task.resumed_at is not None and task.resumed_at > since:
        since = task.resumed_at
    return (now - since).total_seconds()


def _timed_out(task: TaskState, now: dt.datetime) -> bool:
    return _age(task, now) > conf.TASK_TIMEOUT


def _log_unknown(snapshot: FeedSnapshot) -> None:
    for raw in snapshot.unknown_statuses:
        if raw not in _unknown_statuses_logged:
            _unknown_statuses_logged.add(raw)
            logger.warning(
                "Unknown Runway status %r (task %s): kept raw, canonical status unchanged",
                raw,
                snapshot.task_id,
            )


def plan_snapshot(
    task: TaskState, snapshot: FeedSnapshot, *, now: dt.datetime, outlook: Outlook = NO_OUTLOOK
) -> Plan:
    """Turn one feed answer into the writes it implies for ``task`` (no I/O)."""
    _log_unknown(snapshot)
    snapshot = _believable_times(task, snapshot, now=now)
    plan = Plan()
    fields = plan.fields
    fields.update(
        last_polled_at=now,
        last_response=snapshot.raw,
        provider_status=snapshot.provider_status or task.provider_status,
        provider_inner_status=snapshot.provider_inner_status or task.provider_inner_status,
        action=snapshot.action or task.action,
        last_error="",
    )
    # submitted_at is the app's own (set when the create was accepted, or tracking began): the
    # give-up window and the stuck clock run on it, so the gateway only fills it in when unset.
    if snapshot.submitted_at is not None and task.submitted_at is None:
        fields["submitted_at"] = snapshot.submitted_at
    for name in ("started_at", "finished_at"):
        value = getattr(snapshot, name)
        if value is not None:
            fields[name] = value
    if snapshot.outputs:
        fields["outputs"] = [output._asdict() for output in snapshot.outputs]
        fields["result_url"] = snapshot.result_url
    if snapshot.progress is not None and snapshot.progress > task.progress:
        fields["progress"] = snapshot.progress
        plan.progressed = True

    target = snapshot.status
    if target is not None and not is_forward(task.status, target):
        target = None
    if target == Status.SUCCEEDED and not snapshot.result_url:
        # Believe success without an output only once it has lasted a little.
        seen_at = snapshot.finished_at or task.finished_at or now
        fields["finished_at"] = seen_at
        if (now - seen_at).total_seconds() < SUCCESS_WITHOUT_OUTPUT_GRACE:
            target = Status.RUNNING if is_forward(task.status, Status.RUNNING) else None
            fields["next_poll_at"] = now + dt.timedelta(seconds=conf.POLL_INTERVAL)
        else:
            plan.message = "The provider reported success without an output URL."

    if target is None and _timed_out(task, now):
        return give_up(task, FailureCode.TIMEOUT, now=now, plan=plan)

    if target is not None:
        plan.new_status = target
        if target == Status.RUNNING:
            fields.setdefault("started_at", now)
        if target in TERMINAL_STATUSES:
            fields.setdefault("finished_at", now)
            fields["next_poll_at"] = None
            fields["progress"] = 100 if target == Status.SUCCEEDED else task.progress
            if target != Status.SUCCEEDED:
                fields["failure_code"] = snapshot.failure_code or FailureCode.PROVIDER
                fields["fail_reason"] = snapshot.fail_reason
                plan.message = snapshot.fail_reason or snapshot.failure_code
    if "next_poll_at" not in fields:
        delay = next_poll_delay(task, snapshot, now=now, outlook=outlook)
        fields["next_poll_at"] = now + dt.timedelta(seconds=delay)
    return plan


def _believable_times(task: TaskState, snapshot: FeedSnapshot, *, now: dt.datetime) -> FeedSnapshot:
    """``snapshot`` without the times that cannot be true for ``task`` (see GATEWAY_CLOCK_SKEW).

    A ``submit_time`` of 1 would give a running task up at once, one in year 9999 would keep it
    from ever timing out: such a time stays in ``last_response`` and decides nothing.
    """
    earliest, latest = task.created_at - GATEWAY_CLOCK_SKEW, now + GATEWAY_CLOCK_SKEW

    def believable(value: dt.datetime | None) -> dt.datetime | None:
        return value if value is not None and earliest <= value <= latest else None

    submitted_at, started_at, finished_at = (
        believable(snapshot.submitted_at),
        believable(snapshot.started_at),
        believable(snapshot.finished_at),
    )
    if (submitted_at, started_at, finished_at) == (
        snapshot.submitted_at,
        snapshot.started_at,
        snapshot.finished_at,
    ):
        return snapshot
    logger.info("Task %s: gateway times outside the row's lifetime ignored", snapshot.task_id)
    return dataclasses.replace(
        snapshot, submitted_at=submitted_at, started_at=started_at, finished_at=finished_at
    )


def give_up(
    task: TaskState, code: FailureCode, *, now: dt.datetime, plan: Plan | None = None
) -> Plan:
    """A local give-up: ``failed`` with ``code`` (``timeout`` or ``not_found``)."""
    plan = plan or Plan()
    reason = {
        FailureCode.TIMEOUT: (
            f"Gave up: still unfinished {conf.TASK_TIMEOUT:.0f} s after submission "
            "(RUNWAY_FEED['TASK_TIMEOUT'])."
        ),
        FailureCode.NOT_FOUND: (
            f"Gave up: CometAPI still answers task_not_exist {conf.NOT_FOUND_GRACE:.0f} s after "
            "submission (RUNWAY_FEED['NOT_FOUND_GRACE'])."
        ),
    }.get(code, str(code.label))
    plan.new_status = Status.FAILED
    plan.message = reason
    plan.fields.update(
        failure_code=code,
        fail_reason=reason,
        finished_at=now,
        next_poll_at=None,
        last_polled_at=now,
    )
    return plan


def plan_error(task: TaskState, error: Exception, *, now: dt.datetime) -> Plan:
    """The writes a failed poll implies: keep the status, count the error, back off."""
    if isinstance(error, TaskNotVisibleError):
        if _age(task, now) > conf.NOT_FOUND_GRACE:
            return give_up(task, FailureCode.NOT_FOUND, now=now)
        # Fresh ids are invisible for a few seconds: this is expected, not an error.
        return Plan(
            fields={
                "last_polled_at": now,
                "last_error": "task_not_exist (not visible yet)",
                "next_poll_at": now + dt.timedelta(seconds=conf.POLL_INTERVAL),
            }
        )
    if _timed_out(task, now):
        return give_up(task, FailureCode.TIMEOUT, now=now)
    delay = error_backoff(task.error_count + 1)
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, MAX_BACKOFF_SECONDS))
    message = f"{type(error).__name__}: {error}"
    body = getattr(error, "body", "")
    if body:
        message = f"{message}\n{body}"
    return Plan(
        error=True,
        fields={
            "last_polled_at": now,
            "last_error": message[:LAST_ERROR_CHARS],
            "next_poll_at": now + dt.timedelta(seconds=delay),
        },
    )

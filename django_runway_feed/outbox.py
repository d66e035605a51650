"""The TaskEvent outbox: transition events are written with the change and signalled on commit.

Delivery is at least once: an event is marked dispatched only after its signals were sent. If a
worker dies in between, :func:`sweep` sends it later. A live event carries ``redeliver_after``
(one lease ahead), so the sweep never races the on-commit send of a worker that is still alive;
the sweep claims an event by moving that time forward with a conditional ``UPDATE``, so two
sweeps never send the same event either.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from . import signals
from .conf import conf
from .dbfeatures import supports_update_returning
from .models import EventKind, RunwayTask, TaskEvent
from .statuses import Status

logger = logging.getLogger(__name__)

# Called with the task inside the transaction that records its success (see when_succeeded).
SuccessHook = Callable[[RunwayTask], None]
_success_hooks: list[SuccessHook] = []


def when_succeeded(hook: SuccessHook) -> None:
    """Have ``hook(task)`` called inside the transaction of every transition to ``succeeded``.

    This is how a module built on the outbox hears of a success in the same transaction as the
    change, without the outbox importing it: the result downloads register
    :func:`~django_runway_feed.downloads.on_task_succeeded` (in ``AppConfig.ready``).
    Registering the same hook again does nothing.
    """
    if hook not in _success_hooks:
        _success_hooks.append(hook)


def send(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` to every receiver; one that raises is logged and stops nothing."""
    for receiver, response in signal.send_robust(sender=RunwayTask, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %r of a django-runway-feed signal raised",
                receiver,
                exc_info=(type(response), response, response.__traceback__),
            )


def record_transition(
    task: RunwayTask,
    *,
    previous: str,
    status: str,
    progress: int | None,
    message: str = "",
    payload: Any = None,
    now: dt.datetime,
) -> TaskEvent:
    """Write the event of a status change. Call inside the transaction that made the change."""
    event = _create_signalled(
        task=task,
        kind=EventKind.TRANSITION,
        from_status=previous,
        to_status=status,
        progress=progress,
        message=message,
        payload=payload,
        created_at=now,
    )
    if status == Status.SUCCEEDED:
        for hook in _success_hooks:
            hook(task)
    return event


def record_event(
    task: RunwayTask, kind: EventKind, message: str, *, payload: Any = None, now: dt.datetime
) -> TaskEvent:
    """Write an event that carries a signal (``result_stored``) without a status change.

    Call inside the transaction that made the change; delivered like a transition.
    """
    return _create_signalled(
        kind=kind, message=message, payload=payload, created_at=now, **_unchanged(task)
    )


def _create_signalled(*, created_at: dt.datetime, **fields: Any) -> TaskEvent:
    """Create an event whose signals are sent on commit (or by the sweep, one lease later)."""
    event = TaskEvent.objects.create(
        created_at=created_at,
        redeliver_after=created_at + dt.timedelta(seconds=conf.LEASE_SECONDS),
        **fields,
    )
    transaction.on_commit(partial(dispatch, event.pk), robust=True)
    return event


def record_note(
    task: RunwayTask,
    kind: EventKind,
    message: str,
    *,
    payload: Any = None,
    to_status: str | None = None,
    now: dt.datetime | None = None,
) -> TaskEvent:
    """Write a history row that carries no signal (tracking started, a manual poll ...).

    ``to_status`` records an operator's move that is not a transition to signal (resuming a
    given-up task); by default the status is unchanged.
    """
    now = now or timezone.now()
    fields = _unchanged(task)
    if to_status is not None:
        fields["to_status"] = to_status
    return TaskEvent.objects.create(
        kind=kind,
        message=message,
        payload=payload,
        created_at=now,
        dispatched_at=now,
        **fields,
    )


def _unchanged(task: RunwayTask) -> dict[str, Any]:
    """The fields of an event that leaves the task's status (and progress) where it is."""
    return {
        "task": task,
        "from_status": task.status,
        "to_status": task.status,
        "progress": task.progress,
    }


def dispatch(event_pk: int) -> bool:
    """Send the signals of one undispatched event, then mark it. False if already dispatched."""
    return dispatch_events([event_pk]) == 1


def dispatch_events(event_pks: list[int]) -> int:
    """Send the signals of the undispatched events among ``event_pks``, then mark them.

    Two queries whatever the number of events: one read (with the tasks) and one mark, after
    every signal was sent. Returns how many events were sent.
    """
    events = list(
        TaskEvent.objects.select_related("task")
        .filter(pk__in=event_pks, dispatched_at__isnull=True)
        .order_by("pk")
    )
    if not events:
        return 0
    for event in events:
        _send_signals(event)
    TaskEvent.objects.filter(
        pk__in=[event.pk for event in events], dispatched_at__isnull=True
    ).update(dispatched_at=timezone.now())
    return len(events)


def _send_signals(event: TaskEvent) -> None:
    task = event.task
    if event.kind == EventKind.TRANSITION:
        if event.from_status == Status.SUBMITTING and task.task_id:
            send(signals.task_submitted, task=task, event=event)
        send(
            signals.task_status_changed,
            task=task,
            previous=event.from_status,
            status=event.to_status,
            event=event,
        )
        if event.to_status == Status.SUCCEEDED:
            send(signals.task_succeeded, task=task, event=event)
        elif event.to_status in (Status.FAILED, Status.CANCELLED):
            send(signals.task_failed, task=task, event=event)
    elif event.kind == EventKind.RESULT_STORED:
        send(signals.task_result_stored, task=task, event=event)


def _claim_due(now: dt.datetime, until: dt.datetime, limit: int) -> list[int]:
    """Move ``redeliver_after`` of up to ``limit`` due events to ``until``; their pks.

    One ``UPDATE ... RETURNING`` claims the whole batch. The outer ``WHERE`` repeats the
    conditions, so of two concurrent sweeps only one claims an event: PostgreSQL re-checks them
    on the row a concurrent sweep just wrote, and ``SKIP LOCKED`` keeps the sweeps apart.
    """
    table = connection.ops.quote_name(TaskEvent._meta.db_table)
    pk = connection.ops.quote_name(str(TaskEvent._meta.pk.column))
    dispatched = connection.ops.quote_name("dispatched_at")
    redeliver = connection.ops.quote_name("redeliver_after")
    due = f"{dispatched} IS NULL AND {redeliver} <= %s"
    lock = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {redeliver} = %s WHERE {due} AND {pk} IN ("  # noqa: S608 (names quoted, values bound)
            f"SELECT {pk} FROM {table} WHERE {due} ORDER BY {pk} LIMIT %s{lock}"
            f") RETURNING {pk}",
            [*(_db_datetime(value) for value in (until, now, now)), limit],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _db_datetime(value: dt.datetime) -> Any:
    # Raw SQL gets the value the ORM would bind (SQLite stores naive UTC text).
    return connection.ops.adapt_datetimefield_value(value)


def sweep(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Re-send events that were committed but never marked dispatched. Returns how many.

    A batch costs a constant number of queries: one claim, one read and one mark.
    """
    now = now or timezone.now()
    until = now + dt.timedelta(seconds=conf.LEASE_SECONDS)
    if supports_update_returning():
        sent = dispatch_events(_claim_due(now, until, limit))
    else:
        # Elsewhere one conditional UPDATE per event claims it.
        stale = list(
            TaskEvent.objects.filter(dispatched_at__isnull=True, redeliver_after__lte=now)
            .order_by("pk")
            .values_list("pk", "redeliver_after")[:limit]
        )
        claimed = [
            pk
            for pk, redeliver_after in stale
            if TaskEvent.objects.filter(
                pk=pk, dispatched_at__isnull=True, redeliver_after=redeliver_after
            ).update(redeliver_after=until)
        ]
        sent = dispatch_events(claimed)
    if sent:
        logger.warning("Re-sent the signals of %d event(s) a worker left undelivered", sent)
    return sent


def send_progress(task: RunwayTask) -> None:
    """Best-effort progress signal (not part of the outbox)."""
    send(signals.task_progressed, task=task, progress=task.progress)

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
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from . import signals
from .models import EventKind, RunwayTask, TaskEvent
from .statuses import Status

logger = logging.getLogger(__name__)


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
        from .storage import on_task_succeeded

        on_task_succeeded(task)
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
    from .conf import conf

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
    event = (
        TaskEvent.objects.select_related("task")
        .filter(pk=event_pk, dispatched_at__isnull=True)
        .first()
    )
    if event is None:
        return False
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
    TaskEvent.objects.filter(pk=event.pk, dispatched_at__isnull=True).update(
        dispatched_at=timezone.now()
    )
    return True


def sweep(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Re-send events that were committed but never marked dispatched. Returns how many."""
    from .conf import conf

    now = now or timezone.now()
    stale = list(
        TaskEvent.objects.filter(dispatched_at__isnull=True, redeliver_after__lte=now)
        .order_by("pk")
        .values_list("pk", "redeliver_after")[:limit]
    )
    sent = 0
    for pk, redeliver_after in stale:
        claimed = TaskEvent.objects.filter(
            pk=pk, dispatched_at__isnull=True, redeliver_after=redeliver_after
        ).update(redeliver_after=now + dt.timedelta(seconds=conf.LEASE_SECONDS))
        if claimed and dispatch(pk):
            sent += 1
    if sent:
        logger.warning("Re-sent the signals of %d event(s) a worker left undelivered", sent)
    return sent


def send_progress(task: RunwayTask) -> None:
    """Best-effort progress signal (not part of the outbox)."""
    send(signals.task_progressed, task=task, progress=task.progress)

"""Where client results, the ORM and signals meet: submitting, tracking and polling tasks.

Edges (manager methods, commands, admin actions, jobs) call these functions and nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from . import outbox
from .client import CometAPIClient
from .conf import conf
from .exceptions import (
    AuthenticationError,
    ForbiddenError,
    RateLimitedError,
    RequestRejectedError,
    RunwayFeedError,
)
from .models import EventKind, RunwayTask
from .polling import Clock, Poller, PollSummary
from .statuses import FailureCode, Status

logger = logging.getLogger(__name__)

# Sent when the site has no public callback URL: the routes require one, and a reserved
# ``.invalid`` host guarantees nothing reaches a third party (RFC 2606).
INVALID_CALLBACK_BASE = "https://callback.invalid/runway-feed"
# Answers that prove the create was refused (so nothing was billed). Anything else that goes
# wrong after the request left leaves the outcome unknown.
REFUSED = (RequestRejectedError, AuthenticationError, ForbiddenError, RateLimitedError)


def callback_url(token: str) -> str:
    base = conf.CALLBACK_BASE_URL or INVALID_CALLBACK_BASE
    return f"{base}/callback/{token}/"


def _link(content_object: models.Model | None) -> dict[str, Any]:
    if content_object is None:
        return {}
    return {
        "content_type": ContentType.objects.get_for_model(content_object),
        "object_id": str(content_object.pk),
    }


def submit_task(
    route: str,
    payload: dict[str, Any],
    *,
    content_object: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
    client: CometAPIClient | None = None,
    now: dt.datetime | None = None,
) -> RunwayTask:
    """Create a task at CometAPI and return its row.

    The row is saved as ``submitting`` before the POST, so a crash mid-call leaves a trace.
    Accepted: ``queued`` with the provider's id, first poll scheduled, ``task_submitted`` sent
    after commit. Refused (4xx, or a non-200 body code): ``failed`` with code ``rejected``.
    Outcome unknown (timeout, 5xx, an answer that cannot be read):
    the row stays ``submitting`` with ``last_error`` set and is never re-sent automatically,
    since the provider may have created (and billed) the task.
    """
    if client is None:
        with CometAPIClient(pool_size=1) as own_client:
            return submit_task(
                route,
                payload,
                content_object=content_object,
                metadata=metadata,
                client=own_client,
                now=now,
            )
    token = secrets.token_urlsafe(32)
    body = {**payload, "callback_url": callback_url(token)}
    task = RunwayTask.objects.create(
        route=route,
        status=Status.SUBMITTING,
        request={key: value for key, value in body.items() if key != "callback_url"},
        prompt=str(payload.get("prompt") or ""),
        callback_token=token,
        metadata=metadata or {},
        **_link(content_object),
    )
    try:
        task_id = client.create(route, body)
    except REFUSED as exc:
        _finish_submission(
            task,
            Status.FAILED,
            now=now,
            failure_code=FailureCode.REJECTED,
            fail_reason=exc.message,
            message=exc.message,
        )
    except RunwayFeedError as exc:
        logger.error("Outcome of creating task #%s is unknown: %s", task.pk, exc)
        RunwayTask.objects.filter(pk=task.pk).update(
            last_error=f"Outcome unknown, not retried (the task may exist and be billed): {exc}"
        )
        outbox.record_note(task, EventKind.SUBMIT_ERROR, str(exc))
    else:
        _finish_submission(task, Status.QUEUED, now=now, task_id=task_id)
    task.refresh_from_db()
    return task


def _finish_submission(
    task: RunwayTask,
    status: Status,
    *,
    now: dt.datetime | None,
    message: str = "",
    **values: Any,
) -> None:
    now = now or timezone.now()
    if status == Status.QUEUED:
        values.update(submitted_at=now, next_poll_at=now + dt.timedelta(seconds=conf.POLL_INTERVAL))
    else:
        values.update(finished_at=now)
    with transaction.atomic():
        RunwayTask.objects.filter(pk=task.pk, status=Status.SUBMITTING).update(
            status=status, **values
        )
        task.task_id = values.get("task_id", task.task_id)
        outbox.record_transition(
            task, previous=Status.SUBMITTING, status=status, progress=0, message=message, now=now
        )


def track_task(
    task_id: str,
    *,
    content_object: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> RunwayTask:
    """Follow a task created elsewhere; idempotent (a known id returns its existing row)."""
    task_id = task_id.strip()
    if not task_id or len(task_id) > 128:
        raise ValueError("task_id must be a non-empty string of at most 128 characters")
    existing = RunwayTask.objects.filter(task_id=task_id).first()
    if existing is not None:
        return existing
    now = now or timezone.now()
    try:
        with transaction.atomic():
            task = RunwayTask.objects.create(
                task_id=task_id,
                route="tracked",
                status=Status.QUEUED,
                submitted_at=now,
                next_poll_at=now,
                metadata=metadata or {},
                **_link(content_object),
            )
            outbox.record_note(task, EventKind.TRACKED, "Tracking a task created elsewhere.")
    except IntegrityError:
        # Another process tracked the same id between our read and our insert.
        return RunwayTask.objects.get(task_id=task_id)
    return task


def poll_task_now(
    task: RunwayTask, *, client: CometAPIClient | None = None, now: dt.datetime | None = None
) -> PollSummary:
    """Poll one task immediately (ignoring its schedule, not its lease)."""
    clock: Clock | None = (lambda: now) if now is not None else None
    with Poller(client=client, clock=clock, concurrency=1) as poller:
        return poller.run_round(task_ids=[task.pk], ignore_pause=True)


def poll_due_tasks(
    *,
    window: float | None = None,
    client: CometAPIClient | None = None,
    clock: Clock | None = None,
) -> PollSummary:
    """Poll due tasks for ``window`` seconds (``POLL_WINDOW`` by default); return a summary."""
    with Poller(client=client, clock=clock) as poller:
        return poller.run(window=window)

"""Where client results, the ORM and signals meet: submitting, tracking and polling tasks.

Edges (manager methods, commands, admin actions, jobs) call these functions and nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import jobqueue, outbox, validation
from .cleaning import clean_text, escaped
from .client import CometAPIClient
from .conf import conf, q_cluster
from .downloads import first_downloads_waiting
from .exceptions import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    RateLimitedError,
    RequestRejectedError,
    RunwayFeedError,
    UnusableTaskIdError,
)
from .history import read_callback_verdict
from .maintenance import run_maintenance
from .models import EventKind, RunwayTask
from .outlook import CallbackVerdict
from .planning import LAST_ERROR_CHARS, first_poll_delay
from .polling import Clock, Poller, PollSummary
from .schedules import POLL_FUNC
from .statuses import FailureCode, Status
from .transitions import change_status
from .writes import DATABASE_TROUBLE, ROW_WRITE_ERRORS

logger = logging.getLogger(__name__)

# Sent when the site has no public callback URL: the routes require one, and a reserved
# ``.invalid`` host guarantees nothing reaches a third party (RFC 2606).
INVALID_CALLBACK_BASE = "https://callback.invalid/runway-feed"
# Answers that prove the create was refused (so nothing was billed). Anything else that goes
# wrong after the request left leaves the outcome unknown.
REFUSED = (RequestRejectedError, AuthenticationError, ForbiddenError, RateLimitedError)
CALLBACK_SALT = "django_runway_feed.callback"
# The lease owner of a task a callback has queued a poll for.
CALLBACK_LEASE_PREFIX = "callback:"


def callback_signature(task_pk: int) -> str:
    """The unguessable part of a task's callback URL, checkable without a database query."""
    return salted_hmac(CALLBACK_SALT, str(task_pk), algorithm="sha256").hexdigest()[:40]


def callback_url(task_pk: int) -> str:
    """Where CometAPI should POST when the task finishes (a ``.invalid`` URL by default)."""
    kwargs = {"pk": task_pk, "signature": callback_signature(task_pk)}
    base = conf.CALLBACK_BASE_URL
    if not base:
        return f"{INVALID_CALLBACK_BASE}/callback/{kwargs['pk']}/{kwargs['signature']}/"
    try:
        path = reverse("django_runway_feed:callback", kwargs=kwargs)
    except NoReverseMatch:
        raise ConfigurationError(
            "RUNWAY_FEED['CALLBACK_BASE_URL'] is set but the callback view is not routed: add "
            "path('runway-feed/', include('django_runway_feed.urls')) to your URLconf."
        ) from None
    return base + path


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
    idempotency_key: str | None = None,
    client: CometAPIClient | None = None,
    now: dt.datetime | None = None,
    resubmitted_from: RunwayTask | None = None,
) -> RunwayTask:
    """Create a task at CometAPI and return its row. ``payload`` is already validated.

    The row is saved as ``submitting`` before the POST, so a crash mid-call leaves a trace.
    Accepted: ``queued`` with the provider's id, first poll scheduled, ``task_submitted`` sent
    after commit. Refused (4xx, or a non-200 body code): ``failed`` with code ``rejected``.
    Outcome unknown (timeout, 5xx, an answer that cannot be read): the row stays
    ``submitting`` with ``last_error`` set and a ``submit_error`` event, and is never re-sent
    automatically, since the provider may have created (and billed) the task.

    With an ``idempotency_key`` already used, the existing row is returned and nothing is sent;
    the unique constraint makes this hold for concurrent calls too. ``resubmitted_from`` links
    the new row to the task it repeats (the admin's resubmit action).
    """
    if idempotency_key:
        existing = RunwayTask.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    if client is None:
        with CometAPIClient(pool_size=1) as own_client:
            return submit_task(
                route,
                payload,
                content_object=content_object,
                metadata=metadata,
                idempotency_key=idempotency_key,
                client=own_client,
                now=now,
                resubmitted_from=resubmitted_from,
            )
    callback_url(0)  # a routing mistake must surface before any row or request
    try:
        with transaction.atomic():
            task = RunwayTask.objects.create(
                route=route,
                status=Status.SUBMITTING,
                request=payload,
                prompt=str(payload.get("prompt") or ""),
                idempotency_key=idempotency_key,
                metadata=metadata or {},
                resubmitted_from=resubmitted_from,
                expects_callback=bool(conf.CALLBACK_BASE_URL),
                **_link(content_object),
            )
    except IntegrityError:
        if idempotency_key:
            return RunwayTask.objects.get(idempotency_key=idempotency_key)
        raise
    try:
        task_id = client.create(route, {**payload, "callback_url": callback_url(task.pk)})
    except REFUSED as exc:
        _finish_submission(
            task,
            Status.FAILED,
            now=now,
            failure_code=FailureCode.REJECTED,
            fail_reason=exc.message,
            message=exc.message,
        )
    except UnusableTaskIdError as exc:
        # Accepted and maybe billed, but the id is not the one sent: never silent.
        logger.error("Task #%s was accepted with an unusable id: %s", task.pk, exc)
        if not exc.task_id or _accept(task, exc.task_id, now=now, raw_task_id=exc.raw_task_id):
            _record_submit_error(task, str(exc))
    except RunwayFeedError as exc:
        logger.error("Outcome of creating task #%s is unknown: %s", task.pk, exc)
        _record_submit_error(
            task,
            f"Outcome unknown, not retried (the task may exist and be billed): {exc}",
            note=str(exc),
        )
    else:
        _accept(task, task_id, now=now, raw_task_id=escaped(task_id))
    task.refresh_from_db()
    return task


def _accept(task: RunwayTask, task_id: str, *, now: dt.datetime | None, raw_task_id: str) -> bool:
    """Record an accepted create; an id the database refuses becomes a recorded submit error.

    Returns False in that case.

    The database can still refuse a clean id (another row already holds it): the task exists
    at the provider all the same, so the row says so instead of the call raising.
    """
    try:
        _finish_submission(task, Status.QUEUED, now=now, task_id=task_id)
        return True
    except DATABASE_TROUBLE:
        raise  # the database itself is in trouble, not this id
    except ROW_WRITE_ERRORS as exc:
        logger.error("Task #%s: its id %s could not be stored: %s", task.pk, raw_task_id, exc)
        task.task_id = None
        _record_submit_error(
            task,
            f"CometAPI accepted the task as {raw_task_id}, but that id could not be stored "
            f"({type(exc).__name__}): reconcile it by hand in CometAPI's dashboard (it may be "
            "billed).",
        )
        return False


def _record_submit_error(task: RunwayTask, message: str, *, note: str | None = None) -> None:
    """``last_error`` and a ``submit_error`` event (``note``, by default the same message)."""
    message = clean_text(message)[:LAST_ERROR_CHARS]
    RunwayTask.objects.filter(pk=task.pk).update(last_error=message, updated_at=timezone.now())
    event_message = message if note is None else clean_text(note)[:LAST_ERROR_CHARS]
    outbox.record_note(task, EventKind.SUBMIT_ERROR, event_message)


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
        first_poll = first_poll_delay(
            expects_callback=task.expects_callback,
            callbacks=read_callback_verdict(now) if task.expects_callback else CallbackVerdict(),
        )
        values.update(submitted_at=now, next_poll_at=now + dt.timedelta(seconds=first_poll))
    else:
        values.update(finished_at=now)
    task.task_id = values.get("task_id", task.task_id)
    if change_status(task, status, now=now, values=values, message=message):
        return
    # The row left `submitting` while the create call was in flight (an operator stopped it):
    # its status stays, no transition is recorded or signalled, but the provider's task id is
    # kept so the task can still be found. A savepoint keeps a caller's transaction usable
    # should the database refuse the id.
    with transaction.atomic():
        if task.task_id:
            RunwayTask.objects.filter(pk=task.pk, task_id__isnull=True).update(
                task_id=task.task_id, updated_at=now
            )
        task.refresh_from_db(fields=["status", "failure_code"])


def track_task(
    task_id: str,
    *,
    content_object: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> RunwayTask:
    """Follow a task created elsewhere; idempotent (a known id returns its existing row)."""
    metadata = validation.metadata(metadata)
    task_id = validation.task_id(task_id)
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
    task: RunwayTask,
    *,
    client: CometAPIClient | None = None,
    now: dt.datetime | None = None,
    due_only: bool = False,
) -> PollSummary:
    """Poll one task now: ignoring its schedule (unless ``due_only``), never its lease."""
    clock: Clock | None = (lambda: now) if now is not None else None
    with Poller(client=client, clock=clock, concurrency=1) as poller:
        return poller.run_round(task_ids=[task.pk], due_only=due_only, ignore_pause=not due_only)


def request_prompt_poll(task_pk: int, *, now: dt.datetime | None = None) -> bool:
    """A callback said the task may have changed: poll it soon, never faster than allowed.

    The callback's body is not trusted; only the feed decides. Returns False when there is
    nothing to poll (unknown, finished or not yet accepted task).

    However often the URL is hit, and on however many workers, a task gets at most one queued
    poll per ``POLL_INTERVAL``: queueing one takes the row's lease for that long (a conditional
    UPDATE), and the job takes the lease over by its token (:func:`poll_for_callback`).
    """
    now = now or timezone.now()
    # The evidence that callbacks arrive (django_runway_feed.history), finished tasks included.
    RunwayTask.objects.filter(pk=task_pk, callback_at__isnull=True).update(callback_at=now)
    task = RunwayTask.objects.pollable().filter(pk=task_pk).first()
    if task is None:
        return False
    interval = dt.timedelta(seconds=conf.POLL_INTERVAL)
    if task.last_polled_at is not None and task.last_polled_at + interval > now:
        # Polled moments ago: the schedule polls it again as soon as that is allowed.
        earliest = task.last_polled_at + interval
        RunwayTask.objects.pollable().filter(pk=task_pk, next_poll_at__gt=earliest).update(
            next_poll_at=earliest
        )
        return True
    token = f"{CALLBACK_LEASE_PREFIX}{secrets.token_hex(8)}"
    # At most one queued job per task, however many callbacks come while no worker runs: the
    # job clears callback_job_queued_at when it starts. Meanwhile a callback only makes the
    # task due now, for the job (or the schedule) to find.
    taken = (
        RunwayTask.objects.pollable()
        .filter(pk=task_pk, callback_job_queued_at__isnull=True)
        .unleased(now)
        .update(
            lease_owner=token,
            lease_expires_at=now + interval,
            next_poll_at=now,
            callback_job_queued_at=now,
        )
    )
    if taken:
        jobqueue.enqueue("django_runway_feed.jobs.poll_task", task_pk, token)
    else:
        RunwayTask.objects.pollable().filter(pk=task_pk, next_poll_at__gt=now).update(
            next_poll_at=now
        )
    return True


def poll_for_callback(
    task: RunwayTask, lease_token: str, *, client: CometAPIClient | None = None
) -> PollSummary:
    """Poll ``task`` for the callback that queued this job with ``lease_token`` (if due).

    The token's lease is handed back first; should another worker claim the task in that
    instant, it polls the task instead and this poll claims nothing.
    """
    RunwayTask.objects.filter(pk=task.pk).update(callback_job_queued_at=None)
    RunwayTask.objects.filter(pk=task.pk, lease_owner=lease_token).update(
        lease_owner="", lease_expires_at=None
    )
    return poll_task_now(task, client=client, due_only=True)


def follow_task(
    task: RunwayTask,
    *,
    timeout: float | None = None,
    on_change: Callable[[RunwayTask], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunwayTask:
    """Poll ``task`` on its own schedule until it finishes (or ``timeout`` seconds pass).

    For command lines and scripts without a cluster; with a cluster running too, the leases
    keep the two from polling the task at the same moment. ``on_change`` gets the row each
    time its status or progress moved.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[str, int] | None = None
    while True:
        task.refresh_from_db()
        if (task.status, task.progress) != seen:
            seen = (task.status, task.progress)
            if on_change:
                on_change(task)
        if task.is_finished or task.status == Status.SUBMITTING:
            return task
        if deadline is not None and time.monotonic() > deadline:
            return task
        now = timezone.now()
        if task.next_poll_at is None or task.next_poll_at <= now:
            if poll_task_now(task, due_only=True).claimed:
                continue
            # Another worker holds the lease, or the API key is paused: look again shortly.
            sleep(1.0)
            continue
        sleep(min(1.0, (task.next_poll_at - now).total_seconds()))


def single_worker_cluster() -> bool:
    """Whether the django-q2 cluster runs one worker (``Q_CLUSTER['workers'] = 1``)."""
    cluster = q_cluster()
    return cluster is not None and not cluster.get("sync") and cluster.get("workers") == 1


def poll_due_tasks(
    *,
    window: float | None = None,
    client: CometAPIClient | None = None,
    clock: Clock | None = None,
    hand_back_downloads: bool = False,
) -> PollSummary:
    """Poll due tasks for ``window`` seconds (``POLL_WINDOW`` by default); return a summary.

    Afterwards, once per run: mark newly stuck tasks (``task_stale``) and, when
    ``PRUNE_AFTER_DAYS`` is set, prune one batch of old finished tasks.

    With ``hand_back_downloads`` (the scheduled job on a single-worker cluster), a run that
    has nothing due while a finished task waits for its first download returns early and
    queues a fresh poll run behind the download jobs: the one worker stores the video within
    seconds of the success instead of after the poll window, and polling carries on.
    """
    handed_back = []

    def hand_back() -> bool:
        if first_downloads_waiting():
            handed_back.append(True)
            return True
        return False

    with Poller(client=client, clock=clock) as poller:
        summary = poller.run(window=window, hand_back=hand_back if hand_back_downloads else None)
    run_maintenance(now=(clock or timezone.now)())
    if handed_back:
        logger.debug("Poll run handed its worker to waiting downloads; queuing the next run")
        jobqueue.enqueue(POLL_FUNC)
    return summary

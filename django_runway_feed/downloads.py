"""Result downloads: queue the copy of a succeeded task's outputs into Django storage.

Runway's output URLs expire within 24-48 hours, so with ``RUNWAY_FEED['DOWNLOAD_RESULTS']`` on,
every task that reaches ``succeeded`` gets a django-q2 job (queued after the transaction that
recorded the success commits) that copies its video, poster and last frame into the storage
named by ``RUNWAY_FEED['STORAGE']``.

The URLs come from a third party, so they are fetched with the SSRF-guarded
:class:`~django_runway_feed.safe_fetch.SafeDownloader`. A success reaches this module through
the outbox's success hook (:func:`on_task_succeeded`, registered in ``AppConfig.ready``).

This module queues downloads and holds the hooks; one download run (the job's work: claim,
fetch, store, retry) is in :mod:`django_runway_feed.download_run`, whose public names are
re-exported here.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import jobqueue, outbox
from .conf import conf
from .download_run import (
    ALLOWED_CONTENT_TYPES,
    KIND_ORDER,
    STORED_EXTENSIONS,
    DownloadOutcome,
    attempt_lease_seconds,
    download_result,
    get_storage,
    output_urls,
    retry_delay,
)
from .exceptions import DownloadUnavailable
from .models import DownloadStatus, EventKind, RunwayTask, RunwayTaskQuerySet
from .safe_fetch import SafeDownloader
from .statuses import Status

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "DOWNLOADS_OFF",
    "DUE_BATCH",
    "JOB",
    "KIND_ORDER",
    "PENDING_AFRESH",
    "QUEUED_HOLD_SECONDS",
    "STORED_EXTENSIONS",
    "DownloadOutcome",
    "SafeDownloader",
    "attempt_lease_seconds",
    "download_now",
    "download_result",
    "downloads_enabled",
    "first_downloads_waiting",
    "get_storage",
    "missing_downloads",
    "on_task_succeeded",
    "queue_download",
    "queue_due_downloads",
    "retry_delay",
    "stored_file_url",
    "unavailable_reason",
]

logger = logging.getLogger(__name__)

JOB = "django_runway_feed.jobs.download_result"
DUE_BATCH = 100
# How long a download the scheduled run queued is left to its job before it is queued again
# (a job the broker lost, or a cluster far behind).
QUEUED_HOLD_SECONDS = 10 * 60
DOWNLOADS_OFF = "Result downloads are off: set RUNWAY_FEED['DOWNLOAD_RESULTS'] = True."

# A download (re)started from its first attempt. No retry time is "due now", whatever clock the
# caller runs on.
PENDING_AFRESH: dict[str, Any] = {
    "download_status": DownloadStatus.PENDING,
    "download_attempts": 0,
    "download_error": "",
    "download_retry_at": None,
}


# -- public entry points -------------------------------------------------------------------------


def downloads_enabled() -> bool:
    """Whether ``RUNWAY_FEED['DOWNLOAD_RESULTS']`` is on."""
    return conf.DOWNLOAD_RESULTS


def stored_file_url(task: RunwayTask, kind: str = "video") -> str:
    """The URL of a stored output (``video``, ``poster`` or ``last_frame``), or ``""``.

    ``task.output_file.url`` and ``task.poster_file.url`` give the same answer for those two
    (their storage forwards to the configured alias, see :mod:`django_runway_feed.files`).
    """
    for entry in task.stored_files or []:
        if isinstance(entry, dict) and entry.get("kind") == kind and entry.get("name"):
            return get_storage().url(str(entry["name"]))
    return ""


def unavailable_reason(task: RunwayTask, *, force: bool = False) -> str:
    """Why :func:`queue_download` would refuse ``task`` now, or ``""`` when it would not."""
    if not downloads_enabled():
        return DOWNLOADS_OFF
    if task.status != Status.SUCCEEDED:
        return f"Task {task} has not succeeded, so it has no result to download."
    if not task.result_url and not output_urls(task):
        return f"Task {task} has no output URL to download."
    if task.download_status == DownloadStatus.STORED and not force:
        return f"The result of task {task} is already stored (use force to download it again)."
    if task.lease_owner and task.lease_expires_at and task.lease_expires_at > timezone.now():
        return f"A download of task {task} is in progress."
    return ""


def queue_download(task: RunwayTask, *, force: bool = False, reason: str = "") -> None:
    """Queue a download of ``task``'s outputs (now, or on commit of the current transaction).

    Writes a ``download_queued`` event and resets the attempt count. Raises
    :class:`~django_runway_feed.exceptions.DownloadUnavailable` with a human reason when
    downloads are off, the task has not succeeded, has no output URL, is already stored (unless
    ``force``), or is being downloaded right now.
    """
    _mark_pending(task, force=force, reason=reason or "Download queued.", enqueue=True)


def download_now(task: RunwayTask, *, force: bool = False) -> DownloadOutcome:
    """Run one download attempt of ``task`` in this process (the ``runway_download`` command).

    Refuses like :func:`queue_download`. A failed attempt is recorded (and retried by the
    scheduled run) exactly as the job's would be.
    """
    _mark_pending(task, force=force, reason="Download started by hand.", enqueue=False)
    return download_result(task.pk)


def missing_downloads() -> RunwayTaskQuerySet:
    """Succeeded tasks whose outputs are not stored (none yet, pending, or failed)."""
    return RunwayTask.objects.filter(status=Status.SUCCEEDED).exclude(
        download_status=DownloadStatus.STORED
    )


def _mark_pending(task: RunwayTask, *, force: bool, reason: str, enqueue: bool) -> None:
    problem = unavailable_reason(task, force=force)
    if problem:
        raise DownloadUnavailable(problem)
    now = timezone.now()
    with transaction.atomic():
        allowed = RunwayTask.objects.filter(pk=task.pk, status=Status.SUCCEEDED).unleased(now)
        if not force:
            allowed = allowed.exclude(download_status=DownloadStatus.STORED)
        if not allowed.update(**PENDING_AFRESH, updated_at=now):
            task.refresh_from_db()
            raise DownloadUnavailable(
                unavailable_reason(task, force=force)
                or f"Task {task} changed meanwhile; try again."
            )
        task.refresh_from_db()
        outbox.record_note(task, EventKind.DOWNLOAD_QUEUED, reason)
        if enqueue:
            transaction.on_commit(partial(_enqueue, task.pk), robust=True)


def on_task_succeeded(task: RunwayTask) -> None:
    """Mark a task that just succeeded for download. Call inside the transaction of the change.

    The job is queued when that transaction commits; a failure to queue it is logged and the
    next scheduled run picks the task up (it stays ``pending`` and due).
    """
    if not downloads_enabled():
        return
    marked = (
        RunwayTask.objects.filter(pk=task.pk, status=Status.SUCCEEDED)
        .exclude(download_status=DownloadStatus.STORED)
        .update(**PENDING_AFRESH)
    )
    if marked:
        transaction.on_commit(partial(_enqueue, task.pk), robust=True)


def queue_due_downloads(*, now: dt.datetime | None = None, limit: int = DUE_BATCH) -> int:
    """Queue a job for each pending download whose retry time has come. Returns how many.

    Called by the scheduled poll run. Each queued task's ``download_retry_at`` moves
    ``QUEUED_HOLD_SECONDS`` ahead (a conditional UPDATE, so concurrent runs queue it once) and
    its job carries that time, which lets the job claim it early. Later runs leave it alone
    meanwhile, rather than piling jobs up in a busy broker; a job that never ran is queued
    again once the hold has passed.
    """
    if not downloads_enabled():
        return 0
    now = now or timezone.now()
    due = list(
        RunwayTask.objects.filter(status=Status.SUCCEEDED, download_status=DownloadStatus.PENDING)
        .filter(Q(download_retry_at__isnull=True) | Q(download_retry_at__lte=now))
        .unleased(now)
        .order_by(F("download_retry_at").asc(nulls_first=True))
        .values_list("pk", "download_retry_at")[:limit]
    )
    hold_until = now + dt.timedelta(seconds=QUEUED_HOLD_SECONDS)
    queued = 0
    for pk, retry_at in due:
        if RunwayTask.objects.filter(
            pk=pk, download_status=DownloadStatus.PENDING, download_retry_at=retry_at
        ).update(download_retry_at=hold_until):
            _enqueue(pk, hold_until)
            queued += 1
    return queued


def first_downloads_waiting(*, now: dt.datetime | None = None) -> bool:
    """Whether a succeeded task waits for its first download attempt (no worker took it yet).

    With a single django-q2 worker, the poll run holds the worker that job waits for; the run
    asks this whenever nothing is due and hands the worker back (``services.poll_due_tasks``).
    A retry (``download_attempts`` above 0) waits for its time anyway and does not count.
    """
    if not downloads_enabled():
        return False
    now = now or timezone.now()
    return (
        RunwayTask.objects.filter(
            status=Status.SUCCEEDED, download_status=DownloadStatus.PENDING, download_attempts=0
        )
        .unleased(now)
        .exists()
    )


def _enqueue(task_pk: int, queued_until: dt.datetime | None = None) -> None:
    if queued_until is None:
        jobqueue.enqueue(JOB, task_pk)
    else:
        jobqueue.enqueue(JOB, task_pk, queued_until.isoformat())

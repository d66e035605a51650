"""Result downloads: copy a succeeded task's outputs into Django storage.

Runway's output URLs expire within 24-48 hours, so with ``RUNWAY_FEED['DOWNLOAD_RESULTS']`` on,
every task that reaches ``succeeded`` gets a django-q2 job (queued after the transaction that
recorded the success commits) that copies its video, poster and last frame into the storage
named by ``RUNWAY_FEED['STORAGE']``.

The URLs come from a third party, so they are fetched with the SSRF-guarded
:class:`~django_runway_feed.safe_fetch.SafeDownloader`. A success reaches this module through
the outbox's success hook (:func:`on_task_succeeded`, registered in ``AppConfig.ready``).

Work on one task is claimed with a conditional ``UPDATE`` (the row's lease fields, which the
poller never uses on a succeeded task), so two workers never download the same task at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import jobqueue, outbox
from .conf import conf
from .exceptions import (
    DownloadError,
    DownloadExpired,
    DownloadUnavailable,
    RunwayFeedError,
)
from .models import DownloadStatus, EventKind, RunwayTask, RunwayTaskQuerySet
from .safe_fetch import SafeDownloader
from .statuses import Status

logger = logging.getLogger(__name__)

JOB = "django_runway_feed.jobs.download_result"
# Output kinds (as the feed parser names them) and the content types each may have.
ALLOWED_CONTENT_TYPES = {"video": "video/", "poster": "image/", "last_frame": "image/"}
KIND_ORDER = ("video", "poster", "last_frame")
# The file name extension of each content type stored as is; any other type is saved as ".bin".
STORED_EXTENSIONS = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "image/gif": ".gif",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
}
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


def get_storage() -> Storage:
    """The storage results go to: ``STORAGES[RUNWAY_FEED['STORAGE']]``."""
    return storages[conf.STORAGE]


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
    if not task.result_url and not _output_urls(task):
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


# -- one download run ----------------------------------------------------------------------------


@dataclass
class DownloadOutcome:
    """What :func:`download_result` did: ``stored``, ``retry``, ``failed`` or ``skipped``."""

    outcome: str
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message}


@dataclass
class _Fetched:
    kind: str
    file: IO[bytes]
    size: int
    sha256: str
    content_type: str


def download_result(
    task_pk: int,
    queued_until: dt.datetime | None = None,
    *,
    now: dt.datetime | None = None,
    downloader: SafeDownloader | None = None,
    client: Any = None,
) -> DownloadOutcome:
    """Claim a pending download of task ``task_pk`` and run one attempt (the django-q2 job).

    Success stores every output, records it on the row, and writes a ``result_stored`` event
    whose ``task_result_stored`` signal is sent after commit. An expired URL (403/404/410)
    makes the feed be asked for fresh URLs and the attempt is retried once with them. Other
    failures are retried with backoff until ``DOWNLOAD_MAX_ATTEMPTS``; after the last one the
    task keeps ``succeeded`` with ``download_status = failed`` and a ``download_failed`` event.

    ``queued_until`` is the hold :func:`queue_due_downloads` put on the task when it queued
    this job: the job may claim the task before that time.
    """
    now = now or timezone.now()
    due = Q(download_retry_at__isnull=True) | Q(download_retry_at__lte=now)
    if queued_until is not None:
        due |= Q(download_retry_at=queued_until)
    owner = uuid.uuid4().hex
    lease = attempt_lease_seconds()
    claimed = (
        RunwayTask.objects.filter(
            pk=task_pk,
            status=Status.SUCCEEDED,
            download_status=DownloadStatus.PENDING,
        )
        .filter(due)
        .unleased(now)
        .update(
            lease_owner=owner,
            lease_expires_at=now + dt.timedelta(seconds=lease),
            download_attempts=F("download_attempts") + 1,
        )
    )
    if not claimed:
        return DownloadOutcome("skipped", "Not pending, not due, or claimed by another worker.")
    task = RunwayTask.objects.get(pk=task_pk)
    with ExitStack() as stack:  # the temporary files
        try:
            if downloader is None:
                downloader = SafeDownloader()
            try:
                fetched = _fetch_all(task, downloader, stack)
            except DownloadExpired as expired:
                _note_retry(task, expired, refreshing=True)
                _refresh_outputs(task, client=client)
                fetched = _fetch_all(task, downloader, stack)
        except DownloadError as exc:
            return _record_failure(task, owner, exc, now=timezone.now())
        except RunwayFeedError as exc:
            # Asking the feed for fresh URLs failed (API down, key refused ...): retry later.
            error = DownloadError(f"Could not get fresh output URLs: {exc}")
            return _record_failure(task, owner, error, now=timezone.now())
        except Exception as exc:
            # Whatever a hostile server manages to trigger, the task keeps its result URL and
            # the download is retried; the traceback goes to the log, not to the row.
            logger.exception("Unexpected error while downloading Runway task %s", task)
            error = DownloadError(f"Unexpected error while downloading: {type(exc).__name__}")
            return _record_failure(task, owner, error, now=timezone.now())
        try:
            return _store(task, owner, fetched)
        except Exception as exc:
            logger.exception("Saving the result of Runway task %s to storage failed", task)
            error = DownloadError(f"Saving to storage failed: {type(exc).__name__}")
            return _record_failure(task, owner, error, now=timezone.now())


def attempt_lease_seconds() -> float:
    """How long one attempt holds its claim: long enough that it never outlives it.

    An attempt fetches each output at most twice (again after asking the feed for fresh
    URLs). Each fetch ends within ``DOWNLOAD_MAX_DURATION`` plus one stalled hop: a connect
    and two reads (the headers, then the first chunk) of ``DOWNLOAD_TIMEOUT``.
    """
    timeout = conf.DOWNLOAD_TIMEOUT
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    per_fetch = conf.DOWNLOAD_MAX_DURATION + connect + 2 * read
    return 2 * len(KIND_ORDER) * per_fetch + 60


def _output_urls(task: RunwayTask) -> list[tuple[str, str]]:
    """``(kind, url)`` for each output to download: one per kind, video first."""
    found: dict[str, str] = {}
    for entry in task.outputs or []:
        if isinstance(entry, dict):
            kind, url = entry.get("kind"), entry.get("url")
            if kind in ALLOWED_CONTENT_TYPES and isinstance(url, str) and url:
                found.setdefault(str(kind), url)
    if task.result_url:
        found.setdefault("video", task.result_url)
    return [(kind, found[kind]) for kind in KIND_ORDER if kind in found]


def _fetch_all(task: RunwayTask, downloader: SafeDownloader, stack: ExitStack) -> list[_Fetched]:
    urls = _output_urls(task)
    if not urls or urls[0][0] != "video":
        # Asking the feed again (as for an expired URL) is the way to get one.
        raise DownloadExpired("The task has no video URL (yet).")
    fetched = []
    for kind, url in urls:
        handle = stack.enter_context(tempfile.TemporaryFile(prefix="runway-download-"))  # noqa: SIM115
        result = downloader.fetch(url, handle, content_type_prefix=ALLOWED_CONTENT_TYPES[kind])
        fetched.append(_Fetched(kind, handle, result.size, result.sha256, result.content_type))
    return fetched


def _refresh_outputs(task: RunwayTask, *, client: Any = None) -> None:
    """Ask the feed for the task again: Runway hands out fresh output URLs on each fetch."""
    from .client import CometAPIClient
    from .feed import parse_feed

    if not task.task_id:
        raise DownloadError("The task has no provider id to ask the feed about.")
    with ExitStack() as stack:
        if client is None:
            client = stack.enter_context(CometAPIClient(pool_size=1))
        snapshot = parse_feed(client.feed(task.task_id))
    if not snapshot.outputs:
        raise DownloadError("The feed gave no fresh output URLs.")
    task.outputs = [output._asdict() for output in snapshot.outputs]
    task.result_url = snapshot.result_url or task.result_url
    RunwayTask.objects.filter(pk=task.pk, status=Status.SUCCEEDED).update(
        outputs=task.outputs, result_url=task.result_url
    )


def _storage_name(task: RunwayTask, kind: str, content_type: str) -> str:
    # The extension decides how the site's media server labels the file, so it comes from a
    # fixed list: a hostile server's ``image/svg+xml`` or URL ending in ``.html`` must not turn
    # into a page that runs script on the site's own origin.
    extension = STORED_EXTENSIONS.get(content_type, ".bin")
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in (task.task_id or str(task.pk)))
    suffix = "" if kind == "video" else f"-{kind.replace('_', '-')}"
    return task.output_file.field.generate_filename(task, f"{stem[:100]}{suffix}{extension}")


def _store(task: RunwayTask, owner: str, fetched: list[_Fetched]) -> DownloadOutcome:
    storage = get_storage()
    replaced = _stored_names(task)  # a forced download's earlier copies
    saved: list[str] = []
    try:
        records = []
        for item in fetched:
            item.file.seek(0)
            name = storage.save(_storage_name(task, item.kind, item.content_type), File(item.file))
            saved.append(name)
            records.append(
                {
                    "kind": item.kind,
                    "name": name,
                    "size": item.size,
                    "sha256": item.sha256,
                    "content_type": item.content_type,
                }
            )
        video = next(r for r in records if r["kind"] == "video")
        poster = next((r for r in records if r["kind"] == "poster"), None)
        now = timezone.now()
        with transaction.atomic():
            updated = RunwayTask.objects.filter(
                pk=task.pk, lease_owner=owner, download_status=DownloadStatus.PENDING
            ).update(
                output_file=video["name"],
                poster_file=poster["name"] if poster else "",
                stored_files=records,
                output_size=video["size"],
                output_sha256=video["sha256"],
                output_content_type=video["content_type"],
                download_status=DownloadStatus.STORED,
                download_error="",
                download_retry_at=None,
                downloaded_at=now,
                lease_owner="",
                lease_expires_at=None,
                updated_at=now,
            )
            if updated:
                outdated = sorted(replaced - set(saved))
                transaction.on_commit(partial(_delete_quietly, storage, outdated), robust=True)
                task.refresh_from_db()
                message = f"Stored {len(records)} file(s); video {video['name']}."
                outbox.record_event(
                    task, EventKind.RESULT_STORED, message, payload={"files": records}, now=now
                )
    except Exception:
        _delete_quietly(storage, saved)
        raise
    if not updated:
        # Our lease ran out and someone else took over (or an operator reset the task).
        _delete_quietly(storage, saved)
        return DownloadOutcome("skipped", "Lost the claim before recording; nothing kept.")
    logger.info("Stored the result of Runway task %s", task)
    return DownloadOutcome("stored", message)


def _stored_names(task: RunwayTask) -> set[str]:
    names = {
        str(entry["name"])
        for entry in task.stored_files or []
        if isinstance(entry, dict) and entry.get("name")
    }
    names.update(name for name in (task.output_file.name, task.poster_file.name) if name)
    return names


def _delete_quietly(storage: Storage, names: list[str]) -> None:
    for name in names:
        try:
            storage.delete(name)
        except Exception:
            logger.exception("Could not delete the partly stored file %s", name)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts + 1``: doubling from DOWNLOAD_RETRY_DELAY."""
    return float(min(conf.DOWNLOAD_RETRY_DELAY * 2 ** max(0, attempts - 1), 6 * 60 * 60))


def _note_retry(task: RunwayTask, error: DownloadError, *, refreshing: bool) -> None:
    suffix = " Asking the feed for fresh URLs." if refreshing else ""
    outbox.record_note(
        task,
        EventKind.DOWNLOAD_RETRY,
        f"Attempt {task.download_attempts}: {error.message}{suffix}",
        payload={"attempt": task.download_attempts, "status_code": error.status_code},
    )


def _record_failure(
    task: RunwayTask, owner: str, error: DownloadError, *, now: dt.datetime
) -> DownloadOutcome:
    attempts = task.download_attempts
    final = not error.retryable or attempts >= conf.DOWNLOAD_MAX_ATTEMPTS
    values: dict[str, Any] = {
        "download_error": error.message,
        "lease_owner": "",
        "lease_expires_at": None,
        "updated_at": now,
    }
    if final:
        values.update(download_status=DownloadStatus.FAILED, download_retry_at=None)
    else:
        values["download_retry_at"] = now + dt.timedelta(seconds=retry_delay(attempts))
    with transaction.atomic():
        if not RunwayTask.objects.filter(pk=task.pk, lease_owner=owner).update(**values):
            return DownloadOutcome("skipped", "Lost the claim before recording the failure.")
        if final:
            why = "refused" if not error.retryable else f"failed {attempts} time(s)"
            message = f"Download {why}: {error.message}"
            logger.warning("Download of Runway task %s %s: %s", task, why, error.message)
            outbox.record_note(
                task,
                EventKind.DOWNLOAD_FAILED,
                message,
                payload={"attempt": attempts, "status_code": error.status_code},
            )
            return DownloadOutcome("failed", message)
        _note_retry(task, error, refreshing=False)
    logger.info("Download of Runway task %s failed, will retry: %s", task, error.message)
    return DownloadOutcome("retry", error.message)

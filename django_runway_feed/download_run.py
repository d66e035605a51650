"""One download run: claim a pending download, fetch a succeeded task's outputs with the
SSRF-guarded :class:`~django_runway_feed.safe_fetch.SafeDownloader`, and store them.

This is the django-q2 job's work (:func:`download_result`); queueing it, and the hooks that
mark a success for download, are in :mod:`django_runway_feed.downloads`, which re-exports the
names below.

Work on one task is claimed with a conditional ``UPDATE`` (the row's lease fields, which the
poller never uses on a succeeded task), so two workers never download the same task at once.
A failed attempt is retried with backoff until ``DOWNLOAD_MAX_ATTEMPTS``.
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

from . import outbox
from .conf import conf
from .exceptions import DownloadError, DownloadExpired, RunwayFeedError
from .models import DownloadStatus, EventKind, RunwayTask
from .safe_fetch import SafeDownloader
from .statuses import Status

logger = logging.getLogger(__name__)

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


def get_storage() -> Storage:
    """The storage results go to: ``STORAGES[RUNWAY_FEED['STORAGE']]``."""
    return storages[conf.STORAGE]


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

    ``queued_until`` is the hold ``downloads.queue_due_downloads()`` put on the task when it
    queued this job: the job may claim the task before that time.
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


def output_urls(task: RunwayTask) -> list[tuple[str, str]]:
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
    urls = output_urls(task)
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

"""Result persistence: copy a succeeded task's outputs into Django storage, safely.

Runway's output URLs expire within 24-48 hours, so with ``RUNWAY_FEED['DOWNLOAD_RESULTS']`` on,
every task that reaches ``succeeded`` gets a django-q2 job (queued after the transaction that
recorded the success commits) that copies its video, poster and last frame into the storage
named by ``RUNWAY_FEED['STORAGE']``.

The URLs come from a third party, so fetching them is treated as hostile input (server-side
request forgery): :class:`SafeDownloader` refuses userinfo, non-https schemes (unless allowed),
hosts outside ``ALLOWED_DOWNLOAD_HOSTS``, and any host that names or resolves to a loopback,
private, link-local, multicast, reserved or otherwise non-global address (unless its network
is in ``DOWNLOAD_ALLOWED_NETWORKS``). It connects to the exact address it checked, follows
redirects itself (each hop checked again), caps the body size and checks its content type.

Work on one task is claimed with a conditional ``UPDATE`` (the row's lease fields, which the
poller never uses on a succeeded task), so two workers never download the same task at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import outbox
from .client import user_agent
from .conf import conf
from .deadlines import Deadline, DeadlineAdapter, deadline
from .exceptions import (
    DownloadError,
    DownloadExpired,
    DownloadRefused,
    DownloadTooLarge,
    DownloadUnavailable,
    RunwayFeedError,
)
from .models import DownloadStatus, EventKind, RunwayTask, RunwayTaskQuerySet
from .statuses import Status

logger = logging.getLogger(__name__)

JOB = "django_runway_feed.jobs.download_result"
MAX_REDIRECTS = 5
CHUNK_SIZE = 64 * 1024
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
EXPIRED_STATUSES = frozenset({403, 404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
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

Resolver = Callable[[str, int], list[str]]


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
    from .services import _enqueue as enqueue_job

    if queued_until is None:
        enqueue_job(JOB, task_pk)
    else:
        enqueue_job(JOB, task_pk, queued_until.isoformat())


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


# -- the SSRF-safe fetcher -----------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup; the caller connects to one of these)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise DownloadError(f"Could not resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` names by itself, in any form a resolver would accept, or None.

    Catches the forms ``inet_aton`` accepts besides dotted quads: ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``, ``127.1``.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(part for part in host.split(".")) and host.replace(".", "").isalnum():
        first = host.split(".")[0].lower()
        if first[:1].isdigit() or first.startswith("0x"):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
    return None


def spelled(address: IPAddress) -> str:
    """How messages name ``address``: an IPv4-mapped one as the IPv4 address it maps to.

    Python 3.13 prints ``::ffff:7f00:1`` as ``::ffff:127.0.0.1``; this spelling is the same on
    every Python.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def address_problem(address: IPAddress, allowed_networks: list[Any]) -> str:
    """Why connecting to ``address`` is refused, or ``""`` when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed_networks):
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        # A 6to4 address is carried to the IPv4 address inside it, through whatever relay the
        # network has. Refused unless that IPv4 address is itself allowed: Python 3.13 (and
        # some patched older builds) count all of 2002::/16 as private, older ones judge only
        # the prefix; our rule is the same on every Python.
        inner = address.sixtofour
        problem = address_problem(inner, allowed_networks)
        if problem:
            return f"{address} is a 6to4 address ({problem})"
        if any(inner in network for network in allowed_networks):
            return ""
        return f"{address} is a 6to4 address (relayed to {inner}; not globally reachable)"
    for label, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", getattr(address, "is_site_local", False)),
        ("not globally routable", not address.is_global),
    ):
        if flag:
            return f"{address} is {label}"
    return ""


@dataclass
class FetchResult:
    url: str
    size: int
    sha256: str
    content_type: str


class _PinnedAdapter(DeadlineAdapter):
    """Connects to one checked address while the request keeps its hostname.

    Its connections obey the fetch's :func:`~django_runway_feed.deadlines.deadline`.

    The Host header and, for https, the TLS SNI and certificate check use the hostname; the
    TCP connection goes to ``address``, so no second DNS lookup can swap the target. The hook
    it overrides exists since requests 2.32.2 (hence the package's minimum).
    """

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        hostname = host_params["host"]
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


class SafeDownloader:
    """Fetches untrusted URLs into a file, refusing anything that could reach inside.

    Every argument defaults to the ``RUNWAY_FEED`` settings. ``resolver(host, port)`` returns
    the host's addresses (tests pass their own; the default asks the system once per hop).
    ``verify`` is requests' ``verify``: True (the default CA bundle) or a CA bundle path.
    Sends no credentials: a fresh session, no Authorization header, no cookies kept, no proxy
    from the environment (a proxy would do its own lookup).
    """

    def __init__(
        self,
        *,
        allow_http: bool | None = None,
        allowed_hosts: list[str] | None = None,
        allowed_networks: list[str] | None = None,
        max_bytes: int | None = None,
        timeout: float | tuple[float, float] | None = None,
        max_duration: float | None = None,
        resolver: Resolver | None = None,
        verify: bool | str = True,
    ) -> None:
        self.allow_http = conf.DOWNLOAD_ALLOW_HTTP if allow_http is None else allow_http
        hosts = conf.ALLOWED_DOWNLOAD_HOSTS if allowed_hosts is None else allowed_hosts
        self.allowed_hosts = [h.lower().rstrip(".") for h in hosts] if hosts is not None else None
        networks = conf.DOWNLOAD_ALLOWED_NETWORKS if allowed_networks is None else allowed_networks
        self.allowed_networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.max_bytes = max_bytes or conf.MAX_DOWNLOAD_BYTES
        self.timeout = timeout if timeout is not None else conf.DOWNLOAD_TIMEOUT
        self.max_duration = max_duration or conf.DOWNLOAD_MAX_DURATION
        self.resolver = resolver or system_resolver
        self.verify = verify

    # Checks ------------------------------------------------------------------------------------

    def _host_allowed(self, host: str) -> bool:
        if self.allowed_hosts is None:
            return True
        for pattern in self.allowed_hosts:
            if pattern.startswith("."):
                if host.endswith(pattern) or host == pattern[1:]:
                    return True
            elif host == pattern:
                return True
        return False

    def check_url(self, url: str) -> tuple[str, str, int, str]:
        """``(scheme, host, port, address)`` to connect to, or :class:`DownloadRefused`."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DownloadRefused(f"Refused {_safe(url)}: not a valid URL ({exc}).") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise DownloadRefused(f"Refused {_safe(url)}: only https URLs are downloaded.")
        if scheme == "http" and not self.allow_http:
            raise DownloadRefused(
                f"Refused {_safe(url)}: plain http is off "
                "(RUNWAY_FEED['DOWNLOAD_ALLOW_HTTP'] = True allows it)."
            )
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            raise DownloadRefused(f"Refused {_safe(url)}: URLs with a user name are not followed.")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise DownloadRefused(f"Refused {_safe(url)}: the URL has no host.")
        if not self._host_allowed(host):
            raise DownloadRefused(
                f"Refused {_safe(url)}: {host} is not in RUNWAY_FEED['ALLOWED_DOWNLOAD_HOSTS']."
            )
        port = port or (443 if scheme == "https" else 80)
        literal = ip_literal(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = self.resolver(host, port)
            if not addresses:
                raise DownloadError(f"{host} resolved to no address.")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise DownloadRefused(f"Refused {_safe(url)}: bad address {text!r}.") from None
            problem = address_problem(address, self.allowed_networks)
            if problem:
                shown = spelled(address)
                via = "" if literal is not None and host == shown else f" ({host} -> {shown})"
                raise DownloadRefused(
                    f"Refused {_safe(url)}: {problem}{via}; add its network to "
                    "RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] only if it is trusted."
                )
        return scheme, host, port, addresses[0].split("%", 1)[0]

    # Fetching ----------------------------------------------------------------------------------

    @contextmanager
    def _open(self, url: str, bound: Deadline) -> Iterator[requests.Response]:
        """GET ``url`` (checked), following redirects by hand; yields the final response."""
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_deadline(url, bound)
            scheme, host, port, address = self.check_url(url)
            session = requests.Session()
            session.trust_env = False  # no proxies, no .netrc credentials from the environment
            # Both prefixes: no request of this session may fall back to requests' own
            # adapters, which would look the name up again.
            pinned = _PinnedAdapter(address)
            session.mount("https://", pinned)
            session.mount("http://", pinned)
            default_port = 443 if scheme == "https" else 80
            netloc = f"[{host}]" if ":" in host else host
            headers = {
                "Host": netloc if port == default_port else f"{netloc}:{port}",
                "User-Agent": user_agent(),
                "Accept": "video/*, image/*;q=0.9",
                "Accept-Encoding": "identity",
            }
            try:
                response = session.get(
                    url,
                    headers=headers,
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                session.close()
                self._check_deadline(url, bound)
                raise DownloadError(f"Could not fetch {_safe(url)}: {type(exc).__name__}") from None
            try:
                # A connection cut at the deadline can leave a half answer that parses.
                self._check_deadline(url, bound)
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("Location", "")
                    if not location:
                        raise DownloadError(f"{_safe(url)} redirected without a Location.")
                    url = urljoin(url, location)
                    continue
                yield response
                return
            finally:
                response.close()
                session.close()
        raise DownloadRefused(f"Refused: more than {MAX_REDIRECTS} redirects.")

    def _check_deadline(self, url: str, bound: Deadline) -> None:
        if bound.passed():
            raise DownloadError(
                f"{_safe(url)} took longer than RUNWAY_FEED['DOWNLOAD_MAX_DURATION'] "
                f"({self.max_duration:g} s)."
            )

    def fetch(self, url: str, target: IO[bytes], *, content_type_prefix: str) -> FetchResult:
        """Stream ``url`` into ``target`` (hashing it); refuse wrong types and oversize bodies.

        On any error ``target`` may hold part of the body; the caller discards it.
        """
        # The watchdog cuts the connection off at the deadline, even inside one trickled read
        # of the headers or the body; whatever the cut leaves is then reported as too slow.
        with deadline(self.max_duration) as bound:
            return self._fetch_within(url, target, content_type_prefix, bound)

    def _fetch_within(
        self, url: str, target: IO[bytes], content_type_prefix: str, bound: Deadline
    ) -> FetchResult:
        with self._open(url, bound) as response:
            status = response.status_code
            where = _safe(response.url or url)
            if status in EXPIRED_STATUSES:
                raise DownloadExpired(
                    f"{where} answered HTTP {status} (the URL has probably expired).",
                    status_code=status,
                )
            if status != 200:
                raise DownloadError(f"{where} answered HTTP {status}.", status_code=status)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not content_type.startswith(content_type_prefix):
                raise DownloadRefused(
                    f"Refused {where}: content type {content_type or 'none'!r} is not "
                    f"{content_type_prefix}*.",
                    status_code=status,
                )
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                # Asked for identity; a compressed body could inflate far past the byte cap
                # within one chunk before the cap is checked.
                raise DownloadRefused(
                    f"Refused {where}: it came {encoding}-encoded, which was not asked for.",
                    status_code=status,
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise DownloadTooLarge(
                    f"Refused {where}: {declared} bytes is more than "
                    f"RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] ({self.max_bytes}).",
                    status_code=status,
                )
            digest = hashlib.sha256()
            size = 0
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise DownloadTooLarge(
                            f"Refused {where}: the body went past "
                            f"RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] ({self.max_bytes} bytes).",
                            status_code=status,
                        )
                    self._check_deadline(where, bound)
                    digest.update(chunk)
                    target.write(chunk)
            except requests.RequestException as exc:
                self._check_deadline(where, bound)
                raise DownloadError(
                    f"Download of {where} broke off after {size} bytes: {type(exc).__name__}"
                ) from None
            # A cut connection ends the body early: without a declared length that looks
            # like the end of the file.
            self._check_deadline(where, bound)
            if declared.isdigit() and size != int(declared):
                raise DownloadError(f"{where} sent {size} of {declared} bytes.")
            target.flush()
            return FetchResult(where, size, digest.hexdigest(), content_type)


def _safe(url: str) -> str:
    """The URL without its query string (signed CDN URLs carry credentials there), shortened."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL"
    # Never echo userinfo: it may hold a password.
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    if parts.query:
        shown += "?..."
    return shown if len(shown) <= 200 else shown[:197] + "..."

"""The result download API's public import path: ``from django_runway_feed.storage import ...``.

Import the download functions from here, as docs/downloads.md does
(``storage.stored_file_url()``, ``storage.queue_download()`` ...). The code behind them lives in
:mod:`django_runway_feed.downloads`, which copies a succeeded task's outputs into storage, and
:mod:`django_runway_feed.safe_fetch`, the SSRF-guarded fetcher it uses. Those two modules are
internal and may be reorganised; the names re-exported here keep working.
"""

from __future__ import annotations

from .downloads import (
    ALLOWED_CONTENT_TYPES,
    DOWNLOADS_OFF,
    DUE_BATCH,
    JOB,
    KIND_ORDER,
    PENDING_AFRESH,
    QUEUED_HOLD_SECONDS,
    STORED_EXTENSIONS,
    DownloadOutcome,
    attempt_lease_seconds,
    download_now,
    download_result,
    downloads_enabled,
    first_downloads_waiting,
    get_storage,
    missing_downloads,
    on_task_succeeded,
    queue_download,
    queue_due_downloads,
    retry_delay,
    stored_file_url,
    unavailable_reason,
)
from .safe_fetch import (
    CHUNK_SIZE,
    EXPIRED_STATUSES,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    FetchResult,
    IPAddress,
    Resolver,
    SafeDownloader,
    address_problem,
    ip_literal,
    spelled,
    system_resolver,
)

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "CHUNK_SIZE",
    "DOWNLOADS_OFF",
    "DUE_BATCH",
    "EXPIRED_STATUSES",
    "JOB",
    "KIND_ORDER",
    "MAX_REDIRECTS",
    "PENDING_AFRESH",
    "QUEUED_HOLD_SECONDS",
    "REDIRECT_STATUSES",
    "STORED_EXTENSIONS",
    "DownloadOutcome",
    "FetchResult",
    "IPAddress",
    "Resolver",
    "SafeDownloader",
    "address_problem",
    "attempt_lease_seconds",
    "download_now",
    "download_result",
    "downloads_enabled",
    "first_downloads_waiting",
    "get_storage",
    "ip_literal",
    "missing_downloads",
    "on_task_succeeded",
    "queue_download",
    "queue_due_downloads",
    "retry_delay",
    "spelled",
    "stored_file_url",
    "system_resolver",
    "unavailable_reason",
]

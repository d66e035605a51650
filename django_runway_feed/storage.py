"""The result download API under its first name; the code lives in two modules now.

:mod:`django_runway_feed.downloads` copies a succeeded task's outputs into storage, and
:mod:`django_runway_feed.safe_fetch` is the SSRF-guarded fetcher it uses. The names below keep
working from here (``from django_runway_feed.storage import stored_file_url``); new code
imports them from those modules.
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

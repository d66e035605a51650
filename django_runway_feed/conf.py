"""The ``RUNWAY_FEED`` settings dict, read on every access so ``override_settings`` works.

Nothing here is evaluated at import time: each attribute of :data:`conf` looks the setting up
when it is read. Validation lives in :mod:`django_runway_feed.checks`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "API_KEY": None,
    "BASE_URL": "https://api.cometapi.com",
    "RUNWAY_VERSION": "2024-11-06",
    "REQUEST_TIMEOUT": (5, 30),
    "MAX_RESPONSE_BYTES": 1_000_000,
    "POLL_INTERVAL": 5,
    "MAX_POLL_INTERVAL": 60,
    "NOT_FOUND_GRACE": 120,
    "TASK_TIMEOUT": 6 * 60 * 60,
    "BATCH_SIZE": 100,
    "CONCURRENCY": 8,
    "LEASE_SECONDS": 120,
    # Well under CometAPI's documented per-key ceiling (30,000 RPM), above one CONCURRENCY=16
    # run at 100 ms latency (~160 requests/s). None disables the budget.
    "MAX_REQUESTS_PER_SECOND": 200,
    "POLL_WINDOW": 50,
    "SCHEDULE_NAME": "django_runway_feed.poll",
    "AUTO_SCHEDULE": True,
    "CALLBACK_BASE_URL": None,
    # The cadence's memory (docs/polling.md): relax while callbacks arrive; learn run times.
    "TRUST_CALLBACKS": True,
    "LEARN_RUN_TIMES": True,
    "PRUNE_AFTER_DAYS": None,
    # Operations: an unfinished task older than this is "stuck" (task_stale); no successful
    # poll run for longer than this while tasks wait is a health error.
    "STALE_AFTER": 30 * 60,
    "HEARTBEAT_MAX_AGE": 5 * 60,
    "DOWNLOAD_RESULTS": False,
    "STORAGE": "default",
    "MAX_DOWNLOAD_BYTES": 500 * 1024 * 1024,
    "ALLOWED_DOWNLOAD_HOSTS": None,
    # Result downloads (storage.py): plain http and private networks are refused unless allowed.
    "DOWNLOAD_ALLOW_HTTP": False,
    "DOWNLOAD_ALLOWED_NETWORKS": [],
    "DOWNLOAD_MAX_ATTEMPTS": 5,
    "DOWNLOAD_RETRY_DELAY": 60,
    "DOWNLOAD_TIMEOUT": (5, 30),
    "DOWNLOAD_MAX_DURATION": 600,
}

# Keys holding a duration accept a number of seconds or a timedelta.
DURATION_KEYS = frozenset(
    {
        "POLL_INTERVAL",
        "MAX_POLL_INTERVAL",
        "NOT_FOUND_GRACE",
        "TASK_TIMEOUT",
        "LEASE_SECONDS",
        "POLL_WINDOW",
        "STALE_AFTER",
        "HEARTBEAT_MAX_AGE",
        "DOWNLOAD_RETRY_DELAY",
        "DOWNLOAD_MAX_DURATION",
    }
)


def user_settings() -> dict[str, Any]:
    """The site's ``RUNWAY_FEED`` dict (empty when unset or not a dict; checks report that)."""
    value = getattr(settings, "RUNWAY_FEED", None)
    return value if isinstance(value, dict) else {}


def q_cluster() -> dict[str, Any] | None:
    """django-q2's ``Q_CLUSTER`` dict, or None when it is unset or not a dict (checks say so).

    The one place the app reads it: the system checks, the health report, the job queue and
    the poll run's hand-back all ask here.
    """
    value = getattr(settings, "Q_CLUSTER", None)
    return value if isinstance(value, dict) else None


def _get(name: str) -> Any:
    return user_settings().get(name, DEFAULTS[name])


def _as_seconds(value: Any) -> float:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value)


def _seconds(name: str) -> float:
    return _as_seconds(_get(name))


def _timeout(name: str) -> float | tuple[float, float]:
    """A requests timeout: seconds, or a ``(connect, read)`` pair of them."""
    value = _get(name)
    if isinstance(value, list | tuple):
        return (_as_seconds(value[0]), _as_seconds(value[1]))
    return _as_seconds(value)


class RunwayFeedSettings:
    """Typed, always-current view of ``RUNWAY_FEED`` merged over :data:`DEFAULTS`."""

    @property
    def API_KEY(self) -> str | None:
        value = _get("API_KEY")
        return str(value) if value else None

    @property
    def BASE_URL(self) -> str:
        return str(_get("BASE_URL")).rstrip("/")

    @property
    def RUNWAY_VERSION(self) -> str:
        return str(_get("RUNWAY_VERSION"))

    @property
    def REQUEST_TIMEOUT(self) -> float | tuple[float, float]:
        return _timeout("REQUEST_TIMEOUT")

    @property
    def MAX_RESPONSE_BYTES(self) -> int:
        return int(_get("MAX_RESPONSE_BYTES"))

    @property
    def POLL_INTERVAL(self) -> float:
        return _seconds("POLL_INTERVAL")

    @property
    def MAX_POLL_INTERVAL(self) -> float:
        return _seconds("MAX_POLL_INTERVAL")

    @property
    def NOT_FOUND_GRACE(self) -> float:
        return _seconds("NOT_FOUND_GRACE")

    @property
    def TASK_TIMEOUT(self) -> float:
        return _seconds("TASK_TIMEOUT")

    @property
    def BATCH_SIZE(self) -> int:
        return int(_get("BATCH_SIZE"))

    @property
    def CONCURRENCY(self) -> int:
        return int(_get("CONCURRENCY"))

    @property
    def LEASE_SECONDS(self) -> float:
        return _seconds("LEASE_SECONDS")

    @property
    def MAX_REQUESTS_PER_SECOND(self) -> float | None:
        value = _get("MAX_REQUESTS_PER_SECOND")
        return float(value) if value else None

    @property
    def POLL_WINDOW(self) -> float:
        return _seconds("POLL_WINDOW")

    @property
    def SCHEDULE_NAME(self) -> str:
        return str(_get("SCHEDULE_NAME"))

    @property
    def AUTO_SCHEDULE(self) -> bool:
        return bool(_get("AUTO_SCHEDULE"))

    @property
    def CALLBACK_BASE_URL(self) -> str | None:
        value = _get("CALLBACK_BASE_URL")
        return str(value).rstrip("/") if value else None

    @property
    def TRUST_CALLBACKS(self) -> bool:
        return bool(_get("TRUST_CALLBACKS"))

    @property
    def LEARN_RUN_TIMES(self) -> bool:
        return bool(_get("LEARN_RUN_TIMES"))

    @property
    def PRUNE_AFTER_DAYS(self) -> int | None:
        value = _get("PRUNE_AFTER_DAYS")
        return int(value) if value is not None else None

    @property
    def STALE_AFTER(self) -> float:
        return _seconds("STALE_AFTER")

    @property
    def HEARTBEAT_MAX_AGE(self) -> float:
        return _seconds("HEARTBEAT_MAX_AGE")

    @property
    def DOWNLOAD_RESULTS(self) -> bool:
        return bool(_get("DOWNLOAD_RESULTS"))

    @property
    def STORAGE(self) -> str:
        return str(_get("STORAGE"))

    @property
    def MAX_DOWNLOAD_BYTES(self) -> int:
        return int(_get("MAX_DOWNLOAD_BYTES"))

    @property
    def ALLOWED_DOWNLOAD_HOSTS(self) -> list[str] | None:
        value = _get("ALLOWED_DOWNLOAD_HOSTS")
        return list(value) if value is not None else None

    @property
    def DOWNLOAD_ALLOW_HTTP(self) -> bool:
        return bool(_get("DOWNLOAD_ALLOW_HTTP"))

    @property
    def DOWNLOAD_ALLOWED_NETWORKS(self) -> list[str]:
        return [str(network) for network in _get("DOWNLOAD_ALLOWED_NETWORKS") or ()]

    @property
    def DOWNLOAD_MAX_ATTEMPTS(self) -> int:
        return int(_get("DOWNLOAD_MAX_ATTEMPTS"))

    @property
    def DOWNLOAD_RETRY_DELAY(self) -> float:
        return _seconds("DOWNLOAD_RETRY_DELAY")

    @property
    def DOWNLOAD_TIMEOUT(self) -> float | tuple[float, float]:
        return _timeout("DOWNLOAD_TIMEOUT")

    @property
    def DOWNLOAD_MAX_DURATION(self) -> float:
        return _seconds("DOWNLOAD_MAX_DURATION")


conf = RunwayFeedSettings()

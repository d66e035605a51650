"""The checks of how the host site is wired around the app: served media and the callback origin.

Like :mod:`django_runway_feed.settings_checks` (which runs E022 and E030 with the other settings
checks), they read settings only. W030 judges a production setup, so
:mod:`django_runway_feed.checks` registers it for ``check --deploy`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import conf

ID = "django_runway_feed"


def _split(url: str) -> SplitResult:
    """``urlsplit``, with an unreadable URL (``http://[::1``) read as having no host."""
    try:
        return urlsplit(url)
    except ValueError:
        return SplitResult("", "", url, "", "")


def check_media_url(storage: Any) -> list[CheckMessage]:
    """E022: downloads go to a file-system storage whose files have no URL (no MEDIA_URL)."""
    from django.core.files.storage import FileSystemStorage
    from django.urls import get_script_prefix
    from django.utils.module_loading import import_string

    if not isinstance(storage, dict) or (storage.get("OPTIONS") or {}).get("base_url"):
        return []
    try:
        backend = import_string(str(storage.get("BACKEND", "")))
    except ImportError:
        return []  # Django's own storage errors say more
    if not (isinstance(backend, type) and issubclass(backend, FileSystemStorage)):
        return []
    # Django turns an empty MEDIA_URL into the script prefix ("/"): the site's root, where no
    # file is ever served.
    media_url = str(getattr(settings, "MEDIA_URL", "") or "")
    if _split(media_url).netloc or media_url.strip("/") != get_script_prefix().strip("/"):
        return []
    return [
        Error(
            "RUNWAY_FEED['DOWNLOAD_RESULTS'] is on and the videos go to MEDIA_ROOT, but "
            "MEDIA_URL is not set (or is the site's root): task.output_file.url would lead "
            "nowhere and the admin's player would never play a stored video.",
            hint="Set MEDIA_URL = 'media/' and serve MEDIA_ROOT there: in development add "
            "static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT) to your URLconf "
            "(docs/quickstart.md, 'Keep the video'), in production your web server.",
            id=f"{ID}.E022",
        )
    ]


def check_callback_origin() -> list[CheckMessage]:
    """E030: ``CALLBACK_BASE_URL`` holds a path (or no host), so callback URLs would miss."""

    base = conf.CALLBACK_BASE_URL
    if not base:
        return []
    parts = _split(base)
    if parts.hostname and not (parts.path or parts.query or parts.fragment):
        return []
    origin = f"{parts.scheme}://{parts.netloc}" if parts.hostname else "https://www.example.com"
    return [
        Error(
            f"RUNWAY_FEED['CALLBACK_BASE_URL'] is {base!r}, which is more than a scheme and a "
            "host: the app appends the callback view's whole path from your URLconf, so "
            "callbacks would go to an address that does not exist.",
            hint=f"Set RUNWAY_FEED['CALLBACK_BASE_URL'] = {origin!r} (no path).",
            id=f"{ID}.E030",
        )
    ]


def check_callback_reachable(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W030 (``check --deploy``): a callback origin CometAPI could never reach."""
    import ipaddress

    raw = getattr(settings, "RUNWAY_FEED", {})
    value = raw.get("CALLBACK_BASE_URL") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return []  # unset, or E002 already reports it
    host = (_split(value).hostname or "").rstrip(".").lower()
    try:
        local = not ipaddress.ip_address(host).is_global
    except ValueError:
        local = host == "localhost" or host.endswith((".localhost", ".local"))
    if not local:
        return []
    return [
        Warning(
            f"RUNWAY_FEED['CALLBACK_BASE_URL'] points at {host!r}, a loopback, private, "
            "link-local or .local address that CometAPI can never reach from the internet: "
            "no callback will arrive and every task waits for its next poll.",
            hint="Set RUNWAY_FEED['CALLBACK_BASE_URL'] to your site's public origin, or to None "
            "where the site is not reachable (development).",
            id=f"{ID}.W030",
        )
    ]

"""How the admin pages show values: badges, progress bars, excerpts, JSON and links.

Everything that came from the API is escaped here (``format_html``), and only ``http``/``https``
URLs become links or media sources.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from ..counting import count_up_to
from ..statuses import Status

PROMPT_EXCERPT = 60
ERROR_EXCERPT = 80


STATUS_CLASSES = {status.value: status.value for status in Status}
# Lists and the summary count rows up to this many, then say "more than": an exact count of a
# million rows reads them all, on every page view.
COUNT_LIMIT = 10_000


class BoundedPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that counts at most ``COUNT_LIMIT + 1`` rows.

    Past that, the list shows "more than COUNT_LIMIT" and pages up to there; filters, a search
    or the date drill-down narrow it down.
    """

    limit = COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        return count_up_to(self.object_list, self.limit)  # type: ignore[arg-type]

    @property
    def count_is_bounded(self) -> bool:
        return self.count > self.limit


def web_url(url: object, *, allow_path: bool = False) -> str | None:
    """``url`` if a browser may follow it: ``http``/``https`` with a host, else None.

    ``allow_path`` also accepts a site-relative path (``/media/...``), which is what the
    site's own storage answers; URLs from the API never get that allowance.
    """
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        # urlsplit drops the tabs, newlines and leading blanks a browser would also ignore,
        # so "java\tscript:" and " javascript:" are judged by the scheme the browser sees.
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return parts.geturl()
    if allow_path and not parts.scheme and not parts.netloc and parts.path.startswith("/"):
        return parts.geturl()
    return None


def url_or_text(url: str, label: str | None = None) -> SafeString:
    """A link when ``url`` is a web URL, else the value as inert text."""
    safe = web_url(url)
    if safe:
        return format_html(
            '<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>', safe, label or url
        )
    return format_html(
        '<code class="rf-inert" title="{}">{}</code>',
        _("Not an http(s) URL: not linked."),
        url,
    )


def pretty_json(value: Any) -> SafeString:
    if value in (None, "", {}, []):
        return format_html('<span class="rf-muted">{}</span>', _("(empty)"))
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="rf-json">{}</pre>', text)


def duration(seconds: float) -> str:
    """A compact duration: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def status_badge(status: str, label: str) -> SafeString:
    css = STATUS_CLASSES.get(status, "unknown")
    return format_html('<span class="rf-badge rf-badge--{}">{}</span>', css, label)


def progress_bar(progress: int, status: str) -> SafeString:
    value = max(0, min(100, int(progress or 0)))
    css = STATUS_CLASSES.get(status, "unknown")
    return format_html(
        '<span class="rf-progress-cell"><span class="rf-progress" role="progressbar" '
        'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{0}">'
        '<span class="rf-progress__fill rf-progress__fill--{1}" style="width: {0}%"></span>'
        '</span><span class="rf-progress__label">{0}%</span></span>',
        value,
        css,
    )


def time_text(value: dt.datetime) -> str:
    """A time to the second, in the site's time zone."""
    try:
        local = timezone.localtime(value) if timezone.is_aware(value) else value
    except OverflowError:
        # Year 1 or 9999 (a gateway's word, stored before it was checked): the zone's offset
        # would leave the calendar, so the time is shown as stored, in UTC.
        utc = value.astimezone(dt.UTC) if timezone.is_aware(value) else value
        return utc.replace(tzinfo=None).isoformat(" ", "seconds") + " UTC"
    return format_date(local, "Y-m-d H:i:s")


def exact_time(value: dt.datetime | None) -> SafeString | None:
    """``time_text`` in a ``<time>`` element; None shows as the admin's "-"."""
    if value is None:
        return None
    return format_html(
        '<time class="rf-time" datetime="{}">{}</time>', value.isoformat(), time_text(value)
    )


def time_field(model: type[Any], name: str, *, description: Any = None) -> Any:
    """A read-only display of the datetime field ``name`` with seconds (the admin's own
    format stops at minutes, so every time of a quick task looked the same)."""

    label = description or model._meta.get_field(name).verbose_name

    @admin.display(description=label, ordering=name)
    def show(model_admin: Any, obj: Any) -> SafeString | str:
        return exact_time(getattr(obj, name)) or model_admin.get_empty_value_display()

    return show


def excerpt(text: str, length: int) -> SafeString | None:
    if not text:
        return None
    short = Truncator(" ".join(text.split())).chars(length)
    return format_html('<span title="{}">{}</span>', text, short)

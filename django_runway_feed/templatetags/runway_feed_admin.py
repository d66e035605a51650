"""Template tags of the task list: a date drill-down that costs one indexed query."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

register = template.Library()


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _bounds(year: int | None, month: int | None) -> tuple[dt.datetime, dt.datetime] | None:
    """The period the drill-down is in (a year or a month), in the current time zone."""
    if year is None:
        return None
    if month is None:
        start, end = dt.datetime(year, 1, 1), dt.datetime(year + 1, 1, 1)
    else:
        start = dt.datetime(year, month, 1)
        end = dt.datetime(year + month // 12, month % 12 + 1, 1)
    zone = timezone.get_current_timezone()
    return timezone.make_aware(start, zone), timezone.make_aware(end, zone)


@register.inclusion_tag("admin/date_hierarchy.html")
def runway_date_hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date drill-down, from the first and last dates of the period only.

    Django's own lists the distinct years (months, days) of the filtered rows, which reads
    every row. This one reads the first and last ``created_at`` of the period shown, across
    all rows (two ends of an index), and offers every year, month or day in between: one may
    turn out empty for the filters or search in use.
    """
    name = cl.date_hierarchy
    year = _int(cl.params.get(f"{name}__year", ""))
    month = _int(cl.params.get(f"{name}__month", ""))
    day = _int(cl.params.get(f"{name}__day", ""))
    if year is None:
        month = None
    if month is None or not 1 <= month <= 12:
        month, day = None, None

    def link(filters: dict[str, object]) -> str:
        return str(cl.get_query_string(filters, [f"{name}__"]))

    if year is not None and month is not None and day is not None:
        try:
            chosen = dt.date(year, month, day)
        except ValueError:
            return {"show": False}
        return {
            "show": True,
            "back": {
                "link": link({f"{name}__year": year, f"{name}__month": month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    rows = cl.root_queryset
    period = _bounds(year, month)
    if period is not None:
        rows = rows.filter(**{f"{name}__gte": period[0], f"{name}__lt": period[1]})
    ends = rows.aggregate(first=Min(name), last=Max(name))
    if ends["first"] is None or ends["last"] is None:
        return {"show": False}
    first, last = timezone.localtime(ends["first"]), timezone.localtime(ends["last"])
    if year is None and first.year == last.year:
        year = first.year  # one year only: start with its months, as Django does
    if year is not None and month is None and first.year == last.year == year:
        months = range(first.month, last.month + 1)
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({f"{name}__year": year, f"{name}__month": number}),
                    "title": capfirst(
                        formats.date_format(dt.date(year, number, 1), "YEAR_MONTH_FORMAT")
                    ),
                }
                for number in months
            ],
        }
    if year is not None and month is not None:
        days = range(first.day, last.day + 1)
        return {
            "show": True,
            "back": {"link": link({f"{name}__year": year}), "title": str(year)},
            "choices": [
                {
                    "link": link(
                        {f"{name}__year": year, f"{name}__month": month, f"{name}__day": n}
                    ),
                    "title": capfirst(
                        formats.date_format(dt.date(year, month, n), "MONTH_DAY_FORMAT")
                    ),
                }
                for n in days
            ],
        }
    return {
        "show": True,
        "choices": [
            {"link": link({f"{name}__year": number}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }

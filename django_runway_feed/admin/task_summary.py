"""The task list's summary (counts per status, the poller's state) and the live view that keeps
the list and the task page up to date.

The counts come from :func:`django_runway_feed.health.bounded_status_counts`, the same counts
``runway_status`` reports, so the summary costs a fixed number of queries whatever the size of
the table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.translation import gettext_lazy as _

from ..counting import estimated_rows
from ..health import bounded_status_counts, gateway_state
from ..models import PollerState, RunwayTask
from ..pause import pause_in_effect
from ..statuses import UNFINISHED_STATUSES, Status
from .base import TaskAdminBase
from .display import COUNT_LIMIT, duration, time_text

# The live view answers for at most this many tasks per request (a list page shows 50).
LIVE_MAX_TASKS = 100


def last_success_text(last_success_at: dt.datetime | None, *, now: dt.datetime) -> str:
    """``12 s ago`` / ``3 min ago`` / ``never``: never "0 minutes ago"."""
    if last_success_at is None:
        return str(_("never"))
    return str(_("%(time)s ago") % {"time": duration((now - last_success_at).total_seconds())})


def pause_text(summary: dict[str, Any]) -> str:
    if not summary["paused_until"]:
        return ""
    return str(
        _("Polling is paused until %(until)s: CometAPI refused the API key.")
        % {"until": time_text(summary["paused_until"])}
    )


def live_summary(summary: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
    """What the list's script needs of :meth:`TaskSummaryMixin.summary`, as JSON values."""
    return {
        "counts": {row["status"]: count_text(row) for row in summary["counts"]},
        "unfinished": summary["unfinished"],
        "last_success": last_success_text(summary["last_success_at"], now=now),
        "paused": pause_text(summary),
        "pause_reason": summary["pause_reason"],
    }


def count_text(row: dict[str, Any]) -> str:
    """A summary count as the list shows it: ``12``, or ``more than 10,000`` past the limit."""
    if row.get("more_than"):
        return str(_("more than %(limit)s") % {"limit": localize(row["count"])})
    return str(row["count"])


def live_task(status: str, progress: int | None) -> dict[str, Any]:
    return {
        "status": status,
        "label": str(Status(status).label) if status in Status.values else status,
        "progress": max(0, min(100, int(progress or 0))),
    }


class TaskSummaryMixin(TaskAdminBase):
    """The summary above the task list, and the JSON view the pages' script polls."""

    def summary(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Counts per status, unfinished tasks, and the poller's state.

        Unfinished tasks are counted exactly; each finished status up to ``COUNT_LIMIT + 1``,
        as a year of them is most of the table (see ``health.bounded_status_counts``). The
        total is then PostgreSQL's estimate, or at least the sum.
        """
        now = now or timezone.now()
        counts, past = bounded_status_counts(limit=COUNT_LIMIT)
        bounded = set(past)
        counted = sum(counts.values())
        state = PollerState.objects.filter(pk=1).first()  # never a write on a GET
        paused = state is not None and pause_in_effect(state, now)
        return {
            "counts": [
                {
                    "status": s.value,
                    "label": s.label,
                    "count": COUNT_LIMIT if s in bounded else counts.get(s.value, 0),
                    "more_than": s in bounded,
                }
                for s in Status
            ],
            "total": None if bounded else counted,
            # What the list's paginator may take as its count: exact, or past the limit.
            "counted": min(counted, COUNT_LIMIT + 1),
            "estimated_total": estimated_rows(RunwayTask) if bounded else None,
            "count_limit": COUNT_LIMIT,
            "unfinished": sum(counts.get(s, 0) for s in UNFINISHED_STATUSES),
            "last_success_at": state.last_success_at if state else None,
            "paused_until": state.paused_until if state and paused else None,
            "pause_reason": state.pause_reason if state and paused else "",
            "gateway": gateway_state(state, now=now),
        }

    def live_view(self, request: HttpRequest) -> JsonResponse:
        """The status, label and progress of the tasks in ``?ids=1,2,3`` and, with
        ``?summary=1``, the list's summary: what the pages' script refreshes every 2 s.

        Staff only (``admin_view``), and only for users who may view tasks. A fixed number of
        queries: one for the tasks (at most ``LIVE_MAX_TASKS``), and the summary's.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        ids = []
        for part in request.GET.get("ids", "").split(",")[:LIVE_MAX_TASKS]:
            if part.strip().isdigit():
                ids.append(int(part))
        rows = RunwayTask.objects.filter(pk__in=ids).values_list("pk", "status", "progress")
        payload: dict[str, Any] = {
            "tasks": {str(pk): live_task(status, progress) for pk, status, progress in rows}
        }
        if request.GET.get("summary"):
            now = timezone.now()
            payload["summary"] = live_summary(self.summary(now=now), now=now)
        # admin_view already marks the response never_cache: a status change is never hidden.
        return JsonResponse(payload)

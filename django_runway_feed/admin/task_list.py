"""The task list: its columns, filters, search and bounded paginator, with the summary above it.

Both the list's cells and the summary are kept up to date by the pages' script through the live
view of :mod:`.task_summary`. The list runs a fixed number of queries whatever the number of
tasks and whatever models the host objects belong to.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..health import callbacks_state
from ..models import RunwayTask
from ..statuses import TERMINAL_STATUSES
from .base import host_admin_url, live_url
from .display import (
    ERROR_EXCERPT,
    PROMPT_EXCERPT,
    BoundedPaginator,
    duration,
    excerpt,
    progress_bar,
    status_badge,
)
from .filters import FailureCodeFilter, HasOutputFilter, StuckFilter
from .task_summary import TaskSummaryMixin, live_summary


def live(task: RunwayTask, field: str, content: SafeString) -> SafeString:
    """Mark a cell the list's and the task page's script keep up to date (see ``live_view``)."""
    return format_html(
        '<span class="rf-live" data-rf-task="{}" data-rf-field="{}">{}</span>',
        task.pk,
        field,
        content,
    )


class TaskChangeList(ChangeList):
    """The task list, without the large JSON fields no column shows."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer("request", "last_response", "outputs", "stored_files", "metadata")
        )


class TaskListMixin(TaskSummaryMixin):
    """The task list, and the summary above it."""

    list_display = (
        "short_id",
        "route_column",
        "status_column",
        "progress_column",
        "prompt_excerpt",
        "host_object",
        "age",
        "poll_count",
        "last_error_excerpt",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "route", FailureCodeFilter, HasOutputFilter, StuckFilter)
    list_select_related = ("content_type",)
    # See get_search_results(): ids are matched exactly, the prompt by its words.
    search_fields = ("task_id", "prompt")
    search_help_text = _("A task id or row number (exact), or words of the prompt.")
    date_hierarchy = "created_at"
    show_full_result_count = False
    paginator = BoundedPaginator
    list_per_page = 50
    # Newest first, read backwards from the (created_at, id) index; Django adds -pk to break
    # ties, which that index also covers. A year's page reads 50 rows of the year's range.
    ordering = ("-created_at",)
    change_list_template = "django_runway_feed/admin/runwaytask/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TaskChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RunwayTask], search_term: str
    ) -> tuple[QuerySet[RunwayTask], bool]:
        """An exact task id or row number, or tasks whose prompt contains every word.

        Each part has an index: the task id's unique index, the primary key, and on PostgreSQL
        a trigram index on the prompt (migration 0003). A "contains" over every column, as
        Django's default search does, reads the whole table, four times per page.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(task_id=term[:128])
        if term.isdigit() and len(term) < 19:  # within a bigint
            match |= Q(pk=int(term))
        words = Q()
        for word in term.split():
            words &= Q(prompt__icontains=word)
        return queryset.filter(match | words), False

    @admin.display(description=_("task"), ordering="task_id")
    def short_id(self, task: RunwayTask) -> SafeString:
        if not task.task_id:
            return format_html("#{}", task.pk)
        return format_html('<span title="{}">{}</span>', task.task_id, task.task_id[:8])

    @admin.display(description=_("route"), ordering="route")
    def route_column(self, task: RunwayTask) -> SafeString:
        return format_html('<span title="{}">{}</span>', task.get_route_display(), task.route)

    @admin.display(description=_("status"), ordering="status")
    def status_column(self, task: RunwayTask) -> SafeString:
        return live(task, "status", status_badge(task.status, task.get_status_display()))

    @admin.display(description=_("progress"), ordering="progress")
    def progress_column(self, task: RunwayTask) -> SafeString:
        return live(task, "progress", progress_bar(task.progress, task.status))

    @admin.display(description=_("prompt"))
    def prompt_excerpt(self, task: RunwayTask) -> SafeString | None:
        return excerpt(task.prompt, PROMPT_EXCERPT)

    @admin.display(description=_("host object"))
    def host_object(self, task: RunwayTask) -> SafeString | str | None:
        # The content type comes from list_select_related and the object is not fetched, so
        # the column costs no query per row whatever the host's models are.
        if task.content_type is None or not task.object_id:
            return None
        label = f"{task.content_type.name} #{task.object_id}"
        url = host_admin_url(self.admin_site, task)
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description=_("age"), ordering="created_at")
    def age(self, task: RunwayTask) -> SafeString:
        if task.status in TERMINAL_STATUSES and task.finished_at:
            began = task.started_at or task.submitted_at or task.created_at
            return format_html(
                '<span title="{}">{}</span>',
                _("run time"),
                _("ran %(time)s") % {"time": duration((task.finished_at - began).total_seconds())},
            )
        seconds = (timezone.now() - task.created_at).total_seconds()
        return format_html(
            '<span title="{}">{}</span>',
            _("age"),
            _("%(time)s old") % {"time": duration(seconds)},
        )

    @admin.display(description=_("last error"))
    def last_error_excerpt(self, task: RunwayTask) -> SafeString | None:
        text = task.last_error or (task.fail_reason if task.status in TERMINAL_STATUSES else "")
        return excerpt(text, ERROR_EXCERPT)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        now = timezone.now()
        summary = self.summary(now=now)
        # get_paginator() takes the unfiltered list's count from here.
        request._runway_task_total = summary["counted"]  # type: ignore[attr-defined]
        context = {
            "runway_summary": summary,
            # Here, not in summary(): the live view refreshes that every 2 s and would pay the
            # verdict's query each time for a line it does not update.
            "runway_callbacks": callbacks_state(now=now),
            "runway_live": live_summary(summary, now=now),
            "runway_live_url": live_url(self.admin_site),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[RunwayTask],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator[Any]:
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        total: int | None = getattr(request, "_runway_task_total", None)
        if total is not None and not queryset.query.has_filters():
            # The whole table: the summary counted it already (up to COUNT_LIMIT + 1), so skip
            # the count. (Paginator.count is a cached property: this sets its cached value.)
            paginator.__dict__["count"] = total
        return paginator

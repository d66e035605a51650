"""The task admin: a list with badges, progress and a summary; a task page with its output,
JSON and timeline; and the operator actions of :mod:`django_runway_feed.actions`.

``RunwayTaskAdmin`` is composed of one mixin per part, each in its own module:

- :mod:`.task_list`: the list's columns, search and paginator (``TaskListMixin``);
- :mod:`.task_summary`: the summary above the list and the live view (``TaskSummaryMixin``);
- :mod:`.task_page`: the task page's fields and timeline (``TaskPageMixin``);
- :mod:`.task_actions`: the bulk actions and the task page's buttons (``TaskActionsMixin``).

This module registers it, and holds what concerns the whole admin: permissions, the queryset,
the stylesheet and the extra URLs. Everything that came from the API is escaped
(``format_html`` and autoescaped templates), and only ``http``/``https`` URLs become links or
media sources. Both pages run a fixed number of queries whatever the number of tasks or events.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path

from ..models import RunwayTask
from .display import COUNT_LIMIT, BoundedPaginator
from .filters import RefusesUnstorableQuery
from .task_actions import OBJECT_ACTIONS, ObjectAction, RunAction, TaskActionsMixin
from .task_list import TaskChangeList, TaskListMixin, live
from .task_page import RESUBMISSION_LINKS, TIMELINE_EVENTS, TaskPageMixin
from .task_summary import (
    LIVE_MAX_TASKS,
    TaskSummaryMixin,
    count_text,
    last_success_text,
    live_summary,
    live_task,
    pause_text,
)

__all__ = [
    "COUNT_LIMIT",
    "LIVE_MAX_TASKS",
    "OBJECT_ACTIONS",
    "RESUBMISSION_LINKS",
    "TIMELINE_EVENTS",
    "BoundedPaginator",
    "ObjectAction",
    "RunAction",
    "RunwayTaskAdmin",
    "TaskActionsMixin",
    "TaskChangeList",
    "TaskListMixin",
    "TaskPageMixin",
    "TaskSummaryMixin",
    "count_text",
    "last_success_text",
    "live",
    "live_summary",
    "live_task",
    "pause_text",
]


@admin.register(RunwayTask)
class RunwayTaskAdmin(RefusesUnstorableQuery, TaskPageMixin, TaskListMixin):
    class Media:
        css = {"all": ("django_runway_feed/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tasks are created through the API (or the resubmit action), never from a blank form.
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RunwayTask]:
        # The admin's list_select_related only applies to a queryset without select_related.
        return super().get_queryset(request).select_related("content_type")

    def get_urls(self) -> list[URLPattern]:
        action_url = path(
            "<path:object_id>/actions/<slug:action>/",
            self.admin_site.admin_view(self.object_action_view),
            name="django_runway_feed_runwaytask_action",
        )
        # Before the admin's own patterns, whose "<path:object_id>/" would take "live/".
        live_url = path(
            "live/",
            self.admin_site.admin_view(self.live_view),
            name="django_runway_feed_runwaytask_live",
        )
        return [live_url, action_url, *super().get_urls()]

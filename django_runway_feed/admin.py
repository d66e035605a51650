"""A first admin for tasks; a fuller one (badges, actions, timeline) comes later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import RunwayTask, RunwayTaskQuerySet, TaskEvent

if TYPE_CHECKING:
    # django-stubs makes these generic; at run time they are plain classes.
    TaskEventInlineBase = admin.TabularInline[TaskEvent, RunwayTask]
    RunwayTaskAdminBase = admin.ModelAdmin[RunwayTask]
else:
    TaskEventInlineBase = admin.TabularInline
    RunwayTaskAdminBase = admin.ModelAdmin


class StuckFilter(admin.SimpleListFilter):
    """Unfinished tasks older than ``STALE_AFTER``: the same rule as ``stuck()`` and W007."""

    title = _("stuck")
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: object) -> list[tuple[str, str]]:
        return [("yes", str(_("Stuck")))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[RunwayTask]
    ) -> QuerySet[RunwayTask] | None:
        if self.value() == "yes" and isinstance(queryset, RunwayTaskQuerySet):
            return queryset.stuck()
        return queryset


class TaskEventInline(TaskEventInlineBase):
    model = TaskEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "from_status", "to_status", "progress", "message")
    readonly_fields = fields
    ordering = ("created_at", "pk")

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(RunwayTask)
class RunwayTaskAdmin(RunwayTaskAdminBase):
    list_display = (
        "__str__",
        "route",
        "status",
        "progress",
        "poll_count",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", StuckFilter, "route", "failure_code")
    search_fields = ("task_id", "prompt", "fail_reason")
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = [TaskEventInline]

    def get_readonly_fields(self, request: object, obj: RunwayTask | None = None) -> list[str]:
        # The poller owns every field but the host's own metadata.
        return [
            f.name
            for f in RunwayTask._meta.get_fields()
            if getattr(f, "concrete", False) and f.name != "metadata"
        ]

"""A first admin for tasks; a fuller one (badges, actions, timeline) comes later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from .models import RunwayTask, TaskEvent

if TYPE_CHECKING:
    # django-stubs makes these generic; at run time they are plain classes.
    TaskEventInlineBase = admin.TabularInline[TaskEvent, RunwayTask]
    RunwayTaskAdminBase = admin.ModelAdmin[RunwayTask]
else:
    TaskEventInlineBase = admin.TabularInline
    RunwayTaskAdminBase = admin.ModelAdmin


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
    list_filter = ("status", "route", "failure_code")
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

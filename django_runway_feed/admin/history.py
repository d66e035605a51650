"""The read-only pages of rows the machine writes: task events and the poller's shared state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.http import (
    HttpRequest,
)
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import PollerState, TaskEvent
from .display import (
    ERROR_EXCERPT,
    BoundedPaginator,
    excerpt,
    pretty_json,
    time_field,
)
from .filters import RefusesUnstorableQuery

if TYPE_CHECKING:
    # django-stubs makes these generic; at run time they are plain classes.
    TaskEventAdminBase = admin.ModelAdmin[TaskEvent]
    PollerStateAdminBase = admin.ModelAdmin[PollerState]
else:
    TaskEventAdminBase = PollerStateAdminBase = admin.ModelAdmin


class ReadOnlyAdmin:
    """Registered for reading only: nobody adds, changes or deletes a row, not even a superuser."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdmin, RefusesUnstorableQuery, TaskEventAdminBase):
    """The history, read-only: nobody adds, edits or deletes an event from the admin."""

    list_display = (
        "created_time",
        "task_link",
        "kind",
        "transition",
        "progress",
        "message_excerpt",
    )
    list_filter = ("kind",)
    list_select_related = ("task",)
    # Newest first by primary key: an index the database always has, even at 500,000 rows.
    ordering = ("-pk",)
    show_full_result_count = False
    # Counting five million events to number the pages would take longer than the page.
    paginator = BoundedPaginator
    list_per_page = 100
    fields = (
        "task_link",
        "kind",
        "transition",
        "progress",
        "message",
        "payload_json",
        "created_time",
        "dispatched_time",
        "redeliver_time",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("django_runway_feed/admin.css",)}

    created_time = time_field(TaskEvent, "created_at")
    dispatched_time = time_field(TaskEvent, "dispatched_at")
    redeliver_time = time_field(TaskEvent, "redeliver_after")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # The task page links here with ?task__id__exact=<pk>.
        return lookup == "task__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description=_("task"), ordering="task")
    def task_link(self, event: TaskEvent) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_runway_feed_runwaytask_change", args=[event.task_id]
        )
        # The first 8 characters, like the task list: a full UUID wrapped each row to 5 lines.
        task = event.task
        full = task.task_id or f"#{task.pk}"
        return format_html('<a href="{}" title="{}">{}</a>', url, full, full[:8])

    @admin.display(description=_("from -> to"))
    def transition(self, event: TaskEvent) -> str:
        return f"{event.from_status or '-'} -> {event.to_status or '-'}"

    @admin.display(description=_("message"))
    def message_excerpt(self, event: TaskEvent) -> SafeString | None:
        return excerpt(event.message, ERROR_EXCERPT)

    @admin.display(description=_("payload"))
    def payload_json(self, event: TaskEvent) -> SafeString:
        return pretty_json(event.payload)


@admin.register(PollerState)
class PollerStateAdmin(ReadOnlyAdmin, PollerStateAdminBase):
    """The poller's shared row, read-only: its heartbeat and the API pause."""

    # The model's fields have no verbose names (adding them would need a migration): the
    # labels are translated here.
    list_display = ("__str__", "last_run_time", "last_success_time", "paused_until_time")
    fields = (
        "last_run_time",
        "last_success_time",
        "last_run_json",
        "paused_until_time",
        "pause_reason_text",
    )
    readonly_fields = fields

    last_run_time = time_field(PollerState, "last_run_at", description=_("last run at"))
    last_success_time = time_field(
        PollerState, "last_success_at", description=_("last successful run at")
    )
    paused_until_time = time_field(PollerState, "paused_until", description=_("paused until"))

    @admin.display(description=_("last run"))
    def last_run_json(self, state: PollerState) -> SafeString:
        return pretty_json(state.last_run)

    @admin.display(description=_("pause reason"))
    def pause_reason_text(self, state: PollerState) -> str:
        return state.pause_reason or self.get_empty_value_display()

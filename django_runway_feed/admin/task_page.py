"""The task page: its fields (output player, links, JSON), the timeline of the latest events,
and the action buttons of :mod:`.task_actions`.

Everything that came from the API is escaped, and only ``http``/``https`` URLs become links or
media sources. The page runs a fixed number of queries whatever the number of events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import downloads
from ..models import RunwayTask, TaskEvent
from .base import host_admin_url, live_url, task_link
from .display import pretty_json, time_field, url_or_text, web_url
from .task_actions import TaskActionsMixin

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

# The task page shows this many of the latest events, and links to the full list.
TIMELINE_EVENTS = 50
# And links to at most this many resubmissions of the task.
RESUBMISSION_LINKS = 20


class TaskPageMixin(TaskActionsMixin):
    """The task page: read-only fields in sections, the timeline and the action buttons."""

    change_form_template = "django_runway_feed/admin/runwaytask/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "task_id",
                    "route",
                    "action",
                    "status_column",
                    "progress_column",
                    "provider_status",
                    "provider_inner_status",
                    "failure_code",
                    "fail_reason",
                )
            },
        ),
        (_("Output"), {"fields": ("output_player", "output_links")}),
        (
            _("Stored result"),
            {
                "classes": ("collapse",),
                "fields": (
                    "download_status",
                    "stored_files_links",
                    "output_size",
                    "output_sha256",
                    "output_content_type",
                    "download_attempts",
                    "download_error",
                    "download_retry_time",
                    "downloaded_time",
                ),
            },
        ),
        (_("Request"), {"fields": ("prompt", "request_json", "idempotency_key")}),
        (_("Host object"), {"fields": ("host_object_link", "metadata")}),
        (_("Resubmission"), {"fields": ("resubmitted_from_link", "resubmissions_links")}),
        (
            _("Times"),
            {
                "fields": (
                    "created_time",
                    "updated_time",
                    "submitted_time",
                    "started_time",
                    "finished_time",
                    "last_polled_time",
                    "next_poll_time",
                )
            },
        ),
        (
            _("Polling"),
            {
                "classes": ("collapse",),
                "fields": (
                    "poll_count",
                    "error_count",
                    "last_error",
                    "expects_callback",
                    "callback_time",
                    "stale_time",
                    "lease_owner",
                    "lease_expires_time",
                    "last_response_json",
                ),
            },
        ),
    )

    created_time = time_field(RunwayTask, "created_at")
    updated_time = time_field(RunwayTask, "updated_at")
    submitted_time = time_field(RunwayTask, "submitted_at")
    started_time = time_field(RunwayTask, "started_at")
    finished_time = time_field(RunwayTask, "finished_at")
    last_polled_time = time_field(RunwayTask, "last_polled_at")
    next_poll_time = time_field(RunwayTask, "next_poll_at")
    callback_time = time_field(RunwayTask, "callback_at")
    download_retry_time = time_field(RunwayTask, "download_retry_at")
    downloaded_time = time_field(RunwayTask, "downloaded_at")
    stale_time = time_field(RunwayTask, "stale_at")
    lease_expires_time = time_field(RunwayTask, "lease_expires_at")

    def get_fieldsets(self, request: HttpRequest, obj: RunwayTask | None = None) -> _FieldsetSpec:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            return fieldsets
        hidden = set()
        if not obj.download_status and not obj.stored_files:
            hidden.add(_("Stored result"))
        if obj.resubmitted_from_id is None and not self._resubmissions(obj):
            hidden.add(_("Resubmission"))
        return [(title, options) for title, options in fieldsets if title not in hidden]

    def get_readonly_fields(self, request: HttpRequest, obj: RunwayTask | None = None) -> list[str]:
        # The poller owns every field but the host's own metadata.
        shown = [
            name
            for _title, options in self.fieldsets
            for name in options["fields"]
            if isinstance(name, str)
        ]
        return [name for name in shown if name != "metadata"]

    @admin.display(description=_("output"))
    def output_player(self, task: RunwayTask) -> SafeString | str:
        stored = web_url(downloads.stored_file_url(task, "video"), allow_path=True)
        source = stored or web_url(task.result_url)
        if not source:
            return (
                url_or_text(task.result_url) if task.result_url else self.get_empty_value_display()
            )
        poster = web_url(downloads.stored_file_url(task, "poster"), allow_path=True) or web_url(
            self._output_url(task, "poster")
        )
        origin = _("stored copy") if stored else _("provider URL (expires after 24-48 hours)")
        return format_html(
            '<video class="rf-video" controls preload="metadata" src="{}"{}></video>'
            '<div class="rf-muted">{}</div>',
            source,
            format_html(' poster="{}"', poster) if poster else "",
            origin,
        )

    @admin.display(description=_("output URLs"))
    def output_links(self, task: RunwayTask) -> SafeString | str:
        outputs = [o for o in task.outputs or [] if isinstance(o, dict) and o.get("url")]
        if not outputs and task.result_url:
            outputs = [{"kind": "video", "url": task.result_url}]
        if not outputs:
            return self.get_empty_value_display()
        return format_html_join(
            "",
            '<div class="rf-output">{}: {}</div>',
            ((str(o.get("kind") or "output"), url_or_text(str(o["url"]))) for o in outputs),
        )

    @admin.display(description=_("stored files"))
    def stored_files_links(self, task: RunwayTask) -> SafeString | str:
        rows = []
        for entry in task.stored_files or []:
            if not isinstance(entry, dict):
                continue
            kind = str(entry.get("kind") or "file")
            url = web_url(downloads.stored_file_url(task, kind), allow_path=True)
            name = str(entry.get("name") or "")
            link = format_html('<a href="{}">{}</a>', url, name) if url else name
            rows.append((kind, link, entry.get("size", ""), entry.get("content_type", "")))
        return format_html_join("", '<div class="rf-output">{}: {} ({} bytes, {})</div>', rows)

    @admin.display(description=_("request"))
    def request_json(self, task: RunwayTask) -> SafeString:
        return pretty_json(task.request)

    @admin.display(description=_("last response"))
    def last_response_json(self, task: RunwayTask) -> SafeString:
        return pretty_json(task.last_response)

    @admin.display(description=_("host object"))
    def host_object_link(self, task: RunwayTask) -> SafeString | str:
        if task.content_type is None or not task.object_id:
            return self.get_empty_value_display()
        try:
            obj = task.content_object
        except (ValueError, TypeError):  # an object_id the model's key cannot take
            obj = None
        label = str(obj) if obj is not None else f"{task.content_type.name} #{task.object_id}"
        if obj is None:
            label = f"{label} ({_('not found')})"
        url = host_admin_url(self.admin_site, task) if obj is not None else None
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description=_("resubmitted from"))
    def resubmitted_from_link(self, task: RunwayTask) -> SafeString | str:
        if task.resubmitted_from_id is None:
            return self.get_empty_value_display()
        old = RunwayTask.objects.filter(pk=task.resubmitted_from_id).only("task_id", "status")
        return task_link(self.admin_site, old[0]) if old else self.get_empty_value_display()

    @admin.display(description=_("resubmitted as"))
    def resubmissions_links(self, task: RunwayTask) -> SafeString | str:
        resubmissions = self._resubmissions(task)
        if not resubmissions:
            return self.get_empty_value_display()
        return format_html_join(
            ", ", "{}", ((task_link(self.admin_site, t),) for t in resubmissions)
        )

    @staticmethod
    def _resubmissions(task: RunwayTask) -> list[RunwayTask]:
        # Read once per page (the fieldsets and the field both need it), newest first.
        cached: list[RunwayTask] | None = getattr(task, "_runway_resubmissions", None)
        if cached is None:
            newer = task.resubmissions.order_by("-pk").only("task_id", "status", "resubmitted_from")
            cached = list(newer[:RESUBMISSION_LINKS])
            task._runway_resubmissions = cached  # type: ignore[attr-defined]
        return cached

    @staticmethod
    def _output_url(task: RunwayTask, kind: str) -> str:
        for output in task.outputs or []:
            if isinstance(output, dict) and output.get("kind") == kind and output.get("url"):
                return str(output["url"])
        return ""

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: RunwayTask | None = None,
    ) -> HttpResponse:
        if obj is not None:
            events = TaskEvent.objects.filter(task=obj)
            context.update(
                runway_events=list(
                    events.defer("payload").order_by("-created_at", "-pk")[:TIMELINE_EVENTS]
                ),
                runway_event_count=events.count(),
                runway_events_url=(
                    reverse(f"{self.admin_site.name}:django_runway_feed_taskevent_changelist")
                    + f"?task__id__exact={obj.pk}"
                ),
                runway_actions=self.object_actions(request, obj),
                runway_live_url=live_url(self.admin_site),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

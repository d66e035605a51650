"""The task admin: a list with badges, progress and a summary; a task page with its output,
JSON and timeline; and the operator actions of :mod:`django_runway_feed.actions`.

Everything that came from the API is escaped (``format_html`` and autoescaped templates), and
only ``http``/``https`` URLs become links or media sources. Both pages run a fixed number of
queries whatever the number of tasks or events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
)
from django.shortcuts import redirect
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import actions as operator_actions
from .. import downloads
from ..counting import count_up_to, estimated_rows
from ..health import callbacks_state, gateway_state
from ..models import PollerState, RunwayTask, TaskEvent
from ..pause import pause_in_effect
from ..statuses import TERMINAL_STATUSES, UNFINISHED_STATUSES, Status
from .display import (
    COUNT_LIMIT,
    ERROR_EXCERPT,
    PROMPT_EXCERPT,
    BoundedPaginator,
    duration,
    excerpt,
    pretty_json,
    progress_bar,
    status_badge,
    time_field,
    time_text,
    url_or_text,
    web_url,
)
from .filters import FailureCodeFilter, HasOutputFilter, RefusesUnstorableQuery, StuckFilter

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec
    from django_stubs_ext import StrOrPromise

    # django-stubs makes these generic; at run time they are plain classes.
    RunwayTaskAdminBase = admin.ModelAdmin[RunwayTask]
else:
    RunwayTaskAdminBase = admin.ModelAdmin

# The task page shows this many of the latest events, and links to the full list.
TIMELINE_EVENTS = 50
# And links to at most this many resubmissions of the task.
RESUBMISSION_LINKS = 20
# The live view answers for at most this many tasks per request (a list page shows 50).
LIVE_MAX_TASKS = 100


def live(task: RunwayTask, field: str, content: SafeString) -> SafeString:
    """Mark a cell the list's and the task page's script keep up to date (see ``live_view``)."""
    return format_html(
        '<span class="rf-live" data-rf-task="{}" data-rf-field="{}">{}</span>',
        task.pk,
        field,
        content,
    )


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
    """What the list's script needs of :meth:`RunwayTaskAdmin.summary`, as JSON values."""
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


class RunAction(Protocol):
    def __call__(
        self, tasks: Iterable[RunwayTask], *, actor: str = ...
    ) -> operator_actions.ActionReport: ...


@dataclass(frozen=True)
class ObjectAction:
    """An operator action: its function, and its button on the task page (which POSTs to one of
    the admin's action URLs)."""

    name: str
    label: StrOrPromise
    help: StrOrPromise
    run: RunAction
    applies: Callable[[RunwayTask], bool]
    permission: str = "change"
    danger: bool = False


def _downloadable(task: RunwayTask) -> bool:
    return task.status == Status.SUCCEEDED and bool(task.result_url or task.outputs)


OBJECT_ACTIONS = {
    action.name: action
    for action in (
        ObjectAction(
            "poll",
            _("Poll now"),
            _("Ask CometAPI about this task now, ignoring its schedule."),
            operator_actions.poll_now,
            lambda task: operator_actions.why_not_poll(task) is None,
        ),
        ObjectAction(
            "resume",
            _("Resume tracking"),
            _("Reopen this given-up task and poll it again."),
            operator_actions.resume_tracking,
            lambda task: operator_actions.why_not_resume(task) is None,
        ),
        ObjectAction(
            "stop",
            _("Stop tracking"),
            _("Cancel locally. CometAPI has no cancel route: the task may still run (billed)."),
            operator_actions.stop_tracking,
            lambda task: operator_actions.why_not_stop(task) is None,
            danger=True,
        ),
        ObjectAction(
            "resubmit",
            _("Resubmit"),
            _("Create a new task with the same request."),
            operator_actions.resubmit,
            lambda task: operator_actions.why_not_resubmit(task) is None,
            permission="resubmit",
        ),
        ObjectAction(
            "download",
            _("Download result now"),
            _("Copy the output to the site's storage now."),
            operator_actions.download_results,
            _downloadable,
            permission="download",
        ),
    )
}


class TaskChangeList(ChangeList):
    """The task list, without the large JSON fields no column shows."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer("request", "last_response", "outputs", "stored_files", "metadata")
        )


@admin.register(RunwayTask)
class RunwayTaskAdmin(RefusesUnstorableQuery, RunwayTaskAdminBase):
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
    actions = (
        "poll_now_action",
        "resume_action",
        "stop_action",
        "resubmit_action",
        "download_action",
    )
    change_list_template = "django_runway_feed/admin/runwaytask/change_list.html"
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

    class Media:
        css = {"all": ("django_runway_feed/admin.css",)}

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

    # -- permissions ---------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tasks are created through the API (or the resubmit action), never from a blank form.
        return False

    def has_resubmit_permission(self, request: HttpRequest, obj: RunwayTask | None = None) -> bool:
        opts = self.opts
        codename = get_permission_codename("add", opts)
        return self.has_change_permission(request, obj) and request.user.has_perm(
            f"{opts.app_label}.{codename}"
        )

    def has_download_permission(self, request: HttpRequest, obj: RunwayTask | None = None) -> bool:
        return downloads.downloads_enabled() and self.has_change_permission(request, obj)

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

    def get_queryset(self, request: HttpRequest) -> QuerySet[RunwayTask]:
        # The admin's list_select_related only applies to a queryset without select_related.
        return super().get_queryset(request).select_related("content_type")

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

    # -- list columns --------------------------------------------------------------------------

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
        url = self._host_admin_url(task)
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

    # -- task page fields ----------------------------------------------------------------------

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
        url = self._host_admin_url(task) if obj is not None else None
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description=_("resubmitted from"))
    def resubmitted_from_link(self, task: RunwayTask) -> SafeString | str:
        if task.resubmitted_from_id is None:
            return self.get_empty_value_display()
        old = RunwayTask.objects.filter(pk=task.resubmitted_from_id).only("task_id", "status")
        return self._task_link(old[0]) if old else self.get_empty_value_display()

    @admin.display(description=_("resubmitted as"))
    def resubmissions_links(self, task: RunwayTask) -> SafeString | str:
        resubmissions = self._resubmissions(task)
        if not resubmissions:
            return self.get_empty_value_display()
        return format_html_join(", ", "{}", ((self._task_link(t),) for t in resubmissions))

    @staticmethod
    def _resubmissions(task: RunwayTask) -> list[RunwayTask]:
        # Read once per page (the fieldsets and the field both need it), newest first.
        cached: list[RunwayTask] | None = getattr(task, "_runway_resubmissions", None)
        if cached is None:
            newer = task.resubmissions.order_by("-pk").only("task_id", "status", "resubmitted_from")
            cached = list(newer[:RESUBMISSION_LINKS])
            task._runway_resubmissions = cached  # type: ignore[attr-defined]
        return cached

    def _task_link(self, task: RunwayTask) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_runway_feed_runwaytask_change", args=[task.pk]
        )
        return format_html('<a href="{}">{}</a>', url, str(task))

    def _host_admin_url(self, task: RunwayTask) -> str | None:
        model = task.content_type.model_class() if task.content_type else None
        if model is None or not self.admin_site.is_registered(model):
            return None
        try:
            return reverse(
                f"{self.admin_site.name}:{model._meta.app_label}_{model._meta.model_name}_change",
                args=[quote(task.object_id)],
            )
        except NoReverseMatch:
            return None

    @staticmethod
    def _output_url(task: RunwayTask, kind: str) -> str:
        for output in task.outputs or []:
            if isinstance(output, dict) and output.get("kind") == kind and output.get("url"):
                return str(output["url"])
        return ""

    # -- pages ---------------------------------------------------------------------------------

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
            "runway_live_url": self._live_url(),
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

    def summary(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Counts per status, unfinished tasks, and the poller's state.

        Unfinished tasks are counted exactly (one GROUP BY over their part of the status
        index); each finished status up to ``COUNT_LIMIT + 1``, as a year of them is most of
        the table. The total is then PostgreSQL's estimate, or at least the sum.
        """
        now = now or timezone.now()
        tasks = RunwayTask.objects.order_by()
        counts = dict(tasks.unfinished().values_list("status").annotate(n=Count("pk")))
        bounded = set()
        for status in sorted(TERMINAL_STATUSES):
            counts[status] = count_up_to(tasks.filter(status=status), COUNT_LIMIT)
            if counts[status] > COUNT_LIMIT:
                bounded.add(status)
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
                runway_live_url=self._live_url(),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def object_actions(self, request: HttpRequest, task: RunwayTask) -> list[dict[str, Any]]:
        """The action buttons that apply to ``task`` and that this user may press."""
        buttons = []
        for action in OBJECT_ACTIONS.values():
            allowed = getattr(self, f"has_{action.permission}_permission")(request, task)
            if allowed and action.applies(task):
                buttons.append(
                    {
                        "name": action.name,
                        "label": action.label,
                        "help": action.help,
                        "danger": action.danger,
                        "url": reverse(
                            f"{self.admin_site.name}:django_runway_feed_runwaytask_action",
                            args=[quote(task.pk), action.name],
                        ),
                    }
                )
        return buttons

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

    def _live_url(self) -> str:
        return reverse(f"{self.admin_site.name}:django_runway_feed_runwaytask_live")

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

    def object_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """Run one action on one task (POST only; CSRF-checked by ``admin_view``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        spec = OBJECT_ACTIONS.get(action)
        task = self.get_object(request, unquote(object_id))
        if spec is None or task is None:
            raise Http404(_("No such task or action."))
        if not getattr(self, f"has_{spec.permission}_permission")(request, task):
            raise PermissionDenied
        self.run_action(request, spec.name, RunwayTask.objects.filter(pk=task.pk))
        return redirect(
            reverse(
                f"{self.admin_site.name}:django_runway_feed_runwaytask_change",
                args=[quote(task.pk)],
            )
        )

    # -- actions -------------------------------------------------------------------------------

    def run_action(self, request: HttpRequest, name: str, queryset: QuerySet[RunwayTask]) -> None:
        # Whole rows: the list's queryset leaves out the large JSON fields the actions need.
        queryset = RunwayTask.objects.filter(pk__in=queryset.values("pk")).order_by("pk")
        self.report(request, OBJECT_ACTIONS[name].run(queryset, actor=request.user.get_username()))

    def report(self, request: HttpRequest, report: operator_actions.ActionReport) -> None:
        if (report.skipped or report.failed) and not report.done:
            level = messages.ERROR
        elif report.skipped or report.failed:
            level = messages.WARNING
        else:
            level = messages.SUCCESS
        message: str | SafeString = report.message()
        if report.verb == "Resubmitted" and report.done:
            links = format_html_join(", ", "{}", ((self._task_link(t),) for t in report.done))
            message = format_html("{} {} {}", message, _("New:"), links)
        self.message_user(request, message, level)

    @admin.action(description=_("Poll now"), permissions=["change"])
    def poll_now_action(self, request: HttpRequest, queryset: QuerySet[RunwayTask]) -> None:
        self.run_action(request, "poll", queryset)

    @admin.action(description=_("Resume tracking (given-up tasks)"), permissions=["change"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet[RunwayTask]) -> None:
        self.run_action(request, "resume", queryset)

    @admin.action(description=_("Stop tracking (local cancel)"), permissions=["change"])
    def stop_action(self, request: HttpRequest, queryset: QuerySet[RunwayTask]) -> None:
        self.run_action(request, "stop", queryset)

    @admin.action(description=_("Resubmit as new tasks"), permissions=["resubmit"])
    def resubmit_action(self, request: HttpRequest, queryset: QuerySet[RunwayTask]) -> None:
        self.run_action(request, "resubmit", queryset)

    @admin.action(description=_("Download results now"), permissions=["download"])
    def download_action(self, request: HttpRequest, queryset: QuerySet[RunwayTask]) -> None:
        self.run_action(request, "download", queryset)

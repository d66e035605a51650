"""The operator actions of the task admin: the list's bulk actions and the task page's buttons.

Both call the plain functions of :mod:`django_runway_feed.actions` and report what they did;
no business rule lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import actions as operator_actions
from .. import downloads
from ..models import RunwayTask
from ..statuses import Status
from .base import TaskAdminBase, task_link

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


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


class TaskActionsMixin(TaskAdminBase):
    """The actions, their permissions, the buttons' URL and view, and the report message."""

    actions = (
        "poll_now_action",
        "resume_action",
        "stop_action",
        "resubmit_action",
        "download_action",
    )

    def has_resubmit_permission(self, request: HttpRequest, obj: RunwayTask | None = None) -> bool:
        opts = self.opts
        codename = get_permission_codename("add", opts)
        return self.has_change_permission(request, obj) and request.user.has_perm(
            f"{opts.app_label}.{codename}"
        )

    def has_download_permission(self, request: HttpRequest, obj: RunwayTask | None = None) -> bool:
        return downloads.downloads_enabled() and self.has_change_permission(request, obj)

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
            links = format_html_join(
                ", ", "{}", ((task_link(self.admin_site, t),) for t in report.done)
            )
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

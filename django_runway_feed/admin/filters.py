"""The task list's filters: stuck tasks, failure codes, tasks with an output; and what a
list's query string may hold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import SuspiciousOperation
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
)
from django.utils.translation import gettext_lazy as _

from ..models import RunwayTask, RunwayTaskQuerySet
from ..statuses import FailureCode, Status

if TYPE_CHECKING:
    ChangelistBase = admin.ModelAdmin[Any]
else:
    ChangelistBase = object

# The failure-code filter offers the codes of this many of the latest failed (and cancelled) tasks.
RECENT_FAILURES = 500


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


class FailureCodeFilter(admin.SimpleListFilter):
    """The failure codes of the latest failed and cancelled tasks.

    Only those carry a code. The latest ``RECENT_FAILURES`` of each status are read through the
    (status, created_at) index: the distinct codes of every failed task would read them all.
    """

    title = _("failure code")
    parameter_name = "failure_code"

    def lookups(self, request: HttpRequest, model_admin: object) -> list[tuple[str, str]]:
        codes: set[str] = set()
        for status in (Status.FAILED, Status.CANCELLED):
            latest = (
                RunwayTask.objects.filter(status=status)
                .order_by("-created_at")
                .values_list("failure_code", flat=True)
            )
            codes.update(code for code in latest[:RECENT_FAILURES] if code)
        value = self.value()
        if value:
            codes.add(value)  # an older code chosen by hand stays on offer
        labels = dict(FailureCode.choices)
        return [(code, str(labels.get(code, code))) for code in sorted(codes)]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[RunwayTask]
    ) -> QuerySet[RunwayTask] | None:
        value = self.value()
        return queryset.filter(failure_code=value) if value else queryset


class HasOutputFilter(admin.SimpleListFilter):
    """Whether a task has an output: the provider's URL, a stored file, or none."""

    title = _("output")
    parameter_name = "output"

    def lookups(self, request: HttpRequest, model_admin: object) -> list[tuple[str, str]]:
        return [
            ("url", str(_("Has an output URL"))),
            ("stored", str(_("Stored in our storage"))),
            ("none", str(_("No output"))),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[RunwayTask]
    ) -> QuerySet[RunwayTask] | None:
        value = self.value()
        if value == "url":
            return queryset.exclude(result_url="")
        if value == "stored":
            return queryset.exclude(output_file="")
        if value == "none":
            return queryset.filter(result_url="", output_file="")
        return queryset


class RefusesUnstorableQuery(ChangelistBase):
    """A list whose query string holds a NUL (``?failure_code=%00``) answers 400.

    No filter or search can match one, and PostgreSQL refuses it in a query with an error that
    would otherwise be a 500.
    """

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                raise SuspiciousOperation("A NUL character in the list's query string.")
        return super().changelist_view(request, extra_context)

"""Operator actions on tasks: poll now, resume tracking, stop tracking, resubmit, download.

The admin calls these, and so can a shell, a view or a management command. Each function takes
rows, decides for each one whether the action applies, changes it with a write that is
conditional on the state it read (so two operators, or an operator and a worker, acting at the
same moment never undo each other), writes a ``TaskEvent``, and returns an
:class:`ActionReport` saying what was done and what was skipped and why.

Permission checks are the caller's job: these functions trust whoever calls them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from . import downloads, outbox, services
from .client import CometAPIClient
from .exceptions import DownloadUnavailable, RunwayFeedError
from .models import POLLABLE_STATUSES, EventKind, Route, RunwayTask, TaskEvent
from .statuses import FailureCode, Status
from .transitions import change_status
from .writes import DATABASE_TROUBLE

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

# Poll now and resubmit send one request per task, one after another, while the admin's request
# waits. Beyond this many tasks at once the page would hang: the rest are skipped.
MAX_API_CALLS = 25
# A ``submitting`` row younger than this with no error may still have its create call in
# flight: stopping or resubmitting it could race that call. Longer than any sane
# REQUEST_TIMEOUT (5 s + 30 s by default).
SUBMISSION_IN_FLIGHT = dt.timedelta(minutes=5)
RESUBMITTABLE_ROUTES = frozenset({Route.GENERATE, Route.VIDEO_TO_VIDEO, Route.ACT_ONE})


def _too_many() -> str:
    return gettext("more than %(count)d selected at once (run the rest in another go)") % {
        "count": MAX_API_CALLS
    }


# Why a task was skipped. Reports count tasks per reason. Lazy: translated when shown.
ALREADY_FINISHED = _("already finished")
NOT_ACCEPTED = _("not accepted by CometAPI yet (no task id to poll)")
TOO_MANY = lazy(_too_many, str)()
BUSY = _("being polled by a worker right now, or finished meanwhile")
NOT_GIVEN_UP = _("not given up (only failed tasks with code timeout or not_found can resume)")
CHANGED = _("changed meanwhile (reload the page)")
IN_FLIGHT = _("its create call may still be in flight")
NO_REQUEST = _("no request to send again (a tracked task, or created elsewhere)")
STILL_RUNNING = _("still in progress (stop it first to replace it)")
MALFORMED_REQUEST = _("its stored request is not a JSON object, so it cannot be sent again")
MALFORMED_METADATA = _("its stored metadata is not a JSON object; fix it before resubmitting")
BROKEN_LINK = _("its linked object id does not fit its content type; fix it before resubmitting")

# What each action reports it did, by ActionReport.verb; "count" picks the plural form.
DONE = {
    "Polled": ngettext_lazy("Polled %(count)d task.", "Polled %(count)d tasks.", "count"),
    "Resumed": ngettext_lazy("Resumed %(count)d task.", "Resumed %(count)d tasks.", "count"),
    "Stopped": ngettext_lazy("Stopped %(count)d task.", "Stopped %(count)d tasks.", "count"),
    "Resubmitted": ngettext_lazy(
        "Resubmitted %(count)d task.", "Resubmitted %(count)d tasks.", "count"
    ),
    "Queued the download of": ngettext_lazy(
        "Queued the download of %(count)d task.", "Queued the download of %(count)d tasks.", "count"
    ),
}


@dataclass
class ActionReport:
    """What one action did: the rows it changed (or created) and the ones it skipped, by reason."""

    verb: str  # a key of DONE
    done: list[RunwayTask] = field(default_factory=list)
    skipped: dict[StrOrPromise, list[RunwayTask]] = field(default_factory=dict)
    # Tasks the action reached whose outcome was an error (a failed request, a refused write).
    failed: dict[StrOrPromise, list[RunwayTask]] = field(default_factory=dict)

    def skip(self, task: RunwayTask, reason: StrOrPromise) -> None:
        self.skipped.setdefault(reason, []).append(task)

    def fail(self, task: RunwayTask, reason: StrOrPromise) -> None:
        self.failed.setdefault(reason, []).append(task)

    @property
    def skipped_count(self) -> int:
        return sum(len(tasks) for tasks in self.skipped.values())

    def message(self) -> str:
        """One sentence for the operator, e.g. ``Stopped 2 tasks. Skipped 1: already finished.``"""
        parts = [DONE[self.verb] % {"count": len(self.done)}]
        if self.skipped:
            # A reason may be an exception's sentence, with its own full stop.
            reasons = "; ".join(
                f"{len(tasks)} {str(reason).rstrip('.')}"
                if self.skipped_count > 1
                else str(reason).rstrip(".")
                for reason, tasks in self.skipped.items()
            )
            count = self.skipped_count
            parts.append(
                ngettext(
                    "Skipped %(count)d task: %(reasons)s.",
                    "Skipped %(count)d tasks: %(reasons)s.",
                    count,
                )
                % {"count": count, "reasons": reasons}
            )
        for reason, tasks in self.failed.items():
            parts.append(
                ngettext(
                    "Failed for %(count)d task: %(reason)s.",
                    "Failed for %(count)d tasks: %(reason)s.",
                    len(tasks),
                )
                % {"count": len(tasks), "reason": str(reason).rstrip(".")}
            )
        return " ".join(parts)


# Why each action would skip a task, or None when it applies. The admin shows a task's buttons
# by the same rules.


def why_not_poll(task: RunwayTask) -> StrOrPromise | None:
    if task.is_finished:
        return ALREADY_FINISHED
    if task.status not in POLLABLE_STATUSES:
        return NOT_ACCEPTED
    return None


def why_not_resume(task: RunwayTask) -> StrOrPromise | None:
    return None if task.is_given_up else NOT_GIVEN_UP


def why_not_stop(task: RunwayTask, now: dt.datetime | None = None) -> StrOrPromise | None:
    if task.is_finished:
        return ALREADY_FINISHED
    if may_be_in_flight(task, now):
        return IN_FLIGHT
    return None


def why_not_resubmit(task: RunwayTask, now: dt.datetime | None = None) -> StrOrPromise | None:
    if task.route not in RESUBMITTABLE_ROUTES or not task.request:
        return NO_REQUEST
    if not isinstance(task.request, dict):
        return MALFORMED_REQUEST
    if task.metadata is not None and not isinstance(task.metadata, dict):
        return MALFORMED_METADATA
    if not _link_fits(task):
        return BROKEN_LINK
    if task.status in POLLABLE_STATUSES:
        return STILL_RUNNING
    if may_be_in_flight(task, now):
        return IN_FLIGHT
    return None


def _link_fits(task: RunwayTask) -> bool:
    """The row's ``object_id`` is a value its content type's primary key can take.

    Rows edited by hand (or by an old version of a host model) can hold an id the key refuses,
    which would turn reading ``content_object`` into an error page.
    """
    content_type = task.content_type
    if content_type is None or not task.object_id:
        return True
    model = content_type.model_class()
    if model is None or model._meta.pk is None:
        return False
    try:
        model._meta.pk.clean(task.object_id, None)
    except ValidationError:
        return False
    return True


def _call_api_for_each(
    tasks: Iterable[RunwayTask],
    why_not: Callable[[RunwayTask], StrOrPromise | None],
    call: Callable[[RunwayTask, CometAPIClient], None],
    *,
    client: CometAPIClient | None,
    report: ActionReport,
) -> ActionReport:
    """``call(task, client)`` for each task ``why_not`` finds no reason to skip, at most
    ``MAX_API_CALLS``; the others are skipped in ``report``, with the reason.

    ``client``, or one of our own for all the calls. Without an API key every such task is
    skipped with the reason, instead of an error page.
    """
    todo: list[RunwayTask] = []
    for task in tasks:
        reason = why_not(task) or (TOO_MANY if len(todo) >= MAX_API_CALLS else None)
        if reason:
            report.skip(task, reason)
        else:
            todo.append(task)
    if not todo:
        return report
    with contextlib.ExitStack() as stack:
        if client is None:
            try:
                client = stack.enter_context(CometAPIClient(pool_size=1))
            except RunwayFeedError as exc:
                for task in todo:
                    report.skip(task, str(exc))
                return report
        for task in todo:
            # Inside a caller's transaction (ATOMIC_REQUESTS) a savepoint per task keeps one
            # refused write from aborting it for the others; outside, no transaction is opened
            # around the HTTP call.
            guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
            try:
                with guard:
                    call(task, client)
            except DATABASE_TROUBLE:
                raise
            except DatabaseError as exc:
                # One row the database refuses must not hide what was done to the others
                # behind an error page.
                logger.exception("%s: task #%s could not be written", report.verb, task.pk)
                report.fail(
                    task,
                    gettext("the database refused a write (%(error)s)")
                    % {"error": type(exc).__name__},
                )
    return report


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _by(actor: str) -> str:
    return f" by {actor}" if actor else ""


def poll_now(
    tasks: Iterable[RunwayTask],
    *,
    actor: str = "",
    client: CometAPIClient | None = None,
    now: dt.datetime | None = None,
) -> ActionReport:
    """Poll each accepted, unfinished task now, ignoring its schedule and any API pause.

    A task is polled only if its lease can be taken, so a worker polling it at that moment
    wins and the task is skipped. Each polled task gets a ``manual_poll`` event; a status
    change it found is recorded (and signalled) as usual.
    """
    report = ActionReport("Polled")

    def poll_one(task: RunwayTask, client: CometAPIClient) -> None:
        before = (task.status, task.progress)
        summary = services.poll_task_now(task, client=client, now=now)
        if not summary.claimed:
            report.skip(task, BUSY)
            return
        task.refresh_from_db()
        if summary.errors:
            outcome = "the request failed (see the last error)"
            report.fail(task, _first_line(task.last_error) or gettext("the request failed"))
        elif (task.status, task.progress) == before:
            outcome = f"no change ({task.status}, {task.progress}%)"
        else:
            outcome = f"{before[0]} {before[1]}% -> {task.status} {task.progress}%"
        outbox.record_note(task, EventKind.MANUAL_POLL, f"Polled now{_by(actor)}: {outcome}.")
        report.done.append(task)

    return _call_api_for_each(tasks, why_not_poll, poll_one, client=client, report=report)


def resume_tracking(
    tasks: Iterable[RunwayTask], *, actor: str = "", now: dt.datetime | None = None
) -> ActionReport:
    """Follow given-up tasks again (``failed`` with code ``timeout`` or ``not_found``).

    The one deliberate backward move of a status: ``failed`` -> ``queued``, failure cleared,
    polled at once. It sends no signal (receivers hear of the next real transition) and writes
    a ``resumed`` event keeping the old failure. ``resumed_at`` is set, and ``TASK_TIMEOUT``
    and ``NOT_FOUND_GRACE`` count from it: the task gets a fresh window, after which it is
    given up again if it still has not finished (or still is not visible).
    """
    now = now or timezone.now()
    report = ActionReport("Resumed")
    for task in tasks:
        reason = why_not_resume(task)
        if reason:
            report.skip(task, reason)
            continue
        # ``task`` is the row as read (failed): the note goes from there to queued.
        resumed = change_status(
            task,
            Status.QUEUED,
            now=now,
            values={
                "failure_code": "",
                "fail_reason": "",
                "finished_at": None,
                "resumed_at": now,
                "next_poll_at": now,
                "error_count": 0,
                "last_error": "",
                "lease_owner": "",
                "lease_expires_at": None,
            },
            where={"failure_code": task.failure_code},
            message=f"Tracking resumed{_by(actor)}; it had been given up ({task.failure_code}).",
            payload={"failure_code": task.failure_code, "fail_reason": task.fail_reason},
            reopen=True,
        )
        if not resumed:
            report.skip(task, CHANGED)
            continue
        report.done.append(task)
    return report


def stop_tracking(
    tasks: Iterable[RunwayTask], *, actor: str = "", now: dt.datetime | None = None
) -> ActionReport:
    """Stop following unfinished tasks: ``cancelled`` with code ``stopped`` (a local cancel).

    CometAPI documents no cancel route, so nothing is sent: the task may still run, and be
    billed, at the provider. The change is an ordinary transition, so ``task_status_changed``
    and ``task_failed`` are sent after commit. Finished tasks are never touched.
    """
    now = now or timezone.now()
    report = ActionReport("Stopped")
    for task in tasks:
        reason = why_not_stop(task, now)
        if reason:
            report.skip(task, reason)
            continue
        reason = (
            f"Stopped{_by(actor)}: no longer tracked. CometAPI has no cancel route, so the task "
            "may still run (and be billed) at the provider."
        )
        stopped = change_status(
            task,
            Status.CANCELLED,
            now=now,
            values={
                "failure_code": FailureCode.STOPPED,
                "fail_reason": reason,
                "finished_at": now,
                "next_poll_at": None,
                # A poll in flight writes only while it holds the lease: dropping the lease
                # discards its answer.
                "lease_owner": "",
                "lease_expires_at": None,
            },
            message=reason,
        )
        if not stopped:
            report.skip(task, CHANGED)
            continue
        report.done.append(task)
    return report


def resubmit(
    tasks: Iterable[RunwayTask],
    *,
    actor: str = "",
    client: CometAPIClient | None = None,
    now: dt.datetime | None = None,
) -> ActionReport:
    """Create a new task with the same route, request, host object and metadata as each one.

    The new row's ``resubmitted_from`` is the old one, and the old one gets a ``resubmitted``
    event naming the new row. ``report.done`` holds the new rows. A double click (or two
    operators at once) creates one new task, not two: the idempotency key is derived from the
    number of times the task was resubmitted before.
    """
    now = now or timezone.now()
    report = ActionReport("Resubmitted")
    return _call_api_for_each(
        tasks,
        lambda task: why_not_resubmit(task, now),
        lambda task, client: _resubmit_one(task, actor, client, report, started=now),
        client=client,
        report=report,
    )


def _resubmit_one(
    task: RunwayTask,
    actor: str,
    client: CometAPIClient,
    report: ActionReport,
    *,
    started: dt.datetime,
) -> None:
    # Only resubmissions recorded before this action started: a click racing this one may
    # finish and record its own first, and this one must still derive the same key.
    previous_resubmissions = _resubmitted_events(task).filter(created_at__lt=started).count()
    try:
        new = services.submit_task(
            task.route,
            dict(task.request),
            content_object=task.content_object,
            metadata=dict(task.metadata or {}),
            idempotency_key=f"resubmit:{task.pk}:{previous_resubmissions + 1}",
            client=client,
            resubmitted_from=task,
        )
    except RunwayFeedError as exc:
        report.skip(task, str(exc))
        return

    # Two clicks at once share the key and get the same new row. Locking the old row makes
    # the second wait for the first's event, see it, and write none.
    with transaction.atomic():
        list(RunwayTask.objects.select_for_update().filter(pk=task.pk).values_list("pk"))
        if not _resubmitted_events(task).filter(payload__task=new.pk).exists():
            outbox.record_note(
                task,
                EventKind.RESUBMITTED,
                f"Resubmitted{_by(actor)} as task #{new.pk} ({new.status}).",
                payload={"task": new.pk},
            )
    report.done.append(new)


def _resubmitted_events(task: RunwayTask) -> QuerySet[TaskEvent]:
    return TaskEvent.objects.filter(task=task, kind=EventKind.RESUBMITTED)


def may_be_in_flight(task: RunwayTask, now: dt.datetime | None = None) -> bool:
    """Whether ``task`` is a young ``submitting`` row whose create call may not have returned."""
    now = now or timezone.now()
    return (
        task.status == Status.SUBMITTING
        and not task.last_error
        and task.created_at > now - SUBMISSION_IN_FLIGHT
    )


def download_results(tasks: Iterable[RunwayTask], *, actor: str = "") -> ActionReport:
    """Queue a fresh download of each succeeded task's outputs to the site's storage.

    Forced: a result already stored is fetched again. Needs ``DOWNLOAD_RESULTS``; each task
    that cannot be downloaded is skipped with the reason :mod:`~django_runway_feed.storage`
    gives. Each queued task gets a ``download_queued`` event.
    """
    report = ActionReport("Queued the download of")
    for task in tasks:
        try:
            downloads.queue_download(task, force=True, reason=f"Download queued{_by(actor)}.")
        except DownloadUnavailable as exc:
            report.skip(task, str(exc))
        else:
            report.done.append(task)
    return report

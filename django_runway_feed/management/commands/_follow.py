"""Shared pieces of the task commands: finding a task by id, and the progress lines, JSON and
exit status of ``runway_submit`` and ``runway_track``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_runway_feed import services, validation
from django_runway_feed.exceptions import RunwayFeedError
from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status

from ._base import number_between

MAX_WAIT_SECONDS = 7 * 86_400


def find_task(ident: str) -> RunwayTask | None:
    """The task whose provider id is ``ident``, else (all digits) whose row id is; or None.

    A provider id may be all digits too: it wins over a row id.
    """
    # An id that cannot be a task's (a NUL, a line break) finds nothing; PostgreSQL would
    # refuse even to compare it.
    task = (
        RunwayTask.objects.filter(task_id=ident).first() if validation.is_task_id(ident) else None
    )
    if task is None and ident.isdigit():
        task = RunwayTask.objects.filter(pk=int(ident)).first()
    return task


def add_follow_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="Follow the task until it finishes, showing progress."
    )
    parser.add_argument(
        "--timeout",
        type=number_between(0, MAX_WAIT_SECONDS, above_low=True),
        default=None,
        help="Give up waiting after N s (at most a week).",
    )
    parser.add_argument("--json", action="store_true", help="Print the task as JSON.")


def task_summary(task: RunwayTask) -> dict[str, Any]:
    return {
        "id": task.pk,
        "task_id": task.task_id,
        "route": task.route,
        "status": task.status,
        "progress": task.progress,
        "result_url": task.result_url,
        "failure_code": task.failure_code,
        "fail_reason": task.fail_reason,
        "last_error": task.last_error,
    }


def report(
    command: BaseCommand, task: RunwayTask, *, wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Print the task (following it first with ``wait``); fail the command if the task failed."""

    def show(current: RunwayTask) -> None:
        if not as_json:
            command.stdout.write(
                f"{current.task_id or '#' + str(current.pk)}: {current.status} {current.progress}%"
            )

    if wait:
        try:
            task = services.follow_task(task, timeout=timeout, on_change=show)
        except RunwayFeedError as exc:
            raise CommandError(str(exc)) from exc
    else:
        show(task)
    if as_json:
        command.stdout.write(json.dumps(task_summary(task)))
    elif task.result_url:
        command.stdout.write(f"Result: {task.result_url}")
    if task.status in (Status.FAILED, Status.CANCELLED):
        raise CommandError(
            f"Task {task.task_id or task.pk} {task.status}: "
            f"{task.failure_code} {task.fail_reason}".rstrip()
        )
    if task.status == Status.SUBMITTING and task.last_error:
        raise CommandError(task.last_error)
    if wait and not task.is_finished:
        raise CommandError(f"Task {task.task_id} still {task.status} after {timeout} s.")

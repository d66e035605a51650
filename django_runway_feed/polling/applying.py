"""Writing a round's answers: each task's plan, under the lease the round claimed it with.

What an answer means is decided by :mod:`django_runway_feed.planning`; this module writes it.
Rows without a status change are written together, in one bulk ``UPDATE`` per group; each
status change goes through :func:`django_runway_feed.transitions.change_status`, in its own
small transaction with its event. A row the database refuses costs its own task one poll (a
recorded error, or past ``TASK_TIMEOUT`` a give-up), never the round.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError
from django.db.models import F

from .. import outbox
from ..cleaning import clean_text
from ..exceptions import AuthenticationError, ForbiddenError, UnstorableAnswerError
from ..feed import FeedSnapshot
from ..history import Hindsight
from ..models import RunwayTask
from ..planning import Plan, plan_error, plan_snapshot
from ..statuses import TERMINAL_STATUSES
from ..transitions import change_status
from ..writes import DATABASE_TROUBLE, ROW_WRITE_ERRORS, bulk_write, statement_guard
from .claiming import release
from .fetching import Answer, NotSent
from .summary import Clock, PollSummary

logger = logging.getLogger(__name__)


@dataclass
class AppliedAnswers:
    """A round's answers once their status changes are written; the quiet rows wait."""

    summary: PollSummary
    quiet: list[tuple[RunwayTask, Plan]] = field(default_factory=list)
    # Tasks whose progress moved: their signal goes once their row is written.
    progressed: list[RunwayTask] = field(default_factory=list)
    # The 401/403 of the round, if any: one pause per round, however many tasks saw it.
    refused: Exception | None = None
    # A row not written (not sent, refused, a lost race) keeps its lease until released.
    left_leased: bool = False


def apply_answers(
    owner: str,
    tasks: list[RunwayTask],
    results: list[Answer],
    *,
    now: dt.datetime,
    hindsight: Hindsight,
    clock: Clock,
) -> AppliedAnswers:
    """Plan every answer and write the status changes; :func:`write_quiet_rows` does the rest."""
    applied = AppliedAnswers(PollSummary(claimed=len(tasks)))
    summary = applied.summary
    outlook = hindsight.at(now)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, NotSent):
            applied.left_leased = True  # released below, untouched: the next round polls it
            continue
        if isinstance(result, AuthenticationError | ForbiddenError):
            applied.refused = result
            applied.left_leased = True
            continue
        if isinstance(result, FeedSnapshot):
            plan = plan_snapshot(task, result, now=now, outlook=outlook)
            summary.polled += 1
            if plan.new_status in TERMINAL_STATUSES:
                hindsight.noticed_finish(
                    task,
                    plan.fields.get("started_at", task.started_at),
                    plan.fields.get("finished_at"),
                )
        else:
            plan = plan_error(task, result, now=now)
            summary.errors += int(plan.error)
            if plan.error:
                logger.info("Polling task %s failed: %s", task.task_id, result)
        # update() and raw writes skip auto_now, so the row's change time is set here.
        plan.fields["updated_at"] = now
        if plan.new_status is None:
            applied.quiet.append((task, plan))
        else:
            try:
                moved = move(owner, task, plan, clock=clock, payload=getattr(result, "raw", None))
            except DATABASE_TROUBLE:
                raise
            except ROW_WRITE_ERRORS as exc:
                write_failed(owner, task, exc, now=now, clock=clock)
                summary.errors += 1
                applied.left_leased = True  # the release below is the net under that write
                continue
            if not moved:
                applied.left_leased = True
                continue
            summary.transitions += 1
        if plan.progressed:
            task.progress = plan.fields["progress"]
            applied.progressed.append(task)
    return applied


def write_quiet_rows(
    owner: str, tasks: list[RunwayTask], applied: AppliedAnswers, *, now: dt.datetime, clock: Clock
) -> None:
    """Write the rows without a status change, release what stayed leased, signal progress."""
    not_written = _write_quiet(owner, applied.quiet, now=now, clock=clock)
    applied.summary.errors += len(not_written)
    if applied.left_leased or not_written:
        release(owner, [task.pk for task in tasks])
    for task in applied.progressed:
        if task.pk not in not_written:
            outbox.send_progress(task)


def _write_quiet(
    owner: str, rows: list[tuple[RunwayTask, Plan]], *, now: dt.datetime, clock: Clock
) -> set[int]:
    """One UPDATE per group for every row whose status did not change.

    Returns the rows whose write was refused; each of them got a recorded error instead.
    """
    not_written: set[int] = set()
    for error in (False, True):
        group = [(task, plan) for task, plan in rows if plan.error is error]
        if not group:
            continue
        names = {"poll_count", "error_count", "lease_owner", "lease_expires_at"}
        for _task, plan in group:
            names.update(plan.fields)
        for task, plan in group:
            for name, value in plan.fields.items():
                setattr(task, name, value)
            # The lease makes this worker the only writer, so plain values are safe.
            task.poll_count += 1
            task.error_count = task.error_count + 1 if error else 0
            task.lease_owner, task.lease_expires_at = "", None
        tasks = [task for task, _plan in group]
        try:
            with statement_guard():
                bulk_write(owner, tasks, sorted(names))
        except DATABASE_TROUBLE:
            raise
        except ROW_WRITE_ERRORS:
            # Some row's values were refused: row by row, so only that row's task pays.
            for task in tasks:
                try:
                    with statement_guard():
                        bulk_write(owner, [task], sorted(names))
                except DATABASE_TROUBLE:
                    raise
                except ROW_WRITE_ERRORS as exc:
                    not_written.add(task.pk)
                    write_failed(owner, task, exc, now=now, clock=clock)
    return not_written


def write_failed(
    owner: str, task: RunwayTask, error: Exception, *, now: dt.datetime, clock: Clock
) -> None:
    """Record that the database refused ``task``'s answer: an error, a later poll, no lease.

    What is written here is ours only (no value from the answer), so it cannot be refused
    for the same reason. Past ``TASK_TIMEOUT`` the task is given up, without the payload.
    """
    logger.warning(
        "Task %s: the database refused its poll result (%s)",
        task.task_id,
        type(error).__name__,
        # Not a database error: a value Python itself refused; keep where it came from.
        exc_info=not isinstance(error, DatabaseError),
    )
    detail = clean_text(str(error)).strip().splitlines()
    failure = UnstorableAnswerError(
        f"the database refused this answer ({type(error).__name__}"
        + (f": {detail[0]}" if detail else "")
        + "); the task is polled again later"
    )
    # The in-memory row holds the refused values: decide from what is stored.
    try:
        task.refresh_from_db()
    except RunwayTask.DoesNotExist:
        return  # deleted meanwhile (an operator): nothing left to record
    plan = plan_error(task, failure, now=now)
    plan.fields["updated_at"] = now
    if plan.new_status is not None:
        # A lost race or a refused give-up leaves the row to the caller's release.
        try:
            move(owner, task, plan, clock=clock)
        except DATABASE_TROUBLE:
            raise
        except ROW_WRITE_ERRORS:
            logger.exception("Task %s: even its give-up could not be written", task.task_id)
        return
    try:
        with statement_guard():
            RunwayTask.objects.filter(pk=task.pk, lease_owner=owner).update(
                **plan.fields,
                poll_count=F("poll_count") + 1,
                error_count=F("error_count") + 1,
                lease_owner="",
                lease_expires_at=None,
            )
    except DATABASE_TROUBLE:
        raise
    except ROW_WRITE_ERRORS:
        logger.exception("Task %s: even its error could not be recorded", task.task_id)


def move(owner: str, task: RunwayTask, plan: Plan, *, clock: Clock, payload: Any = None) -> bool:
    """Write a plan's status change while ``owner`` holds the lease; False if it lost a race."""
    new_status = plan.new_status
    assert new_status is not None
    moved = change_status(
        task,
        new_status,
        now=plan.fields.get("last_polled_at") or clock(),
        values={
            **plan.fields,
            "poll_count": task.poll_count + 1,
            "error_count": 0,
            "lease_owner": "",
            "lease_expires_at": None,
        },
        lease_owner=owner,
        message=plan.message,
        payload=payload,
    )
    if moved:
        logger.info("Task %s: %s -> %s", task.task_id, task.status, new_status)
    else:
        logger.info("Task %s changed under us; dropping a stale answer", task.task_id)
    return moved

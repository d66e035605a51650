"""``django_runway_feed.transitions``: the one writer of status changes, and its rule."""

from __future__ import annotations

import ast
import datetime as dt
import itertools
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction

import django_runway_feed
from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.statuses import Status
from django_runway_feed.transitions import DisallowedTransition, change_status, is_allowed

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

S = Status
# The rule, spelled out move by move: forward only, skipping ranks allowed, terminal is final.
FORWARD_MOVES = {
    (S.SUBMITTING, S.QUEUED),
    (S.SUBMITTING, S.RUNNING),
    (S.SUBMITTING, S.SUCCEEDED),
    (S.SUBMITTING, S.FAILED),
    (S.SUBMITTING, S.CANCELLED),
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.SUCCEEDED),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
}
EVERY_PAIR = list(itertools.product(Status, Status))


def make_task(status: str = Status.QUEUED, **fields: object) -> RunwayTask:
    return RunwayTask.objects.create(
        route="tracked", task_id=fields.pop("task_id", "t-1"), status=status, **fields
    )


# -- the rule (no database) -----------------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), EVERY_PAIR)
def test_is_allowed_only_forward_moves(current, new):
    assert is_allowed(current, new) is ((current, new) in FORWARD_MOVES)


@pytest.mark.parametrize(("current", "new"), EVERY_PAIR)
def test_is_allowed_reopen_only_failed_to_queued(current, new):
    assert is_allowed(current, new, reopen=True) is ((current, new) == (S.FAILED, S.QUEUED))


# -- change_status --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_change_status_writes_status_values_and_one_transition_event(
    django_capture_on_commit_callbacks, signal_log
):
    task = make_task(Status.RUNNING, progress=40)

    with django_capture_on_commit_callbacks(execute=True):
        moved = change_status(
            task,
            Status.SUCCEEDED,
            now=NOW,
            values={"progress": 100, "finished_at": NOW},
            message="done",
            payload={"raw": 1},
        )

    assert moved is True
    row = RunwayTask.objects.get(pk=task.pk)
    assert (row.status, row.progress, row.finished_at, row.updated_at) == (
        Status.SUCCEEDED,
        100,
        NOW,
        NOW,
    )
    (event,) = TaskEvent.objects.filter(task=task)
    assert (event.kind, event.from_status, event.to_status, event.progress) == (
        EventKind.TRANSITION,
        Status.RUNNING,
        Status.SUCCEEDED,
        100,
    )
    assert (event.message, event.payload, event.created_at) == ("done", {"raw": 1}, NOW)
    assert signal_log.names() == ["task_status_changed", "task_succeeded"]
    assert task.status == Status.RUNNING  # the caller's row is left as read


@pytest.mark.django_db
def test_change_status_event_keeps_task_progress_when_values_have_none():
    task = make_task(Status.RUNNING, progress=40)

    change_status(task, Status.CANCELLED, now=NOW)

    assert TaskEvent.objects.get(task=task).progress == 40


@pytest.mark.django_db
def test_change_status_given_updated_at_wins_over_now():
    task = make_task()
    written_at = NOW - dt.timedelta(seconds=3)

    change_status(task, Status.RUNNING, now=NOW, values={"updated_at": written_at})

    assert RunwayTask.objects.get(pk=task.pk).updated_at == written_at
    assert TaskEvent.objects.get(task=task).created_at == NOW


@pytest.mark.django_db
def test_change_status_status_changed_since_read_writes_nothing():
    task = make_task(Status.QUEUED)
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.SUCCEEDED)

    moved = change_status(task, Status.RUNNING, now=NOW, values={"progress": 10})

    assert moved is False
    row = RunwayTask.objects.get(pk=task.pk)
    assert (row.status, row.progress) == (Status.SUCCEEDED, 0)
    assert not TaskEvent.objects.filter(task=task).exists()


@pytest.mark.django_db
def test_change_status_lease_held_by_another_owner_writes_nothing():
    task = make_task(lease_owner="worker-b")

    moved = change_status(task, Status.RUNNING, now=NOW, lease_owner="worker-a")

    assert moved is False
    assert RunwayTask.objects.get(pk=task.pk).status == Status.QUEUED
    assert not TaskEvent.objects.exists()


@pytest.mark.django_db
def test_change_status_lease_held_by_owner_writes():
    task = make_task(lease_owner="worker-a")

    moved = change_status(task, Status.RUNNING, now=NOW, lease_owner="worker-a")

    assert moved is True
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING


@pytest.mark.django_db
def test_change_status_where_field_changed_since_read_writes_nothing():
    task = make_task(Status.FAILED, failure_code="timeout")
    RunwayTask.objects.filter(pk=task.pk).update(failure_code="provider")

    moved = change_status(
        task, Status.QUEUED, now=NOW, where={"failure_code": "timeout"}, reopen=True
    )

    assert moved is False
    assert RunwayTask.objects.get(pk=task.pk).status == Status.FAILED
    assert not TaskEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("current", "new"),
    [(S.SUCCEEDED, S.RUNNING), (S.RUNNING, S.QUEUED), (S.QUEUED, S.QUEUED), (S.FAILED, S.QUEUED)],
)
def test_change_status_backward_or_standing_move_raises_and_writes_nothing(current, new):
    task = make_task(current)

    with pytest.raises(DisallowedTransition) as caught:
        change_status(task, new, now=NOW)

    assert str(caught.value) == (
        f"Task #{task.pk} cannot move from {current} to {new}: a status only moves forward, "
        "and only resuming a given-up task (reopen=True) moves it back."
    )
    assert RunwayTask.objects.get(pk=task.pk).status == current
    assert not TaskEvent.objects.exists()


@pytest.mark.django_db
def test_change_status_reopen_forward_move_raises():
    task = make_task(Status.QUEUED)

    with pytest.raises(DisallowedTransition):
        change_status(task, Status.RUNNING, now=NOW, reopen=True)

    assert RunwayTask.objects.get(pk=task.pk).status == Status.QUEUED


@pytest.mark.django_db
def test_change_status_reopen_writes_a_resumed_note_without_signal(
    django_capture_on_commit_callbacks, signal_log
):
    task = make_task(Status.FAILED, failure_code="timeout", progress=30)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        moved = change_status(
            task,
            Status.QUEUED,
            now=NOW,
            values={"failure_code": ""},
            message="resumed",
            payload={"failure_code": "timeout"},
            reopen=True,
        )

    assert moved is True
    assert RunwayTask.objects.get(pk=task.pk).status == Status.QUEUED
    (event,) = TaskEvent.objects.filter(task=task)
    assert (event.kind, event.from_status, event.to_status, event.progress) == (
        EventKind.RESUMED,
        Status.FAILED,
        Status.QUEUED,
        30,
    )
    assert (event.message, event.payload, event.dispatched_at) == (
        "resumed",
        {"failure_code": "timeout"},
        NOW,
    )
    assert callbacks == []
    assert signal_log.names() == []


@pytest.mark.django_db
def test_change_status_refused_write_records_no_event_and_keeps_caller_transaction():
    make_task(Status.QUEUED, task_id="taken")
    task = make_task(Status.SUBMITTING, task_id=None)

    with transaction.atomic():
        with pytest.raises(IntegrityError):
            change_status(task, Status.QUEUED, now=NOW, values={"task_id": "taken"})
        # The savepoint took the refused statement: the caller's transaction still works.
        assert RunwayTask.objects.get(pk=task.pk).status == Status.SUBMITTING

    assert not TaskEvent.objects.exists()


@pytest.mark.django_db
def test_change_status_status_in_values_is_refused():
    task = make_task()

    with pytest.raises(TypeError):
        change_status(task, Status.RUNNING, now=NOW, values={"status": Status.SUCCEEDED})

    assert RunwayTask.objects.get(pk=task.pk).status == Status.QUEUED


# -- one home -------------------------------------------------------------------------------------


def status_writes(path: Path) -> list[int]:
    """Lines of ``path`` calling ``update()`` or ``bulk_update()`` with the status field."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "update" and any(kw.arg == "status" for kw in node.keywords):
            lines.append(node.lineno)
        if node.func.attr == "bulk_update" and "'status'" in ast.unparse(node):
            lines.append(node.lineno)
    return lines


def test_only_transitions_writes_a_status_change():
    package = Path(django_runway_feed.__file__).parent
    writers = {
        str(path.relative_to(package)): lines
        for path in sorted(package.rglob("*.py"))
        if "migrations" not in path.parts and (lines := status_writes(path))
    }

    assert list(writers) == ["transitions.py"]

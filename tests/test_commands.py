from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_runway_feed import jobs
from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import TaskScript

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_polls_due_tasks_and_returns_summary(api, clock):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=50)))

    summary = jobs.poll_due_tasks(window=0)

    task.refresh_from_db()
    assert summary["polled"] == 1
    assert summary["transitions"] == 1
    assert task.status == Status.RUNNING
    assert PollerState.objects.get(pk=1).last_run == summary


def test_runway_poll_reports_what_it_did(api, capsys):
    RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=50)))

    call_command("runway_poll")

    assert capsys.readouterr().out == "Polled 1 task(s): 1 transition(s), 0 error(s).\n"


def test_runway_poll_task_polls_one_task_now(api, capsys):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=50)))
    RunwayTask.objects.filter(pk=task.pk).update(
        next_poll_at=task.next_poll_at + dt.timedelta(hours=1)
    )

    call_command("runway_poll", "--task", task.task_id)

    assert capsys.readouterr().out.startswith(f"{task.task_id}: running ")
    assert api.call_count(task.task_id) == 1


def test_runway_poll_unknown_task_is_an_error(api):
    with pytest.raises(CommandError, match="No tracked task 'nope'"):
        call_command("runway_poll", "--task", "nope")


def test_runway_status_shows_counts_and_pause(api, capsys):
    RunwayTask.objects.track(api.add_task(TaskScript()))
    PollerState.objects.create(
        pk=1,
        paused_until=dt.datetime(2999, 1, 1, tzinfo=dt.UTC),
        pause_reason="CometAPI refused the API key (HTTP 401)",
    )

    call_command("runway_status")

    out = capsys.readouterr().out
    assert "Queued       1" in out
    assert "Last successful poll: never" in out
    assert "Polling paused until 2999-01-01T00:00:00+00:00: CometAPI refused" in out

"""The chores after a poll run: stuck tasks get task_stale once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from django_runway_feed import jobs, maintenance, services, signals
from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import TaskScript


def make_task(*, status=Status.QUEUED, age=dt.timedelta(0), now=None, **fields):
    now = now or timezone.now()
    return RunwayTask.objects.create(
        route="tracked",
        status=status,
        created_at=now - age,
        submitted_at=fields.pop("submitted_at", now - age),
        next_poll_at=fields.pop("next_poll_at", now + dt.timedelta(seconds=5)),
        **fields,
    )


@pytest.fixture
def stale_log():
    calls = []

    def receiver(sender, task, **kwargs):
        calls.append((task.pk, task.stale_at, connection.in_atomic_block))

    signals.task_stale.connect(receiver, weak=False)
    yield calls
    signals.task_stale.disconnect(receiver)


@pytest.mark.django_db(transaction=True)
def test_stale_task_gets_task_stale_once_after_commit(settings, stale_log):
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    stuck = make_task(age=dt.timedelta(minutes=11), now=now)
    make_task(age=dt.timedelta(minutes=1), now=now)

    first = maintenance.mark_stale_tasks(now=now)
    second = maintenance.mark_stale_tasks(now=now + dt.timedelta(minutes=1))

    assert (first, second) == (1, 0)
    assert stale_log == [(stuck.pk, now, False)]
    assert RunwayTask.objects.get(pk=stuck.pk).stale_at == now


@pytest.mark.django_db(transaction=True)
def test_finished_task_is_never_marked_stale(settings, stale_log):
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    make_task(status=Status.FAILED, age=dt.timedelta(hours=1), now=now)

    assert maintenance.mark_stale_tasks(now=now) == 0
    assert stale_log == []


@pytest.mark.django_db(transaction=True)
def test_scheduled_job_sends_task_stale_once_across_runs(api, clock, now_of, settings, stale_log):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "STALE_AFTER": 600}
    task = RunwayTask.objects.track(
        api.add_task(TaskScript(queued_for=0, run_for=10_000)), now=now_of()
    )
    clock.advance(20 * 60)  # the provider reports it submitted 20 min ago: stuck

    services.poll_due_tasks(window=0, clock=now_of)
    clock.advance(60)
    services.poll_due_tasks(window=0, clock=now_of)
    jobs.poll_due_tasks(window=0)

    task.refresh_from_db()
    assert task.status == Status.RUNNING
    assert [pk for pk, _stale_at, _atomic in stale_log] == [task.pk]
    assert stale_log[0][2] is False

"""Per-task backoff stays small; gateway trouble is handled once, for every worker (issue 13).

Time is the fake clock's, for the tasks and for the shared budget alike.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_runway_feed import gateway
from django_runway_feed.budget import RequestBudget
from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.polling import Poller
from django_runway_feed.testing import FakeClock, FakeCometAPI, Fault, TaskScript

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = TaskScript(queued_for=10_000)


def track(api: FakeCometAPI, now_of: Callable[[], dt.datetime], script: TaskScript) -> RunwayTask:
    return RunwayTask.objects.track(api.add_task(script), now=now_of())


def worker(clock: FakeClock, now_of: Callable[[], dt.datetime]) -> Poller:
    """A poller as another worker would run it: its own client, the shared budget row."""
    return Poller(clock=now_of, budget=RequestBudget(None, now=clock.now))


# -- per-task backoff -------------------------------------------------------------------------


def test_error_backoff_streak_stays_within_two_max_poll_intervals(api, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5, "MAX_POLL_INTERVAL": 15}
    task = track(api, now_of, TaskScript(queued_for=0, run_for=1_000))
    api.inject(Fault.server_error(500), times=6, task_id=task.task_id)

    with worker(clock, now_of) as poller:
        for _ in range(300):
            poller.run_round()
            clock.advance(1)

    calls = api.feed_calls(task.task_id)
    assert [call.status_code for call in calls[:7]] == [500] * 6 + [200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls[:7])]
    # POLL_INTERVAL after the first two errors, then doubling to at most 2 x MAX_POLL_INTERVAL
    # (30 s), 0-20 % jitter and one second of round granularity; the old backoff waited 10, 20,
    # 40, 80, 160 s.
    assert 5 <= gaps[0] <= 7
    assert max(gaps) <= 30 * 1.2 + 1


def test_error_backoff_retry_after_longer_than_the_cap_is_honoured(api, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5, "MAX_POLL_INTERVAL": 15}
    task = track(api, now_of, QUIET)
    api.inject(Fault.rate_limited(retry_after="100"), task_id=task.task_id)

    with worker(clock, now_of) as poller:
        poller.run_round()

    task.refresh_from_db()
    assert task.next_poll_at is not None
    assert (task.next_poll_at - now_of()).total_seconds() >= 100


# -- gateway trouble ----------------------------------------------------------------------------


def test_gateway_errors_of_most_answers_hold_every_worker(api, clock, now_of):
    for _ in range(12):
        track(api, now_of, QUIET)
    api.inject(Fault.server_error(502), times=12)
    with worker(clock, now_of) as first:
        first_run = first.run(window=0, sleep=lambda seconds: None)
    bystander = track(api, now_of, QUIET)

    with worker(clock, now_of) as second:
        held = second.run_round()
        calls_during_hold = api.call_count(bystander.task_id)
        clock.advance(gateway.hold_seconds() + 1)
        after = second.run_round()

    state = PollerState.objects.get(pk=1)
    assert first_run.errors == 12
    assert held.throttled == 1
    assert held.claimed == 0
    assert calls_during_hold == 0
    # The bystander and the 12 tasks, whose own (10 s) backoff passed during the hold.
    assert after.polled == 13
    assert api.call_count(bystander.task_id) == 1
    assert state.gateway_held_until is not None
    # The hold restarted the window: the answers from before it count no more.
    assert (state.gateway_answers, state.gateway_errors) == (0, 0)


def test_gateway_errors_of_a_few_answers_do_not_hold(api, clock, now_of):
    for _ in range(20):
        track(api, now_of, QUIET)
    api.inject(Fault.server_error(500), times=6)
    with worker(clock, now_of) as first:
        first.run(window=0, sleep=lambda seconds: None)
    bystander = track(api, now_of, QUIET)

    with worker(clock, now_of) as second:
        summary = second.run_round()

    state = PollerState.objects.get(pk=1)
    assert (state.gateway_answers, state.gateway_errors) == (20, 6)
    assert summary.throttled == 0
    assert api.call_count(bystander.task_id) == 1


def test_gateway_report_rides_on_the_budget_compare_and_set(api, clock, now_of):
    tasks = [track(api, now_of, QUIET) for _ in range(3)]
    api.inject(Fault.server_error(500), times=3)
    budget = RequestBudget(1_000, now=clock.now)
    with Poller(clock=now_of, budget=budget) as poller:
        poller.run_round()
        for task in tasks:
            RunwayTask.objects.filter(pk=task.pk).update(next_poll_at=now_of())
        with CaptureQueriesContext(connection) as counted:
            poller.run_round()

    state = PollerState.objects.get(pk=1)
    assert (state.gateway_answers, state.gateway_errors) == (3, 3)
    # One write of the shared row in that round, as before: the budget's compare-and-set,
    # which carried the previous round's answers.
    writes = [
        q["sql"]
        for q in counted.captured_queries
        if q["sql"].startswith("UPDATE") and "pollerstate" in q["sql"]
    ]
    assert len(writes) == 1
    assert '"budget_tat" = ' in writes[0]
    assert "gateway_answers" in writes[0]


def test_gateway_window_older_than_a_minute_is_forgotten(api, clock, now_of):
    PollerState.objects.create(
        pk=1, gateway_window_start=clock.now() - 61, gateway_answers=50, gateway_errors=50
    )
    task = track(api, now_of, QUIET)

    with worker(clock, now_of) as poller:
        summary = poller.run_round()

    assert summary.throttled == 0
    assert api.call_count(task.task_id) == 1


# -- where it shows ----------------------------------------------------------------------------


def in_trouble(now: dt.datetime, *, held_for: float | None = 30) -> None:
    PollerState.objects.update_or_create(
        pk=1,
        defaults={
            "gateway_window_start": now.timestamp() - 10,
            "gateway_answers": 40,
            "gateway_errors": 30,
            "gateway_held_until": (
                now + dt.timedelta(seconds=held_for) if held_for is not None else None
            ),
        },
    )


def test_runway_status_gateway_trouble_shows_in_text_and_json(settings):
    in_trouble(dt.datetime.now(tz=dt.UTC))
    text, as_json = io.StringIO(), io.StringIO()

    call_command("runway_status", stdout=text)
    call_command("runway_status", "--json", stdout=as_json)

    report: dict[str, Any] = json.loads(as_json.getvalue())["gateway"]
    assert report["answers"] == 40
    assert report["errors"] == 30
    assert report["error_share"] == 0.75
    assert report["trouble"] is True
    assert report["held_until"] is not None
    assert "Gateway: 30 of 40 answers failed in the last 60 s (75%); trouble: every worker " in (
        text.getvalue()
    )


def test_runway_status_gateway_quiet_shows_no_trouble():
    text = io.StringIO()

    call_command("runway_status", stdout=text)

    assert "Gateway: 0 of 0 answers failed in the last 60 s (0%)\n" in text.getvalue()


def test_admin_summary_gateway_trouble_is_shown(client):
    in_trouble(dt.datetime.now(tz=dt.UTC))
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))

    page = client.get(reverse("admin:django_runway_feed_runwaytask_changelist")).content.decode()

    assert "Gateway trouble: 30 of 40 answers failed in the last minute." in page
    assert "Every worker holds its polls until" in page

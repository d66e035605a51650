from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_runway_feed import health
from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db


def make_task(status, *, age=dt.timedelta(0), **fields):
    now = timezone.now()
    return RunwayTask.objects.create(
        route="tracked", status=status, created_at=now - age, submitted_at=now - age, **fields
    )


def status_json(*args: str) -> dict:
    from io import StringIO

    out = StringIO()
    call_command("runway_status", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_status_json_has_the_documented_shape(healthy):
    now = timezone.now()
    make_task(Status.QUEUED, age=dt.timedelta(seconds=120), last_polled_at=now)
    make_task(Status.RUNNING, last_polled_at=now, error_count=2)
    make_task(Status.SUCCEEDED, last_polled_at=now - dt.timedelta(hours=2))
    done = make_task(Status.SUCCEEDED)
    TaskEvent.objects.create(task=done, kind=EventKind.TRANSITION, to_status=Status.SUCCEEDED)
    TaskEvent.objects.create(
        task=done,
        kind=EventKind.TRANSITION,
        to_status=Status.RUNNING,
        created_at=now - dt.timedelta(hours=2),
    )

    report = status_json()

    assert sorted(report) == [
        "callbacks",
        "counts",
        "estimated",
        "gateway",
        "generated_at",
        "healthy",
        "last_hour",
        "learn_run_times",
        "oldest_unfinished_age_seconds",
        "poller",
        "problems",
        "run_times",
        "stuck",
        "unfinished",
        "version",
    ]
    assert report["version"] == 1
    assert report["healthy"] is True
    assert report["problems"] == []
    assert report["counts"] == {
        "submitting": 0,
        "queued": 1,
        "running": 1,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }
    assert report["estimated"] == []
    assert report["unfinished"] == 2
    assert report["stuck"] == 0
    assert 120 <= report["oldest_unfinished_age_seconds"] < 130
    assert report["last_hour"] == {"tasks_polled": 2, "tasks_failing": 1, "transitions": 1}
    assert sorted(report["poller"]) == [
        "last_run",
        "last_run_at",
        "last_success_at",
        "last_task_polled_at",
        "pause_reason",
        "paused",
        "paused_until",
        "seconds_since_success",
    ]
    assert report["poller"]["last_run"]["polled"] == 2
    assert report["poller"]["paused"] is False
    assert report["poller"]["paused_until"] is None
    assert sorted(report["callbacks"]) == [
        "announced",
        "callback_base_url_set",
        "last_callback_at",
        "missed",
        "state",
        "trust_callbacks",
    ]
    assert report["callbacks"]["state"] == "off"
    assert (report["run_times"], report["learn_run_times"]) == ({}, True)


def test_status_json_empty_database_uses_nulls(healthy):
    PollerState.objects.all().delete()

    report = status_json()

    assert report["oldest_unfinished_age_seconds"] is None
    assert report["poller"]["last_success_at"] is None
    assert report["poller"]["seconds_since_success"] is None
    assert report["poller"]["last_run"] == {}
    assert set(report["counts"].values()) == {0}


def test_status_json_reports_pause_as_a_problem(healthy):
    PollerState.objects.filter(pk=1).update(
        paused_until=dt.datetime(2999, 1, 1, tzinfo=dt.UTC), pause_reason="HTTP 401"
    )

    report = status_json()

    assert report["healthy"] is False
    assert report["poller"]["paused"] is True
    assert report["poller"]["paused_until"] == "2999-01-01T00:00:00+00:00"
    assert report["poller"]["pause_reason"] == "HTTP 401"
    assert [p["id"] for p in report["problems"]] == ["django_runway_feed.E010"]
    assert report["problems"][0]["level"] == "ERROR"


def test_status_check_passes_when_healthy(healthy, capsys):
    call_command("runway_status", "--check")

    out = capsys.readouterr().out
    assert "Health: OK" in out
    assert "Polling: active" in out


def test_status_check_fails_when_paused(healthy):
    PollerState.objects.filter(pk=1).update(
        paused_until=dt.datetime(2999, 1, 1, tzinfo=dt.UTC), pause_reason="HTTP 401"
    )

    with pytest.raises(CommandError, match=r"^Unhealthy: django_runway_feed\.E010\.$"):
        call_command("runway_status", "--check")


def test_status_check_exit_code_for_a_probe(healthy, capsys):
    PollerState.objects.filter(pk=1).update(last_success_at=timezone.now() - dt.timedelta(hours=1))
    make_task(Status.QUEUED, next_poll_at=timezone.now() - dt.timedelta(minutes=30))

    with pytest.raises(SystemExit) as exit_info:
        execute_from_command_line(["manage.py", "runway_status", "--check", "--json"])

    captured = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "CommandError: Unhealthy: django_runway_feed.E009." in captured.err
    assert json.loads(captured.out)["healthy"] is False


def test_status_check_ignores_warnings_unless_fail_level_warning(healthy, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    make_task(Status.RUNNING, age=dt.timedelta(hours=1))

    call_command("runway_status", "--check")
    with pytest.raises(CommandError, match=r"^Unhealthy: django_runway_feed\.W007\.$"):
        call_command("runway_status", "--check", "--fail-level", "WARNING")


def test_status_text_shows_heartbeat_problem_and_hint(healthy, capsys):
    PollerState.objects.filter(pk=1).update(
        last_success_at=timezone.now() - dt.timedelta(seconds=900)
    )
    make_task(Status.QUEUED, next_poll_at=timezone.now() - dt.timedelta(minutes=30))

    call_command("runway_status")

    lines = capsys.readouterr().out.splitlines()
    assert "Queued       1" in lines
    assert "Stuck tasks: 0" in lines
    assert "Health: 1 problem(s)" in lines
    problem = lines[lines.index("Health: 1 problem(s)") + 1]
    assert problem.startswith("django_runway_feed.E009: No successful poll run for 90")
    assert problem.endswith("s (RUNWAY_FEED['HEARTBEAT_MAX_AGE'] is 300 s) while tasks are due.")
    assert lines[-1] == (
        "    HINT: Start the django-q2 cluster (manage.py qcluster) and check that the Schedule "
        "exists (manage.py runway_schedule), or run manage.py runway_poll --loop."
    )


def test_status_text_shows_seconds_since_last_success(healthy, capsys):
    last = timezone.now() - dt.timedelta(seconds=42)
    PollerState.objects.filter(pk=1).update(last_success_at=last)

    call_command("runway_status")

    out = capsys.readouterr().out
    assert f"Last successful poll: {last.isoformat()} (42 s ago)" in out


def test_status_text_during_first_run_shows_task_polls(capsys):
    PollerState.objects.all().delete()
    make_task(Status.SUCCEEDED, last_polled_at=timezone.now() - dt.timedelta(seconds=7))

    call_command("runway_status")

    out = capsys.readouterr().out
    assert "Last successful poll: no poll run has finished yet; a task was polled 7 s ago" in out
    assert "never" not in out


def test_status_text_without_any_poll_says_never(capsys):
    PollerState.objects.all().delete()
    make_task(Status.QUEUED)

    call_command("runway_status")

    assert "Last successful poll: never" in capsys.readouterr().out


def test_status_counts_take_the_statistics_past_the_limit_on_postgresql(monkeypatch):
    monkeypatch.setattr(health, "EXACT_COUNT_LIMIT", 2)
    for _ in range(5):
        make_task(Status.SUCCEEDED)
    make_task(Status.FAILED)
    postgres = connection.vendor == "postgresql"
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {RunwayTask._meta.db_table}")

    counts, estimated = health.status_counts()

    assert counts["failed"] == 1  # within the limit: exact
    if postgres:
        assert estimated == ["succeeded"]
        assert counts["succeeded"] >= 3
        out = StringIO()
        call_command("runway_status", stdout=out)
        assert f"Succeeded    about {counts['succeeded']}" in out.getvalue()
    else:  # no statistics to ask: exact
        assert estimated == []
        assert counts["succeeded"] == 5


def test_status_report_queries_do_not_grow_with_the_tasks(healthy):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            status_json()
        return len(captured)

    for _ in range(3):
        make_task(Status.RUNNING, last_polled_at=timezone.now())
    few = queries()
    for _ in range(30):
        make_task(Status.SUCCEEDED)
        make_task(Status.QUEUED, last_polled_at=timezone.now())

    assert queries() == few

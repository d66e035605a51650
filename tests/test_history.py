"""What recent finishes tell the poller, read from the rows (django_runway_feed.history).

The reads run on whichever database the suite runs on: SQLite here, PostgreSQL in CI's
services session (its JSON key lookups and partial index differ from SQLite's).
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_runway_feed.history import (
    CALLBACK_EVIDENCE_MAX_AGE,
    CALLBACK_GRACE_SECONDS,
    RUN_TIME_REFRESH,
    Hindsight,
    read_callback_verdict,
    read_run_times,
)
from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.outlook import (
    RUN_TIME_WINDOW,
    CallbackState,
    CallbackVerdict,
    RunTimes,
    profile,
)
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
SITE = "https://site.example"
TURBO_5 = {"prompt": "a cat", "model": "gen4_turbo", "options": {"seconds": 5}}


@pytest.fixture(autouse=True)
def callbacks_on(settings):
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "CALLBACK_BASE_URL": SITE,
        "POLL_INTERVAL": 5,
        "MAX_POLL_INTERVAL": 60,
    }


def seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)


def finished(
    ago: float,
    *,
    called_back: bool = True,
    status: Status = Status.SUCCEEDED,
    expects_callback: bool = True,
) -> RunwayTask:
    """A task that finished ``ago`` seconds before NOW, called back a second later or not."""
    at = NOW - seconds(ago)
    return RunwayTask.objects.create(
        route="generate",
        status=status,
        expects_callback=expects_callback,
        finished_at=at,
        callback_at=at + seconds(1) if called_back else None,
    )


def succeeded(
    run_for: float,
    *,
    ago: float = 60.0,
    route: str = "generate",
    request: dict[str, object] | None = None,
    status: Status = Status.SUCCEEDED,
) -> RunwayTask:
    """A success (or ``status``) that ran ``run_for`` seconds and finished ``ago`` before NOW."""
    end = NOW - seconds(ago)
    return RunwayTask(
        route=route,
        status=status,
        request=TURBO_5 if request is None else request,
        started_at=end - seconds(run_for),
        finished_at=end,
    )


def save(tasks: list[RunwayTask]) -> None:
    RunwayTask.objects.bulk_create(tasks)


# -- read_callback_verdict ---------------------------------------------------------------------


def test_read_callback_verdict_counts_only_tasks_that_expect_a_callback():
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False, expects_callback=False)
    finished(100)
    finished(110)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 2, 0)


def test_read_callback_verdict_counts_only_settled_finishes_of_the_last_hour():
    # Too recent for a late callback to have come, and too old to say anything today.
    for ago in (0, 10, CALLBACK_GRACE_SECONDS - 1, 20):
        finished(ago, called_back=False)
    for ago in (CALLBACK_EVIDENCE_MAX_AGE + 1, CALLBACK_EVIDENCE_MAX_AGE + 60):
        finished(ago, called_back=False)
    for ago in (CALLBACK_EVIDENCE_MAX_AGE + 100, CALLBACK_EVIDENCE_MAX_AGE + 200):
        finished(ago, called_back=False)
    finished(CALLBACK_GRACE_SECONDS + 1)
    finished(CALLBACK_EVIDENCE_MAX_AGE - 1)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 2, 0)


def test_read_callback_verdict_ignores_failures_without_a_callback():
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False, status=Status.FAILED)
    finished(65, called_back=False, status=Status.CANCELLED)
    finished(100)
    finished(110)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 2, 0)


def test_read_callback_verdict_counts_failures_that_were_called_back():
    finished(60, status=Status.FAILED)
    finished(70, status=Status.CANCELLED)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 2, 0)


def test_read_callback_verdict_waits_without_settled_finishes():
    finished(5, called_back=False)

    assert read_callback_verdict(NOW).state == CallbackState.WAITING


def test_read_callback_verdict_reads_the_newest_finishes_first():
    for ago in range(200, 200 + 16 * 10, 10):
        finished(ago)
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False)

    verdict = read_callback_verdict(NOW)

    # Four misses at the newest end: callbacks stopped, though most finishes were announced.
    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.MISSING, 16, 4)
    assert verdict.last_callback_at == NOW - seconds(200) + seconds(1)


def test_read_callback_verdict_misses_among_older_finishes_do_not_stop_it():
    for ago in range(60, 60 + 16 * 10, 10):
        finished(ago)
    for ago in (400, 410, 420, 430):
        finished(ago, called_back=False)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 16, 4)
    assert verdict.last_callback_at == NOW - seconds(60) + seconds(1)


def test_read_callback_verdict_reads_only_the_latest_twenty():
    for ago in range(60, 60 + 20 * 5, 5):
        finished(ago)
    for ago in range(500, 500 + 30 * 5, 5):
        finished(ago, called_back=False)

    verdict = read_callback_verdict(NOW)

    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 20, 0)


def test_read_callback_verdict_is_one_query(django_assert_num_queries):
    finished(60)
    finished(70)

    with django_assert_num_queries(1):
        verdict = read_callback_verdict(NOW)

    assert verdict.live


def test_read_callback_verdict_off_without_callback_base_url(settings, django_assert_num_queries):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "CALLBACK_BASE_URL": None}
    finished(60)
    finished(70)

    with django_assert_num_queries(0):
        verdict = read_callback_verdict(NOW)

    assert verdict == CallbackVerdict()
    assert verdict.state == CallbackState.OFF


def test_read_callback_verdict_off_when_callbacks_are_not_trusted(
    settings, django_assert_num_queries
):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "TRUST_CALLBACKS": False}
    finished(60)
    finished(70)

    with django_assert_num_queries(0):
        verdict = read_callback_verdict(NOW)

    assert verdict.state == CallbackState.OFF


# -- read_run_times ----------------------------------------------------------------------------


def test_read_run_times_groups_by_route_model_and_seconds():
    turbo_10 = {"model": "gen4_turbo", "options": {"seconds": 10}}
    gen4_5 = {"model": "gen4", "options": {"seconds": 5}}
    save([succeeded(60.0) for _ in range(20)])
    save([succeeded(120.0, request=turbo_10) for _ in range(20)])
    save([succeeded(30.0, route="video2video", request=gen4_5) for _ in range(20)])
    save([succeeded(45.0, route="tracked", request={}) for _ in range(20)])

    learned = read_run_times(NOW)

    assert learned == {
        profile("generate", TURBO_5): RunTimes(20, 60.0, 60.0, 60.0),
        profile("generate", turbo_10): RunTimes(20, 120.0, 120.0, 120.0),
        profile("video2video", gen4_5): RunTimes(20, 30.0, 30.0, 30.0),
        profile("tracked", {}): RunTimes(20, 45.0, 45.0, 45.0),
    }
    assert set(learned) == {
        "generate/gen4_turbo/5",
        "generate/gen4_turbo/10",
        "video2video/gen4/5",
        "tracked//",
    }


def test_read_run_times_needs_twenty_successes_of_a_profile():
    save([succeeded(60.0) for _ in range(19)])
    save([succeeded(60.0, request={"model": "gen4"}) for _ in range(20)])

    assert read_run_times(NOW) == {"generate/gen4/": RunTimes(20, 60.0, 60.0, 60.0)}


def test_read_run_times_keeps_the_latest_hundred_of_a_profile():
    save([succeeded(60.0, ago=100.0 + index) for index in range(RUN_TIME_WINDOW)])
    # Older and slower: past the window, so they do not count.
    save([succeeded(600.0, ago=1000.0 + index) for index in range(50)])

    learned = read_run_times(NOW)

    assert learned == {"generate/gen4_turbo/5": RunTimes(RUN_TIME_WINDOW, 60.0, 60.0, 60.0)}


def test_read_run_times_learns_from_successes_with_both_times_only():
    save([succeeded(60.0) for _ in range(20)])
    save([succeeded(10.0, status=Status.FAILED) for _ in range(20)])
    save([succeeded(10.0, status=Status.CANCELLED) for _ in range(20)])
    unstarted = [succeeded(10.0) for _ in range(20)]
    for task in unstarted:
        task.started_at = None
    save(unstarted)
    # Finished after NOW (by another clock): not yet history.
    save([succeeded(10.0, ago=-30.0) for _ in range(20)])

    assert read_run_times(NOW) == {"generate/gen4_turbo/5": RunTimes(20, 60.0, 60.0, 60.0)}


def test_read_run_times_is_one_query(django_assert_num_queries):
    save([succeeded(60.0) for _ in range(20)])

    with django_assert_num_queries(1):
        learned = read_run_times(NOW)

    assert list(learned) == ["generate/gen4_turbo/5"]


def test_read_run_times_off_reads_nothing(settings, django_assert_num_queries):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "LEARN_RUN_TIMES": False}
    save([succeeded(60.0) for _ in range(20)])

    with django_assert_num_queries(0):
        assert read_run_times(NOW) == {}


# -- Hindsight ---------------------------------------------------------------------------------


def test_hindsight_outlook_reads_nothing_until_asked(django_assert_num_queries):
    with django_assert_num_queries(0):
        Hindsight().at(NOW)


def evidence_reads(queries: CaptureQueriesContext) -> int:
    """How many of ``queries`` read the tasks (the shared PollerState row aside)."""
    table = RunwayTask._meta.db_table
    return sum(1 for q in queries if q["sql"].startswith("SELECT") and table in q["sql"])


def test_hindsight_reads_callbacks_again_after_poll_interval():
    hindsight = Hindsight()
    with CaptureQueriesContext(connection) as first:
        hindsight.callbacks(NOW)
    finished(60)
    finished(70)

    with CaptureQueriesContext(connection) as within:
        cached = hindsight.callbacks(NOW + seconds(4.9))
    with CaptureQueriesContext(connection) as after:
        fresh = hindsight.callbacks(NOW + seconds(5))

    assert (evidence_reads(first), len(within), evidence_reads(after)) == (1, 0, 1)
    assert cached.state == CallbackState.WAITING
    assert fresh.state == CallbackState.ARRIVING


def test_hindsight_reads_callbacks_again_when_its_clock_goes_back():
    hindsight = Hindsight()
    hindsight.callbacks(NOW)

    with CaptureQueriesContext(connection) as queries:
        hindsight.callbacks(NOW - seconds(1))

    assert evidence_reads(queries) == 1


def test_hindsight_costs_no_shared_row_query_once_a_round_read_it():
    hindsight = Hindsight()
    hindsight.agreed_state = CallbackState.WAITING  # as Poller._read_state() sets it

    with CaptureQueriesContext(connection) as queries:
        hindsight.callbacks(NOW)

    assert len(queries) == 1


def test_hindsight_reads_run_times_again_after_a_minute(django_assert_num_queries):
    hindsight = Hindsight()
    task = succeeded(60.0)
    with django_assert_num_queries(1):
        assert hindsight.at(NOW).run_times_for(task) is None
    save([succeeded(60.0) for _ in range(20)])

    with django_assert_num_queries(0):
        cached = hindsight.at(NOW + seconds(RUN_TIME_REFRESH - 1)).run_times_for(task)
    with django_assert_num_queries(1):
        fresh = hindsight.at(NOW + seconds(RUN_TIME_REFRESH)).run_times_for(task)

    assert cached is None
    assert fresh == RunTimes(20, 60.0, 60.0, 60.0)


def test_hindsight_reads_run_times_again_after_a_finish_sooner_than_history(
    django_assert_num_queries,
):
    save([succeeded(60.0) for _ in range(20)])
    hindsight = Hindsight()
    task = succeeded(60.0)
    hindsight.run_times(NOW)
    start = NOW - seconds(120)

    hindsight.noticed_finish(task, start, start + seconds(60))
    hindsight.noticed_finish(task, None, start + seconds(1))
    with django_assert_num_queries(0):
        hindsight.run_times(NOW + seconds(1))
    hindsight.noticed_finish(task, start, start + seconds(59))
    with django_assert_num_queries(1):
        hindsight.run_times(NOW + seconds(2))


def running_task(*, next_in: float | None, expects_callback: bool = True, **fields) -> RunwayTask:
    return RunwayTask.objects.create(
        route="generate",
        status=fields.pop("status", Status.RUNNING),
        expects_callback=expects_callback,
        next_poll_at=None if next_in is None else NOW + seconds(next_in),
        **fields,
    )


def next_poll_in(task: RunwayTask) -> float | None:
    task.refresh_from_db()
    return None if task.next_poll_at is None else (task.next_poll_at - NOW).total_seconds()


def test_hindsight_brings_relaxed_tasks_forward_when_callbacks_stop(caplog):
    finished(100)
    finished(110)
    hindsight = Hindsight()
    assert hindsight.callbacks(NOW).live
    relaxed = running_task(next_in=50)
    queued = running_task(next_in=50, status=Status.QUEUED)
    due_soon = running_task(next_in=8)
    uninvolved = running_task(next_in=50, expects_callback=False)
    submitting = running_task(next_in=50, status=Status.SUBMITTING)
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False)

    with caplog.at_level(logging.WARNING, logger="django_runway_feed.history"):
        verdict = hindsight.callbacks(NOW + seconds(5))

    assert verdict.state == CallbackState.MISSING
    # POLL_INTERVAL after the moment the stop was noticed.
    assert next_poll_in(relaxed) == 10
    assert next_poll_in(queued) == 10
    assert next_poll_in(due_soon) == 8
    assert next_poll_in(uninvolved) == 50
    assert next_poll_in(submitting) == 50
    assert [record.getMessage() for record in caplog.records] == [
        "Callbacks stopped arriving (4 of the latest finishes came without one): polling at "
        "the usual cadence again; 2 tasks brought forward"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_hindsight_brings_nothing_forward_when_callbacks_were_never_believed(caplog):
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False)
    relaxed = running_task(next_in=50)

    with (
        caplog.at_level(logging.INFO, logger="django_runway_feed.history"),
        CaptureQueriesContext(connection) as queries,
    ):
        verdict = Hindsight().callbacks(NOW)

    assert verdict.state == CallbackState.MISSING
    assert next_poll_in(relaxed) == 50
    assert caplog.records == []
    table = RunwayTask._meta.db_table
    assert not [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and table in q["sql"]]
    assert PollerState.objects.get(pk=1).callbacks_state == CallbackState.MISSING


def test_hindsight_of_a_new_run_brings_tasks_forward_when_callbacks_stopped_in_between(caplog):
    # A run that ended while callbacks arrived left its verdict in the shared row.
    PollerState.objects.create(pk=1, callbacks_state=CallbackState.ARRIVING)
    relaxed = running_task(next_in=50)
    for ago in (60, 70, 80, 90):
        finished(ago, called_back=False)
    first, second = Hindsight(), Hindsight()

    with caplog.at_level(logging.WARNING, logger="django_runway_feed.history"):
        assert first.callbacks(NOW).state == CallbackState.MISSING
        assert second.callbacks(NOW).state == CallbackState.MISSING

    assert next_poll_in(relaxed) == 5
    # Once for all workers: the second run found the row already moved.
    assert len(caplog.records) == 1
    assert PollerState.objects.get(pk=1).callbacks_state == CallbackState.MISSING


def test_hindsight_says_once_when_callbacks_start_arriving(caplog):
    finished(60)
    finished(70)
    hindsight = Hindsight()

    with caplog.at_level(logging.INFO, logger="django_runway_feed.history"):
        hindsight.callbacks(NOW)
        hindsight.callbacks(NOW + seconds(5))

    assert [record.getMessage() for record in caplog.records] == [
        "Callbacks arrive for recent finishes: tasks that expect one are polled only as a "
        "safety net"
    ]

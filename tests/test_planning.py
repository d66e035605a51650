"""What an answer means and when to ask next: the pure decisions, without a database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import pytest

from django_runway_feed.exceptions import RateLimitedError, TaskNotVisibleError, TransientAPIError
from django_runway_feed.feed import FeedSnapshot, Output
from django_runway_feed.planning import (
    ERROR_BACKOFF_MAX_INTERVALS,
    ERROR_RETRIES_AT_INTERVAL,
    SUCCESS_WITHOUT_OUTPUT_GRACE,
    error_backoff,
    give_up,
    next_poll_delay,
    plan_error,
    plan_snapshot,
)
from django_runway_feed.statuses import FailureCode, Status

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
VIDEO = "https://cdn.example.com/v.mp4"


@dataclass(frozen=True)
class Task:
    """The fields the decisions read, as a row has them; no model, no database."""

    status: str = Status.QUEUED
    progress: int = 0
    error_count: int = 0
    provider_status: str = ""
    provider_inner_status: str = ""
    action: str = ""
    created_at: dt.datetime = NOW - dt.timedelta(minutes=1)
    submitted_at: dt.datetime | None = NOW - dt.timedelta(minutes=1)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    resumed_at: dt.datetime | None = None
    last_polled_at: dt.datetime | None = NOW - dt.timedelta(seconds=10)
    route: str = "generate"
    request: dict[str, object] = field(
        default_factory=lambda: {"model": "gen4_turbo", "options": {"seconds": 5}}
    )
    expects_callback: bool = False


def snapshot(status: Status | None, **fields: object) -> FeedSnapshot:
    return FeedSnapshot(task_id="t-1", status=status, **fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def intervals(settings):
    settings.RUNWAY_FEED = {
        "API_KEY": "k",
        "POLL_INTERVAL": 5,
        "MAX_POLL_INTERVAL": 60,
        "NOT_FOUND_GRACE": 120,
        "TASK_TIMEOUT": 3600,
    }


def test_next_poll_delay_snaps_back_to_poll_interval_on_a_status_change():
    delay = next_poll_delay(Task(status=Status.QUEUED), snapshot(Status.RUNNING), now=NOW)

    assert 5 <= delay <= 5 * 1.1


def test_next_poll_delay_grows_while_nothing_changes_up_to_max_poll_interval():
    grown = next_poll_delay(Task(), snapshot(Status.QUEUED), now=NOW)
    quiet_for_long = replace(Task(), last_polled_at=NOW - dt.timedelta(minutes=10))
    capped = next_poll_delay(quiet_for_long, snapshot(Status.QUEUED), now=NOW)

    assert 10 * 1.5 * 0.9 <= grown <= 10 * 1.5 * 1.1
    assert 60 * 0.9 <= capped <= 60 * 1.1


def test_next_poll_delay_aims_at_the_expected_finish_of_a_rising_progress():
    running = Task(status=Status.RUNNING, progress=20, started_at=NOW - dt.timedelta(seconds=30))

    # 20 % -> 40 % in 10 s: 60 % to go at 2 %/s is 30 s.
    delay = next_poll_delay(running, snapshot(Status.RUNNING, progress=40), now=NOW)

    assert 30 * 0.9 <= delay <= 30 * 1.1


def test_plan_snapshot_terminal_success_sets_outputs_and_stops_polling():
    answer = snapshot(Status.SUCCEEDED, outputs=(Output("video", VIDEO),))

    plan = plan_snapshot(Task(status=Status.RUNNING, progress=40), answer, now=NOW)

    assert plan.new_status == Status.SUCCEEDED
    assert plan.fields["result_url"] == VIDEO
    assert plan.fields["progress"] == 100
    assert plan.fields["next_poll_at"] is None
    assert plan.fields["finished_at"] == NOW


def test_plan_snapshot_success_without_output_is_believed_only_after_the_grace():
    early = plan_snapshot(Task(status=Status.RUNNING), snapshot(Status.SUCCEEDED), now=NOW)
    seen = NOW - dt.timedelta(seconds=SUCCESS_WITHOUT_OUTPUT_GRACE + 1)
    late = plan_snapshot(
        Task(status=Status.RUNNING, finished_at=seen), snapshot(Status.SUCCEEDED), now=NOW
    )

    assert early.new_status is None
    assert early.fields["next_poll_at"] == NOW + dt.timedelta(seconds=5)
    assert late.new_status == Status.SUCCEEDED
    assert late.message == "The provider reported success without an output URL."


def test_plan_snapshot_never_moves_a_status_backward():
    plan = plan_snapshot(Task(status=Status.RUNNING), snapshot(Status.QUEUED), now=NOW)

    assert plan.new_status is None


def test_plan_snapshot_past_task_timeout_gives_up():
    old = Task(submitted_at=NOW - dt.timedelta(hours=2), created_at=NOW - dt.timedelta(hours=2))

    plan = plan_snapshot(old, snapshot(Status.QUEUED), now=NOW)

    assert plan.new_status == Status.FAILED
    assert plan.fields["failure_code"] == FailureCode.TIMEOUT


def test_plan_error_task_not_visible_within_grace_rechecks_at_poll_interval():
    plan = plan_error(Task(), TaskNotVisibleError("task_not_exist"), now=NOW)

    assert plan.new_status is None
    assert plan.error is False
    assert plan.fields["next_poll_at"] == NOW + dt.timedelta(seconds=5)


def test_plan_error_task_not_visible_beyond_grace_gives_up_not_found():
    old = Task(submitted_at=NOW - dt.timedelta(minutes=3))

    plan = plan_error(old, TaskNotVisibleError("task_not_exist"), now=NOW)

    assert plan.new_status == Status.FAILED
    assert plan.fields["failure_code"] == FailureCode.NOT_FOUND
    assert plan.message == (
        "Gave up: CometAPI still answers task_not_exist 120 s after submission "
        "(RUNWAY_FEED['NOT_FOUND_GRACE'])."
    )


def test_plan_error_rate_limited_waits_at_least_retry_after():
    plan = plan_error(Task(), RateLimitedError("slow down", retry_after=300), now=NOW)

    assert plan.error is True
    assert plan.fields["next_poll_at"] >= NOW + dt.timedelta(seconds=300)


def test_plan_error_keeps_the_status_and_records_the_error():
    plan = plan_error(Task(), TransientAPIError("HTTP 502"), now=NOW)

    assert plan.new_status is None
    assert plan.fields["last_error"] == "TransientAPIError: HTTP 502"


def test_give_up_timeout_names_the_setting():
    plan = give_up(Task(), FailureCode.TIMEOUT, now=NOW)

    assert plan.new_status == Status.FAILED
    assert plan.fields["fail_reason"] == (
        "Gave up: still unfinished 3600 s after submission (RUNWAY_FEED['TASK_TIMEOUT'])."
    )


def test_error_backoff_retries_at_poll_interval_before_doubling():
    assert 5 <= error_backoff(1) <= 5 * 1.2
    assert 5 <= error_backoff(ERROR_RETRIES_AT_INTERVAL) <= 5 * 1.2
    assert 10 <= error_backoff(ERROR_RETRIES_AT_INTERVAL + 1) <= 10 * 1.2


def test_error_backoff_is_capped_at_a_few_max_poll_intervals():
    ceiling = ERROR_BACKOFF_MAX_INTERVALS * 60

    assert ceiling <= error_backoff(30) <= ceiling * 1.2

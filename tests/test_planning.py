"""What an answer means and when to ask next: the pure decisions, without a database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import pytest

from django_runway_feed.exceptions import RateLimitedError, TaskNotVisibleError, TransientAPIError
from django_runway_feed.feed import FeedSnapshot, Output
from django_runway_feed.outlook import (
    CALLBACK_EVIDENCE,
    RUN_TIME_MIN_SAMPLES,
    CallbackState,
    CallbackVerdict,
    FixedOutlook,
    RunTimes,
    callback_verdict,
    learn_run_times,
    profile,
)
from django_runway_feed.planning import (
    ERROR_BACKOFF_MAX_INTERVALS,
    ERROR_RETRIES_AT_INTERVAL,
    RUNNING_SPACING,
    SUCCESS_WITHOUT_OUTPUT_GRACE,
    error_backoff,
    first_poll_delay,
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


# -- callbacks: are they arriving? -----------------------------------------------------------

ARRIVING = CallbackVerdict(CallbackState.ARRIVING, announced=5)
# Enough draws that a jittered delay outside its bounds would show.
DRAWS = 200


def test_callback_verdict_waits_while_no_finish_says_anything():
    nothing = callback_verdict([], enabled=True)
    one = callback_verdict([True], enabled=True)

    assert nothing.state == CallbackState.WAITING
    assert one.state == CallbackState.WAITING
    assert not one.live


def test_callback_verdict_arriving_once_two_finishes_were_announced():
    last = NOW - dt.timedelta(minutes=1)

    verdict = callback_verdict([True, True], enabled=True, last_callback_at=last)

    assert verdict == CallbackVerdict(
        CallbackState.ARRIVING, announced=2, missed=0, last_callback_at=last
    )
    assert verdict.live


def test_callback_verdict_a_miss_before_any_announcement_is_missing():
    assert callback_verdict([False], enabled=True).state == CallbackState.MISSING


def test_callback_verdict_missing_when_half_the_finishes_came_without_one():
    # Alternating, so no streak of misses at the newest end decides it.
    half = callback_verdict([True, False] * 10, enabled=True)
    most = callback_verdict([True, False] * 9 + [True, True], enabled=True)

    assert (half.state, half.announced, half.missed) == (CallbackState.MISSING, 10, 10)
    assert (most.state, most.announced, most.missed) == (CallbackState.ARRIVING, 11, 9)


def test_callback_verdict_missing_after_a_streak_of_four_misses_at_the_newest_end():
    streak = callback_verdict([False] * 4 + [True] * 16, enabled=True)
    three = callback_verdict([False] * 3 + [True] * 17, enabled=True)
    older = callback_verdict([True] + [False] * 4 + [True] * 15, enabled=True)

    assert streak.state == CallbackState.MISSING
    assert three.state == CallbackState.ARRIVING
    assert older.state == CallbackState.ARRIVING


def test_callback_verdict_reads_only_the_latest_twenty_finishes():
    verdict = callback_verdict([True] * CALLBACK_EVIDENCE + [False] * 30, enabled=True)

    assert CALLBACK_EVIDENCE == 20
    assert (verdict.state, verdict.announced, verdict.missed) == (CallbackState.ARRIVING, 20, 0)


def test_callback_verdict_disabled_is_off_whatever_the_evidence():
    verdict = callback_verdict([True] * 20, enabled=False, last_callback_at=NOW)

    assert verdict == CallbackVerdict()
    assert verdict.state == CallbackState.OFF
    assert not verdict.live


# -- run times: what recent successes of a profile took --------------------------------------


def test_learn_run_times_needs_twenty_samples():
    assert RUN_TIME_MIN_SAMPLES == 20
    assert learn_run_times([60.0] * 19) is None
    assert learn_run_times([60.0] * 20) == RunTimes(samples=20, low=60.0, median=60.0, high=60.0)


def test_learn_run_times_low_and_high_are_the_2nd_and_98th_percentiles():
    learned = learn_run_times([float(value) for value in range(1, 101)])

    assert learned is not None
    assert learned.samples == 100
    assert learned.low == pytest.approx(2.98)
    assert learned.median == pytest.approx(50.5)
    assert learned.high == pytest.approx(98.02)


def test_learn_run_times_ignores_durations_that_are_not_positive():
    nonsense = [0.0, -5.0] * 10

    assert learn_run_times(nonsense + [60.0] * 19) is None
    learned = learn_run_times(nonsense + [60.0] * 20)
    assert learned is not None
    assert learned.samples == 20
    assert learned.low == 60.0


@pytest.mark.parametrize(
    ("route", "request_", "expected"),
    [
        ("generate", {"model": "gen4_turbo", "options": {"seconds": 10}}, "generate/gen4_turbo/10"),
        ("tracked", None, "tracked//"),
        ("tracked", {}, "tracked//"),
        ("generate", "not a mapping", "generate//"),
        ("generate", {"model": "gen4"}, "generate/gen4/"),
        ("generate", {"model": "gen4", "options": [10]}, "generate/gen4/"),
        ("generate", {"model": "gen4", "options": None}, "generate/gen4/"),
    ],
)
def test_profile_takes_what_the_request_gives(route, request_, expected):
    assert profile(route, request_) == expected


# -- next_poll_delay with an outlook ---------------------------------------------------------


def test_next_poll_delay_is_a_safety_net_while_callbacks_arrive():
    task = Task(status=Status.QUEUED, expects_callback=True)
    outlook = FixedOutlook(verdict=ARRIVING)

    # A status change would snap back to POLL_INTERVAL without callbacks.
    delays = [
        next_poll_delay(task, snapshot(Status.RUNNING), now=NOW, outlook=outlook)
        for _ in range(DRAWS)
    ]

    assert min(delays) >= 0.9 * 60 * 0.9
    assert max(delays) <= 0.9 * 60 * 1.1


def test_next_poll_delay_safety_net_stays_under_a_long_max_poll_interval(settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "MAX_POLL_INTERVAL": 300}
    task = Task(expects_callback=True)

    delays = [
        next_poll_delay(task, snapshot(Status.QUEUED), now=NOW, outlook=FixedOutlook(ARRIVING))
        for _ in range(DRAWS)
    ]

    assert min(delays) >= 0.9 * 300 * 0.9
    assert max(delays) <= 300


def test_next_poll_delay_safety_net_never_exceeds_max_poll_interval_equal_to_poll_interval(
    settings,
):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 60, "MAX_POLL_INTERVAL": 60}
    task = Task(expects_callback=True)

    delays = [
        next_poll_delay(task, snapshot(Status.QUEUED), now=NOW, outlook=FixedOutlook(ARRIVING))
        for _ in range(DRAWS)
    ]

    assert min(delays) >= 60
    assert max(delays) <= 60


def test_next_poll_delay_no_safety_net_for_a_task_that_expects_no_callback():
    delay = next_poll_delay(
        Task(status=Status.QUEUED, expects_callback=False),
        snapshot(Status.RUNNING),
        now=NOW,
        outlook=FixedOutlook(verdict=ARRIVING),
    )

    assert 5 <= delay <= 5 * 1.1


@pytest.mark.parametrize(
    "verdict",
    [
        CallbackVerdict(),
        CallbackVerdict(CallbackState.WAITING),
        CallbackVerdict(CallbackState.MISSING, announced=5, missed=5),
    ],
    ids=["off", "waiting", "missing"],
)
def test_next_poll_delay_no_safety_net_unless_callbacks_arrive(verdict):
    delay = next_poll_delay(
        Task(status=Status.QUEUED, expects_callback=True),
        snapshot(Status.RUNNING),
        now=NOW,
        outlook=FixedOutlook(verdict=verdict),
    )

    assert 5 <= delay <= 5 * 1.1


LEARNED = RunTimes(samples=30, low=50.0, median=60.0, high=70.0)
KNOWN = FixedOutlook(learned={"generate/gen4_turbo/5": LEARNED})


def running(started_ago: float, *, polled_ago: float = 2.0, progress: int = 0) -> Task:
    started = NOW - dt.timedelta(seconds=started_ago)
    return Task(
        status=Status.RUNNING,
        progress=progress,
        started_at=started,
        last_polled_at=NOW - dt.timedelta(seconds=polled_ago),
    )


def started_snapshot(started_ago: float, **fields: object) -> FeedSnapshot:
    started = NOW - dt.timedelta(seconds=started_ago)
    return snapshot(Status.RUNNING, started_at=started, **fields)


def test_next_poll_delay_queued_with_history_waits_about_the_earliest_finish():
    delays = [
        next_poll_delay(Task(), snapshot(Status.QUEUED), now=NOW, outlook=KNOWN)
        for _ in range(DRAWS)
    ]

    # low + POLL_INTERVAL / 2 (without history: 10 s since the last poll x 1.5).
    assert min(delays) >= 52.5 * 0.9
    assert max(delays) <= 52.5 * 1.1


@pytest.mark.parametrize(
    ("low", "bounds"),
    [(2.0, (5, 5 * 1.1)), (500.0, (60 * 0.9, 60 * 1.1))],
    ids=["below-poll-interval", "above-max-poll-interval"],
)
def test_next_poll_delay_queued_with_history_stays_within_the_intervals(low, bounds):
    learned = RunTimes(samples=30, low=low, median=low * 2, high=low * 3)
    outlook = FixedOutlook(learned={"generate/gen4_turbo/5": learned})

    delays = [
        next_poll_delay(Task(), snapshot(Status.QUEUED), now=NOW, outlook=outlook)
        for _ in range(DRAWS)
    ]

    assert bounds[0] <= min(delays)
    assert max(delays) <= bounds[1]


def test_next_poll_delay_running_before_the_earliest_finish_lands_on_it_exactly():
    assert next_poll_delay(running(20), started_snapshot(20), now=NOW, outlook=KNOWN) == 30.0


def test_next_poll_delay_first_seen_running_lands_on_the_earliest_finish():
    just_started = snapshot(Status.RUNNING, started_at=NOW)

    assert next_poll_delay(Task(), just_started, now=NOW, outlook=KNOWN) == 50.0


def test_next_poll_delay_running_aims_no_further_than_max_poll_interval():
    slow = FixedOutlook(learned={"generate/gen4_turbo/5": RunTimes(30, 500.0, 600.0, 900.0)})

    assert next_poll_delay(running(10), started_snapshot(10), now=NOW, outlook=slow) == 60.0


def test_next_poll_delay_running_just_before_the_earliest_finish_waits_the_running_spacing():
    # 2 s to the earliest finish is below POLL_INTERVAL: the next look is a spacing away.
    delay = next_poll_delay(running(48), started_snapshot(48), now=NOW, outlook=KNOWN)

    assert RUNNING_SPACING * 5 * 0.9 <= delay <= RUNNING_SPACING * 5 * 1.1


def test_next_poll_delay_running_between_low_and_high_polls_at_the_running_spacing():
    # Polled 2 s ago: without history, 2 s x 1.5 would be POLL_INTERVAL.
    delays = [
        next_poll_delay(running(60), started_snapshot(60), now=NOW, outlook=KNOWN)
        for _ in range(DRAWS)
    ]

    assert min(delays) >= RUNNING_SPACING * 5 * 0.9
    assert max(delays) <= RUNNING_SPACING * 5 * 1.1


def test_next_poll_delay_running_past_the_latest_finish_forgets_the_history():
    delay = next_poll_delay(running(80), started_snapshot(80), now=NOW, outlook=KNOWN)

    assert 5 <= delay <= 5 * 1.1


def test_next_poll_delay_running_without_a_provider_start_time_forgets_the_history():
    delay = next_poll_delay(running(20), snapshot(Status.RUNNING), now=NOW, outlook=KNOWN)

    assert 5 <= delay <= 5 * 1.1


def test_next_poll_delay_history_of_another_profile_is_not_used():
    other = replace(running(20), request={"model": "gen4_turbo", "options": {"seconds": 10}})

    delay = next_poll_delay(other, started_snapshot(20), now=NOW, outlook=KNOWN)

    assert 5 <= delay <= 5 * 1.1


def test_next_poll_delay_rising_progress_aims_by_its_rate_despite_history():
    task = running(30, polled_ago=10, progress=20)

    # 20 % -> 40 % in 10 s: 30 s to go; the history alone would say exactly 20 s.
    delay = next_poll_delay(task, started_snapshot(30, progress=40), now=NOW, outlook=KNOWN)

    assert 30 * 0.9 <= delay <= 30 * 1.1


def test_plan_snapshot_places_the_next_poll_by_the_outlook():
    plan = plan_snapshot(running(20), started_snapshot(20), now=NOW, outlook=KNOWN)

    assert plan.fields["next_poll_at"] == NOW + dt.timedelta(seconds=30)


def test_first_poll_delay_is_poll_interval_without_callbacks():
    assert first_poll_delay(expects_callback=False, callbacks=ARRIVING) == 5
    assert first_poll_delay(expects_callback=True, callbacks=CallbackVerdict()) == 5
    waiting = CallbackVerdict(CallbackState.WAITING)
    assert first_poll_delay(expects_callback=True, callbacks=waiting) == 5


def test_first_poll_delay_is_the_safety_net_while_callbacks_arrive():
    delays = [first_poll_delay(expects_callback=True, callbacks=ARRIVING) for _ in range(DRAWS)]

    assert min(delays) >= 0.9 * 60 * 0.9
    assert max(delays) <= 0.9 * 60 * 1.1

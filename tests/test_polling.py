from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_runway_feed import outbox, signals
from django_runway_feed.budget import RequestBudget
from django_runway_feed.history import CALLBACK_GRACE_SECONDS
from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.outlook import (
    learn_run_times,
)
from django_runway_feed.pause import settings_fingerprint
from django_runway_feed.planning import RUNNING_SPACING
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeClock, FakeCometAPI, Fault, TaskScript

pytestmark = pytest.mark.django_db(transaction=True)


def run_until_finished(
    poller: Poller, clock: FakeClock, *, step: float = 1.0, limit: float = 600.0
) -> None:
    waited = 0.0
    while RunwayTask.objects.unfinished().exists() and waited < limit:
        poller.run_round()
        clock.advance(step)
        waited += step


def transitions(task: RunwayTask) -> list[tuple[str, str]]:
    return list(
        TaskEvent.objects.filter(task=task, kind=EventKind.TRANSITION)
        .order_by("pk")
        .values_list("from_status", "to_status")
    )


@pytest.fixture
def poller(api: FakeCometAPI, now_of: Callable[[], dt.datetime]) -> Any:
    with Poller(clock=now_of) as poller:
        yield poller


def track(api: FakeCometAPI, now_of: Callable[[], dt.datetime], script: TaskScript) -> RunwayTask:
    task_id = api.add_task(script)
    return RunwayTask.objects.track(task_id, now=now_of())


def test_poll_success_reaches_succeeded_with_outputs(api, poller, clock, now_of, signal_log):
    task = track(api, now_of, TaskScript(queued_for=2, run_for=10))

    run_until_finished(poller, clock)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert task.progress == 100
    assert task.result_url == f"{api.url}/outputs/{task.task_id}.mp4"
    assert task.outputs[0] == {"kind": "video", "url": task.result_url}
    assert transitions(task) == [("queued", "running"), ("running", "succeeded")]


def test_poll_failure_keeps_provider_failure_code(api, poller, clock, now_of):
    task = track(
        api, now_of, TaskScript(run_for=3, outcome="failed", failure_code="SAFETY.INPUT.IMAGE")
    )

    run_until_finished(poller, clock)

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.failure_code == "SAFETY.INPUT.IMAGE"
    assert task.fail_reason == "The prompt was flagged by content moderation."
    assert transitions(task)[-1][1] == "failed"


def test_poll_signals_each_transition_once_in_order_after_commit(
    api, poller, clock, now_of, signal_log
):
    task = track(api, now_of, TaskScript(run_for=5))

    run_until_finished(poller, clock)

    changed = signal_log.of("task_status_changed")
    assert [(c["previous"], c["status"]) for c in changed] == [
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    assert [c["event"].pk for c in changed] == list(
        TaskEvent.objects.filter(task=task, kind=EventKind.TRANSITION)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert len(signal_log.of("task_succeeded")) == 1
    assert signal_log.of("task_failed") == []
    assert not any(atomic for _name, _kwargs, atomic in signal_log.calls)
    assert TaskEvent.objects.filter(dispatched_at__isnull=True).count() == 0


def test_poll_never_faster_than_poll_interval(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5}
    tasks = [track(api, now_of, TaskScript(queued_for=5, run_for=60)) for _ in range(5)]

    run_until_finished(poller, clock, step=0.5)

    for task in tasks:
        times = [call.at for call in api.feed_calls(task.task_id)]
        assert len(times) >= 3
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 5


def test_poll_backs_off_while_nothing_changes(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5, "MAX_POLL_INTERVAL": 60}
    task = track(api, now_of, TaskScript(queued_for=400, run_for=10))

    for _ in range(300):
        poller.run_round()
        clock.advance(1)

    times = [call.at for call in api.feed_calls(task.task_id)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0] * 3
    assert max(gaps) <= 60 * 1.1 + 1


def test_poll_task_not_exist_within_grace_is_rechecked(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "NOT_FOUND_GRACE": 120}
    task = track(api, now_of, TaskScript(invisible_for=20, run_for=5))

    run_until_finished(poller, clock)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert task.error_count == 0
    not_found_calls = [c for c in api.feed_calls(task.task_id) if c.status_code == 400]
    assert 2 <= len(not_found_calls) <= 5


def test_poll_task_not_exist_beyond_grace_fails_not_found(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "NOT_FOUND_GRACE": 30}
    task = track(api, now_of, TaskScript(invisible_for=10_000))

    run_until_finished(poller, clock)

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.failure_code == "not_found"
    assert "NOT_FOUND_GRACE" in task.fail_reason
    assert transitions(task) == [("queued", "failed")]


def test_poll_gives_up_at_task_timeout_once(api, poller, clock, now_of, settings, signal_log):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "TASK_TIMEOUT": 300}
    task = track(api, now_of, TaskScript(outcome="never"))

    run_until_finished(poller, clock, step=5)
    poller.run_round()

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.failure_code == "timeout"
    assert len(signal_log.of("task_failed")) == 1


def test_poll_terminal_task_is_never_polled_again(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(run_for=3))
    run_until_finished(poller, clock)
    calls = api.call_count(task.task_id)

    for _ in range(30):
        clock.advance(10)
        poller.run_round()

    assert api.call_count(task.task_id) == calls


def test_poll_server_error_counts_error_and_keeps_status(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=100))
    api.inject(Fault.server_error(503), times=1, task_id=task.task_id)

    poller.run_round()

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.error_count == 1
    assert "HTTP 503" in task.last_error
    assert task.next_poll_at >= now_of() + dt.timedelta(seconds=5)


def test_poll_garbage_body_is_kept_and_task_unchanged(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=100))
    api.inject(Fault(kind="body", body="<html>oops</html>"), times=1, task_id=task.task_id)

    summary = poller.run_round()

    task.refresh_from_db()
    assert summary.errors == 1
    assert task.status == Status.QUEUED
    assert "<html>oops</html>" in task.last_error


def test_poll_rate_limit_honours_retry_after(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=1000))
    api.inject(Fault.rate_limited(retry_after="90"), times=1, task_id=task.task_id)

    poller.run_round()

    task.refresh_from_db()
    assert task.next_poll_at >= now_of() + dt.timedelta(seconds=90)


def test_poll_unauthorized_pauses_without_failing_tasks(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=1000))
    api.inject(Fault.unauthorized(), times=1)

    first = poller.run_round()
    clock.advance(60)
    second = poller.run_round()

    task.refresh_from_db()
    assert first.paused
    assert second.paused
    assert task.status == Status.QUEUED
    assert task.error_count == 0
    assert api.call_count(task.task_id) == 1
    assert PollerState.objects.get(pk=1).paused_until > now_of()


def test_poll_stale_answer_does_not_overwrite_newer_status(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    owner = "someone:1"
    claimed = poller.claim(owner, now=now_of(), limit=10)
    results = poller.fetch(claimed)
    # An operator (or another worker after our lease expired) finished it meanwhile.
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.CANCELLED)

    summary = poller.apply(owner, claimed, results, now=now_of())

    task.refresh_from_db()
    assert summary.transitions == 0
    assert task.status == Status.CANCELLED
    assert transitions(task) == []


def test_claim_skips_leased_tasks(api, poller, clock, now_of):
    track(api, now_of, TaskScript())
    first = poller.claim("a:1", now=now_of(), limit=10)
    second = poller.claim("b:1", now=now_of(), limit=10)

    assert len(first) == 1
    assert second == []


def test_claim_takes_expired_lease(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "LEASE_SECONDS": 120}
    track(api, now_of, TaskScript())
    poller.claim("a:1", now=now_of(), limit=10)

    later = now_of() + dt.timedelta(seconds=121)
    assert len(poller.claim("b:1", now=later, limit=10)) == 1


def test_claim_leases_and_reads_its_batch_in_one_query(api, poller, clock, now_of):
    for _ in range(3):
        track(api, now_of, TaskScript())
    due = now_of() + dt.timedelta(seconds=60)

    with CaptureQueriesContext(connection) as queries:
        claimed = poller.claim("a:1", now=due, limit=10)

    assert len(claimed) == 3
    assert {task.lease_owner for task in claimed} == {"a:1"}
    [claim] = queries.captured_queries
    assert "RETURNING" in claim["sql"]
    # Found by the due index and written by key: nothing filters on lease_owner (no index).
    assert claim["sql"].count('"lease_owner" =') == 1  # the assignment, in no WHERE


def test_claim_returns_the_batch_in_due_order(api, poller, clock, now_of):
    tasks = [track(api, now_of, TaskScript()) for _ in range(3)]
    base = now_of()
    for offset, task in zip((30, 10, 20), tasks, strict=True):
        RunwayTask.objects.filter(pk=task.pk).update(
            next_poll_at=base + dt.timedelta(seconds=offset)
        )

    claimed = poller.claim("a:1", now=base + dt.timedelta(seconds=60), limit=10)

    assert [task.pk for task in claimed] == [tasks[1].pk, tasks[2].pk, tasks[0].pk]


def test_refresh_from_feed_polls_now(api, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    clock.advance(50)

    task.refresh_from_feed(now=now_of())

    assert task.status == Status.RUNNING
    assert 45 <= task.progress <= 55
    assert api.call_count(task.task_id) == 1


def test_failing_receiver_is_logged_and_others_still_run(
    api, poller, clock, now_of, signal_log, caplog
):
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.task_status_changed.connect(broken, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="django_runway_feed"):
            task = track(api, now_of, TaskScript(run_for=2))
            run_until_finished(poller, clock)
    finally:
        signals.task_status_changed.disconnect(broken)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert len(signal_log.of("task_succeeded")) == 1
    errors = [r for r in caplog.records if "raised" in r.getMessage()]
    assert errors
    assert errors[0].exc_info[1].args == ("receiver bug",)


def test_outbox_sweep_resends_undispatched_event_once(api, now_of, signal_log):
    task = track(api, now_of, TaskScript())
    now = now_of()
    event = TaskEvent.objects.create(
        task=task,
        kind=EventKind.TRANSITION,
        from_status="queued",
        to_status="running",
        created_at=now - dt.timedelta(minutes=10),
        redeliver_after=now - dt.timedelta(minutes=8),
    )

    assert outbox.sweep(now=now) == 1
    assert outbox.sweep(now=now + dt.timedelta(hours=1)) == 0
    assert [c["event"].pk for c in signal_log.of("task_status_changed")] == [event.pk]


def test_outbox_sweep_leaves_young_events(api, now_of, signal_log):
    task = track(api, now_of, TaskScript())
    now = now_of()
    TaskEvent.objects.create(
        task=task,
        kind=EventKind.TRANSITION,
        from_status="queued",
        to_status="running",
        created_at=now,
        redeliver_after=now + dt.timedelta(seconds=120),
    )

    assert outbox.sweep(now=now) == 0
    assert signal_log.of("task_status_changed") == []


def test_progress_signal_reports_rising_progress(api, poller, clock, now_of, signal_log):
    track(api, now_of, TaskScript(queued_for=0, run_for=100))

    for _ in range(60):
        poller.run_round()
        clock.advance(2)

    progress = [c["progress"] for c in signal_log.of("task_progressed")]
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert progress[-1] > progress[0]


def test_requests_not_sent_after_window_leave_task_untouched(api, poller, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=100))
    poller.stop_sending_at = 0.0  # the run's window is long over

    summary = poller.run_round()

    task.refresh_from_db()
    assert summary.claimed == 1
    assert summary.errors == 0
    assert api.call_count(task.task_id) == 0
    assert (task.poll_count, task.error_count, task.lease_owner) == (0, 0, "")
    assert task.next_poll_at == now_of()


def test_progress_signal_sent_on_transition_too(api, poller, clock, now_of, signal_log):
    track(api, now_of, TaskScript(queued_for=0, run_for=100))
    clock.advance(40)

    poller.run_round()

    assert [c["progress"] for c in signal_log.of("task_progressed")] == [40]
    assert [c["status"] for c in signal_log.of("task_status_changed")] == ["running"]


def test_poll_sets_updated_at_for_quiet_and_transition_writes(api, poller, clock, now_of):
    quiet = track(api, now_of, TaskScript(queued_for=100))
    moving = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    clock.advance(50)

    poller.run_round()

    quiet.refresh_from_db()
    moving.refresh_from_db()
    assert quiet.updated_at == now_of()
    assert moving.updated_at == now_of()
    assert moving.status == Status.RUNNING


class RecordingSleep:
    """A real sleep that remembers what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(seconds)


@pytest.mark.parametrize("why", ["budget held", "paused", "nothing due"])
def test_run_never_sleeps_past_its_window(api, now_of, why):
    task = track(api, now_of, TaskScript(queued_for=100))
    budget = RequestBudget(10)
    later = now_of() + dt.timedelta(hours=1)
    if why == "budget held":
        budget.hold(600)
    elif why == "paused":
        PollerState.objects.update_or_create(
            pk=1, defaults={"paused_until": later, "pause_fingerprint": settings_fingerprint()}
        )
    else:
        RunwayTask.objects.filter(pk=task.pk).update(next_poll_at=later)
    sleep = RecordingSleep()

    with Poller(clock=now_of, budget=budget) as poller:
        # Each wait would be far longer than the window if it were not cut to what is left.
        summary = poller.run(window=0.3, sleep=sleep, max_idle_sleep=60)

    assert sleep.calls
    # Each sleep is cut to what is left of the window, so together they fit in it.
    assert sum(sleep.calls) <= 0.3 + 1e-6
    assert summary.polled == 0
    assert api.call_count() == 0


def test_one_off_run_does_not_sit_out_a_storm_hold(api, now_of):
    track(api, now_of, TaskScript(queued_for=100))
    budget = RequestBudget(10)
    budget.hold(600)
    sleep = RecordingSleep()

    with Poller(clock=now_of, budget=budget) as poller:
        summary = poller.run(window=0, sleep=sleep, max_idle_sleep=60)

    assert sleep.calls == []
    assert summary.throttled == 1
    assert api.call_count() == 0


@pytest.mark.parametrize(
    ("lease", "timeout", "sends_for"),
    [(120, (5, 30), 85), (120, 10, 100), (30, (5, 30), 15)],
    ids=["pair", "single number", "lease too short (E004): half of it"],
)
def test_requests_are_sent_only_while_they_can_finish_within_the_lease(
    api, poller, settings, monkeypatch, lease, timeout, sends_for
):
    # A request takes at most the sum of REQUEST_TIMEOUT (the client cuts it off there), so one
    # sent later than this could still be running when another worker may claim its row.
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "LEASE_SECONDS": lease,
        "REQUEST_TIMEOUT": timeout,
    }
    monkeypatch.setattr(time, "monotonic", lambda: 1_000.0)

    assert poller._send_deadline(1_000.0 + lease) == 1_000.0 + sends_for


# -- the cadence's memory: callbacks and learned run times ----------------------------------------

TURBO_5 = {"prompt": "a cat", "model": "gen4_turbo", "options": {"seconds": 5}}


def callback_expected(task: RunwayTask) -> RunwayTask:
    """A tracked task as if created here with a callback URL."""
    RunwayTask.objects.filter(pk=task.pk).update(expects_callback=True)
    task.refresh_from_db()
    return task


def record_finishes(now: dt.datetime, *, count: int, ago: float, called_back: bool) -> None:
    """Successes of tasks created with a callback URL, the newest ``ago`` seconds before now."""
    for index in range(count):
        at = now - dt.timedelta(seconds=ago + index)
        RunwayTask.objects.create(
            route="generate",
            status=Status.SUCCEEDED,
            expects_callback=True,
            finished_at=at,
            callback_at=at if called_back else None,
        )


def poll_times(api: FakeCometAPI, task: RunwayTask, *, after: float = 0.0) -> list[float]:
    return [call.at for call in api.feed_calls(task.task_id) if call.at >= after]


def run_for(poller: Poller, clock: FakeClock, seconds: int) -> None:
    for _ in range(seconds):
        poller.run_round()
        clock.advance(1)


def test_poll_is_a_safety_net_while_callbacks_arrive_and_the_usual_cadence_once_they_stop(
    api, poller, clock, now_of, settings, caplog
):
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "CALLBACK_BASE_URL": "https://site.example",
        "POLL_INTERVAL": 5,
        "MAX_POLL_INTERVAL": 60,
    }
    record_finishes(now_of(), count=5, ago=120, called_back=True)
    script = TaskScript(queued_for=0, run_for=100_000, progress_style="coarse")
    tasks = []
    for _ in range(6):  # ten seconds apart, so they are not all polled in the same rounds
        tasks.append(callback_expected(track(api, now_of, script)))
        run_for(poller, clock, 10)
    run_for(poller, clock, 240)

    for task in tasks:
        gaps = [b - a for a, b in itertools.pairwise(poll_times(api, task))]
        assert len(gaps) >= 3
        # 0.9 x MAX_POLL_INTERVAL, jittered; a round every second.
        assert min(gaps) >= 0.9 * 60 * 0.9 - 1
        assert max(gaps) <= 60 + 1
    assert api.call_count() <= 6 * 7

    # Callbacks stop: the newest finishes came without one.
    record_finishes(now_of(), count=4, ago=CALLBACK_GRACE_SECONDS + 1, called_back=False)
    stopped_at = None
    with caplog.at_level(logging.WARNING, logger="django_runway_feed.history"):
        for _ in range(70):
            poller.run_round()
            if stopped_at is None and any(
                record.getMessage().startswith("Callbacks stopped arriving")
                for record in caplog.records
            ):
                stopped_at = now_of()
                latest = now_of() + dt.timedelta(seconds=2 * 5 * 1.1)
                for task in tasks:
                    task.refresh_from_db()
                    assert task.next_poll_at <= latest
            clock.advance(1)

    assert stopped_at is not None
    stopped = stopped_at.timestamp()
    for task in tasks:
        times = poll_times(api, task, after=stopped)
        assert times[0] <= stopped + 2 * 5 * 1.1 + 1
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) >= 3
        assert max(gaps) <= RUNNING_SPACING * 5 * 1.1 + 1


def test_poll_with_learned_run_times_waits_for_the_earliest_finish(
    api, poller, clock, now_of, settings
):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5, "MAX_POLL_INTERVAL": 60}
    now = now_of()
    for index in range(30):  # 50 s to 70 s
        finished = now - dt.timedelta(minutes=10, seconds=index)
        RunwayTask.objects.create(
            route="generate",
            status=Status.SUCCEEDED,
            request=TURBO_5,
            started_at=finished - dt.timedelta(seconds=50 + index * 20 / 29),
            finished_at=finished,
        )
    learned = learn_run_times([50 + index * 20 / 29 for index in range(30)])
    assert learned is not None
    started = clock.now()  # queued for no time: it runs from its creation
    task = track(api, now_of, TaskScript(queued_for=0, run_for=90, progress_style="coarse"))
    RunwayTask.objects.filter(pk=task.pk).update(route="generate", request=TURBO_5)

    run_for(poller, clock, 120)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    times = poll_times(api, task)
    # Without the history, the second poll would be POLL_INTERVAL after the first.
    assert times[0] == started
    assert started + learned.low <= times[1] <= started + learned.low + 1
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert len(gaps) >= 3
    assert min(gaps) >= RUNNING_SPACING * 5 * 0.9 - 1
    assert max(gaps) <= RUNNING_SPACING * 5 * 1.1 + 1

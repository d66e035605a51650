"""The operator actions of ``django_runway_feed.actions``, against the fake CometAPI."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_runway_feed import actions
from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import FailureCode, Status
from django_runway_feed.testing import Fault, TaskScript
from tests.conftest import run_in_threads
from tests.testapp.models import Product

pytestmark = pytest.mark.django_db(transaction=True)


def track(api, now_of, script: TaskScript | None = None) -> RunwayTask:
    return RunwayTask.objects.track(api.add_task(script or TaskScript()), now=now_of())


def events(task: RunwayTask, kind: str) -> list[TaskEvent]:
    return list(TaskEvent.objects.filter(task=task, kind=kind).order_by("pk"))


def give_up(task: RunwayTask, code: str, now: dt.datetime) -> RunwayTask:
    RunwayTask.objects.filter(pk=task.pk).update(
        status=Status.FAILED,
        failure_code=code,
        fail_reason="Gave up.",
        finished_at=now,
        next_poll_at=None,
        error_count=3,
        last_error="ReadTimeout",
    )
    task.refresh_from_db()
    return task


def failed_generated(prompt: str, **kwargs) -> RunwayTask:
    task = RunwayTask.objects.generate(prompt, **kwargs)
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.FAILED)
    task.refresh_from_db()
    return task


# -- poll now ---------------------------------------------------------------------------------


def test_poll_now_applies_the_answer_and_writes_a_manual_poll_event(api, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    clock.advance(50)

    report = actions.poll_now([task], actor="alice", now=now_of())

    task.refresh_from_db()
    assert report.done == [task]
    assert report.message() == "Polled 1 task."
    assert task.status == Status.RUNNING
    assert api.call_count(task.task_id) == 1
    [note] = events(task, EventKind.MANUAL_POLL)
    assert note.message == f"Polled now by alice: queued 0% -> running {task.progress}%."
    assert [(e.from_status, e.to_status) for e in events(task, EventKind.TRANSITION)] == [
        ("queued", "running")
    ]


def test_poll_now_ignores_the_schedule_and_the_api_pause(api, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    RunwayTask.objects.filter(pk=task.pk).update(next_poll_at=now_of() + dt.timedelta(hours=1))
    PollerState.objects.update_or_create(
        pk=1, defaults={"paused_until": now_of() + dt.timedelta(hours=1), "pause_reason": "401"}
    )

    report = actions.poll_now([task], now=now_of())

    assert report.done == [task]
    assert api.call_count(task.task_id) == 1


def test_poll_now_skips_finished_and_unaccepted_tasks_without_a_request(api, now_of):
    done = RunwayTask.objects.create(task_id="done", route="tracked", status=Status.SUCCEEDED)
    submitting = RunwayTask.objects.create(route="generate", status=Status.SUBMITTING)

    report = actions.poll_now([done, submitting], now=now_of())

    assert report.done == []
    assert report.message() == (
        "Polled 0 tasks. Skipped 2 tasks: 1 already finished; "
        "1 not accepted by CometAPI yet (no task id to poll)."
    )
    assert api.call_count() == 0
    assert not TaskEvent.objects.filter(kind=EventKind.MANUAL_POLL).exists()


def test_poll_now_skips_a_task_a_worker_holds(api, now_of):
    task = track(api, now_of)
    RunwayTask.objects.filter(pk=task.pk).update(
        lease_owner="worker:1", lease_expires_at=now_of() + dt.timedelta(minutes=1)
    )

    report = actions.poll_now([task], now=now_of())

    assert report.skipped == {actions.BUSY: [task]}
    assert api.call_count(task.task_id) == 0


def test_poll_now_caps_how_many_tasks_one_action_polls(api, now_of):
    tasks = [track(api, now_of) for _ in range(actions.MAX_API_CALLS + 2)]

    report = actions.poll_now(tasks, now=now_of())

    assert len(report.done) == actions.MAX_API_CALLS
    assert report.skipped == {actions.TOO_MANY: tasks[-2:]}
    assert api.call_count() == actions.MAX_API_CALLS


def test_poll_now_without_an_api_key_reports_it_instead_of_raising(api, now_of, settings):
    task = track(api, now_of)
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": None}

    report = actions.poll_now([task], now=now_of())

    assert report.message() == (
        "Polled 0 tasks. Skipped 1 task: "
        "No CometAPI key configured: set RUNWAY_FEED['API_KEY'] in your settings."
    )
    assert api.call_count() == 0


def test_poll_now_at_once_from_several_threads_polls_once(api, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=100))
    reports = []

    errors = run_in_threads(4, lambda: reports.append(actions.poll_now([task], now=now_of())))

    assert errors == []
    assert sum(len(report.done) for report in reports) >= 1
    # Each poll that happened took the lease first: no two overlapped.
    assert api.max_concurrent_requests == 1
    assert api.call_count(task.task_id) == sum(len(report.done) for report in reports)
    assert len(events(task, EventKind.MANUAL_POLL)) == api.call_count(task.task_id)
    assert len(events(task, EventKind.TRANSITION)) == 1


# -- resume tracking --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [FailureCode.TIMEOUT, FailureCode.NOT_FOUND])
def test_resume_reopens_a_given_up_task_with_an_event_and_no_signal(api, now_of, code, signal_log):
    task = give_up(track(api, now_of), code, now_of())
    signal_log.calls.clear()

    report = actions.resume_tracking([task], actor="bob", now=now_of())

    task.refresh_from_db()
    assert report.message() == "Resumed 1 task."
    assert task.status == Status.QUEUED
    assert (task.failure_code, task.fail_reason, task.finished_at) == ("", "", None)
    assert (task.error_count, task.last_error) == (0, "")
    assert task.next_poll_at == now_of()
    [event] = events(task, EventKind.RESUMED)
    assert (event.from_status, event.to_status) == ("failed", "queued")
    assert event.message == f"Tracking resumed by bob; it had been given up ({code})."
    assert event.payload == {"failure_code": code, "fail_reason": "Gave up."}
    assert event.dispatched_at is not None
    assert signal_log.calls == []


def test_resumed_task_is_polled_to_its_late_result(api, clock, now_of, signal_log):
    task = give_up(track(api, now_of, TaskScript(queued_for=0, run_for=10)), "timeout", now_of())
    clock.advance(30)  # the provider finished after we gave up
    actions.resume_tracking([task], now=now_of())

    actions.poll_now([RunwayTask.objects.get(pk=task.pk)], now=now_of())

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert task.result_url.endswith(f"/outputs/{task.task_id}.mp4")
    assert len(signal_log.of("task_succeeded")) == 1


def test_resumed_task_gets_a_fresh_task_timeout_window(api, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "TASK_TIMEOUT": 600}
    task = track(api, now_of, TaskScript(queued_for=0, run_for=10_000))

    def poll() -> tuple[str, str]:
        with Poller(clock=now_of) as poller:
            poller.run_round()
        row = RunwayTask.objects.get(pk=task.pk)
        return row.status, row.failure_code

    clock.advance(1)
    assert poll() == (Status.RUNNING, "")
    clock.advance(600)
    assert poll() == (Status.FAILED, FailureCode.TIMEOUT)

    actions.resume_tracking([RunwayTask.objects.get(pk=task.pk)], now=now_of())
    clock.advance(5)
    assert poll() == (Status.RUNNING, "")  # back to running: a transition, no timeout check
    calls = api.call_count(task.task_id)
    clock.advance(120)
    assert poll() == (Status.RUNNING, "")  # 721 s after submission, 125 s after the resume
    assert api.call_count(task.task_id) == calls + 1
    clock.advance(600)
    assert poll() == (Status.FAILED, FailureCode.TIMEOUT)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Status.FAILED, "SAFETY.INPUT.TEXT"),
        (Status.FAILED, FailureCode.REJECTED),
        (Status.SUCCEEDED, ""),
        (Status.RUNNING, ""),
    ],
)
def test_resume_skips_tasks_that_were_not_given_up(status, code):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=status, failure_code=code)

    report = actions.resume_tracking([task])

    assert report.skipped == {actions.NOT_GIVEN_UP: [task]}
    task.refresh_from_db()
    assert (task.status, task.failure_code) == (status, code)
    assert not TaskEvent.objects.exists()


def test_resume_with_a_stale_read_changes_nothing(api, now_of):
    task = give_up(track(api, now_of), "timeout", now_of())
    actions.resume_tracking([RunwayTask.objects.get(pk=task.pk)], now=now_of())
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.RUNNING, progress=40)

    report = actions.resume_tracking([task], now=now_of())  # ``task`` still says failed

    assert report.skipped == {actions.CHANGED: [task]}
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING
    assert len(events(task, EventKind.RESUMED)) == 1


def test_resume_at_once_from_several_threads_resumes_once(api, now_of):
    task = give_up(track(api, now_of), "not_found", now_of())
    reports = []

    errors = run_in_threads(
        4, lambda: reports.append(actions.resume_tracking([task], now=now_of()))
    )

    assert errors == []
    assert sum(len(report.done) for report in reports) == 1
    assert len(events(task, EventKind.RESUMED)) == 1


# -- stop tracking ----------------------------------------------------------------------------


def test_stop_cancels_an_unfinished_task_locally_and_signals_it(api, now_of, signal_log):
    task = track(api, now_of)
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.RUNNING, progress=30)
    task.refresh_from_db()
    signal_log.calls.clear()

    report = actions.stop_tracking([task], actor="carol", now=now_of())

    task.refresh_from_db()
    assert report.message() == "Stopped 1 task."
    assert task.status == Status.CANCELLED
    assert task.failure_code == FailureCode.STOPPED
    assert task.fail_reason.startswith("Stopped by carol: no longer tracked.")
    assert task.finished_at == now_of()
    assert task.next_poll_at is None
    assert (task.lease_owner, task.lease_expires_at) == ("", None)
    [event] = events(task, EventKind.TRANSITION)[-1:]
    assert (event.from_status, event.to_status, event.progress) == ("running", "cancelled", 30)
    assert signal_log.names() == ["task_status_changed", "task_failed"]
    assert signal_log.of("task_failed")[0]["event"].pk == event.pk
    assert api.call_count() == 0  # no cancel request: CometAPI has none
    assert api.create_requests == []


def test_stop_never_touches_a_finished_task(signal_log):
    tasks = [
        RunwayTask.objects.create(task_id=f"t{i}", route="tracked", status=status)
        for i, status in enumerate([Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
    ]

    report = actions.stop_tracking(tasks)

    assert report.message() == "Stopped 0 tasks. Skipped 3 tasks: 3 already finished."
    assert sorted(RunwayTask.objects.values_list("status", flat=True)) == [
        "cancelled",
        "failed",
        "succeeded",
    ]
    assert not TaskEvent.objects.exists()
    assert signal_log.calls == []


def test_stop_leaves_a_submission_in_flight_but_stops_an_unknown_outcome(now_of):
    now = now_of()
    fresh = RunwayTask.objects.create(route="generate", status="submitting", created_at=now)
    unknown = RunwayTask.objects.create(
        route="generate", status="submitting", created_at=now, last_error="Outcome unknown"
    )
    old = RunwayTask.objects.create(
        route="generate", status="submitting", created_at=now - dt.timedelta(hours=1)
    )

    report = actions.stop_tracking([fresh, unknown, old], now=now)

    assert report.done == [unknown, old]
    assert report.skipped == {actions.IN_FLIGHT: [fresh]}
    assert RunwayTask.objects.get(pk=fresh.pk).status == Status.SUBMITTING
    assert RunwayTask.objects.get(pk=old.pk).status == Status.CANCELLED


def test_stop_discards_the_answer_of_a_poll_in_flight(api, clock, now_of):
    task = track(api, now_of, TaskScript(queued_for=0, run_for=10))
    clock.advance(30)
    with Poller(clock=now_of) as poller:
        started = poller._start_round(now=now_of(), task_ids=[task.pk], due_only=False)
        actions.stop_tracking([RunwayTask.objects.get(pk=task.pk)], now=now_of())
        poller._finish_round(started)

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.result_url == ""
    assert [(e.from_status, e.to_status) for e in events(task, EventKind.TRANSITION)] == [
        ("queued", "cancelled")
    ]


def test_stop_at_once_from_several_threads_stops_once(api, now_of, signal_log):
    task = track(api, now_of)
    signal_log.calls.clear()
    reports = []

    errors = run_in_threads(4, lambda: reports.append(actions.stop_tracking([task])))

    assert errors == []
    assert sum(len(report.done) for report in reports) == 1
    assert len(events(task, EventKind.TRANSITION)) == 1
    assert len(signal_log.of("task_failed")) == 1


# -- resubmit ---------------------------------------------------------------------------------


def test_resubmit_creates_a_linked_task_with_the_same_request(api, now_of):
    product = Product.objects.create(name="Surfboard")
    old = RunwayTask.objects.generate(
        "a cat surfing", ratio="1280:720", content_object=product, metadata={"sku": 7}
    )
    RunwayTask.objects.filter(pk=old.pk).update(status=Status.FAILED, failure_code="provider")
    old.refresh_from_db()

    report = actions.resubmit([old], actor="dan")

    [new] = report.done
    assert report.message() == "Resubmitted 1 task."
    assert new.pk != old.pk
    assert new.status == Status.QUEUED
    assert new.task_id
    assert new.task_id != old.task_id
    assert (new.route, new.request, new.prompt) == (old.route, old.request, old.prompt)
    assert new.resubmitted_from == old
    assert new.content_object == product
    assert new.metadata == {"sku": 7}
    assert [r.body["prompt"] for r in api.create_requests] == ["a cat surfing"] * 2
    [event] = events(old, EventKind.RESUBMITTED)
    assert event.message == f"Resubmitted by dan as task #{new.pk} (queued)."
    assert event.payload == {"task": new.pk}
    assert list(old.resubmissions.all()) == [new]


def test_resubmit_twice_creates_two_tasks(api):
    old = RunwayTask.objects.generate("a dog skiing")
    RunwayTask.objects.filter(pk=old.pk).update(status=Status.CANCELLED)
    old.refresh_from_db()

    first = actions.resubmit([old]).done
    second = actions.resubmit([old]).done

    assert len({task.pk for task in first + second}) == 2
    assert old.resubmissions.count() == 2
    assert len(events(old, EventKind.RESUBMITTED)) == 2


def test_resubmit_racing_another_click_reuses_its_new_task(api):
    old = failed_generated("a dog skiing")
    # What a concurrent click already created with the same key.
    other = actions.resubmit([old]).done[0]
    TaskEvent.objects.filter(kind=EventKind.RESUBMITTED).delete()
    creates = len(api.create_requests)

    report = actions.resubmit([old])

    assert report.done == [other]
    assert len(api.create_requests) == creates
    assert len(events(old, EventKind.RESUBMITTED)) == 1


def test_resubmit_started_before_a_racing_click_finished_reuses_its_new_task(api):
    old = failed_generated("a dog skiing")
    started = timezone.now()
    # A click made at the same moment, which got through first (on SQLite the later one waits
    # for its write lock, then sees its event).
    other = actions.resubmit([old]).done[0]
    creates = len(api.create_requests)

    report = actions.resubmit([old], now=started)

    assert report.done == [other]
    assert len(api.create_requests) == creates
    assert len(events(old, EventKind.RESUBMITTED)) == 1


def test_resubmit_at_once_from_several_threads_creates_one_task_and_one_event(api):
    old = failed_generated("a dog skiing")
    reports = []

    errors = run_in_threads(4, lambda: reports.append(actions.resubmit([old])))

    assert errors == []
    assert len({new.pk for report in reports for new in report.done}) == 1
    assert old.resubmissions.count() == 1
    assert len(events(old, EventKind.RESUBMITTED)) == 1
    assert len(api.create_requests) == 2  # the original and one resubmission


def test_resubmit_caps_how_many_tasks_one_action_sends(api):
    tasks = [failed_generated(f"prompt {i}") for i in range(actions.MAX_API_CALLS + 2)]
    creates = len(api.create_requests)

    report = actions.resubmit(tasks)

    assert len(report.done) == actions.MAX_API_CALLS
    assert report.skipped == {actions.TOO_MANY: tasks[-2:]}
    assert len(api.create_requests) - creates == actions.MAX_API_CALLS


def test_resubmit_without_an_api_key_reports_it_and_creates_nothing(api, settings):
    old = failed_generated("a cat surfing")
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": None}

    report = actions.resubmit([old])

    assert report.message() == (
        "Resubmitted 0 tasks. Skipped 1 task: "
        "No CometAPI key configured: set RUNWAY_FEED['API_KEY'] in your settings."
    )
    assert RunwayTask.objects.count() == 1
    assert not events(old, EventKind.RESUBMITTED)


def test_resubmit_skips_tracked_and_running_tasks(api, now_of):
    tracked = track(api, now_of)
    RunwayTask.objects.filter(pk=tracked.pk).update(status=Status.FAILED)
    tracked.refresh_from_db()
    running = RunwayTask.objects.create(
        task_id="r", route="generate", status=Status.RUNNING, request={"prompt": "x"}
    )

    report = actions.resubmit([tracked, running])

    assert report.skipped == {actions.NO_REQUEST: [tracked], actions.STILL_RUNNING: [running]}
    assert api.create_requests == []
    assert RunwayTask.objects.count() == 2


def test_resubmit_refused_by_the_api_keeps_the_rejected_row(api):
    old = failed_generated("a cat surfing")
    api.inject(Fault(kind="status", status=400), route="create")

    [new] = actions.resubmit([old]).done

    assert new.status == Status.FAILED
    assert new.failure_code == FailureCode.REJECTED
    assert new.resubmitted_from == old
    assert events(old, EventKind.RESUBMITTED)[0].message == (
        f"Resubmitted as task #{new.pk} (failed)."
    )


def test_resubmit_malformed_row_says_what_is_wrong(api):
    product = Product.objects.create(name="Surfboard")
    bad_request = failed_generated("a cat surfing")
    bad_metadata = failed_generated("a dog surfing")
    bad_link = failed_generated("a cow surfing", content_object=product)
    RunwayTask.objects.filter(pk=bad_request.pk).update(request=["not", "an", "object"])
    RunwayTask.objects.filter(pk=bad_metadata.pk).update(metadata="a string")
    RunwayTask.objects.filter(pk=bad_link.pk).update(object_id="not-a-number")
    rows = list(RunwayTask.objects.filter(pk__in=[bad_request.pk, bad_metadata.pk, bad_link.pk]))
    created = len(api.create_requests)

    report = actions.resubmit(rows)

    assert report.skipped == {
        actions.MALFORMED_REQUEST: [bad_request],
        actions.MALFORMED_METADATA: [bad_metadata],
        actions.BROKEN_LINK: [bad_link],
    }
    assert len(api.create_requests) == created

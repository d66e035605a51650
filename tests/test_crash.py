"""Workers that die or lose their database at the worst moment lose nothing and repeat nothing.

A poller runs in a real subprocess (``runway_poll``, or a few lines around :class:`Poller`) on
this test's database and is killed with SIGKILL at a chosen point; PostgreSQL's
``pg_terminate_backend`` drops a live poller's connection. Signals are recorded in the database
by ``tests.testapp`` (``RUNWAY_RECORD_SIGNALS``), so the ones a subprocess sent count too.

The kill tests and the dropped connection need PostgreSQL (the second pass of ``.ci/run``);
several processes polling at once runs on both databases.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_runway_feed import outbox
from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, TaskScript
from tests.conftest import run_in_threads
from tests.processes import start_python
from tests.testapp.models import SignalRecord

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 60
STARTS_RUNNING = TaskScript(queued_for=0, run_for=10_000)


@pytest.fixture
def live_api(settings, monkeypatch) -> Any:
    """A real-time fake CometAPI, and the settings a subprocess needs to use it."""
    monkeypatch.setenv("RUNWAY_RECORD_SIGNALS", "1")
    with FakeCometAPI(api_key="crash-key") as server:
        feed = {
            "API_KEY": "crash-key",
            "BASE_URL": server.url,
            "POLL_INTERVAL": 60,
            "LEASE_SECONDS": LEASE,
            "BATCH_SIZE": 50,
            "CONCURRENCY": 4,
        }
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, **feed}
        yield server, feed


def wait_for(condition: Callable[[], bool], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the subprocess")
        time.sleep(0.05)


def track_many(server: FakeCometAPI, count: int) -> list[RunwayTask]:
    return [RunwayTask.objects.track(server.add_task(STARTS_RUNNING)) for _ in range(count)]


def finish_with_a_fresh_worker(*, after: float) -> None:
    """Another worker, ``after`` seconds later (leases of the dead one expired by then)."""
    later = timezone.now() + dt.timedelta(seconds=after)
    with Poller(clock=lambda: later) as poller:
        outbox.sweep(now=later)
        while poller.run_round().claimed:
            pass


def assert_each_transition_once_and_signalled_once(tasks: list[RunwayTask]) -> None:
    events = TaskEvent.objects.filter(kind=EventKind.TRANSITION, from_status=Status.QUEUED)
    assert Counter(events.values_list("task_id", flat=True)) == {task.pk: 1 for task in tasks}
    assert not TaskEvent.objects.filter(dispatched_at__isnull=True).exists()
    signalled = SignalRecord.objects.filter(signal="task_status_changed", previous="queued")
    assert sorted(signalled.values_list("event_pk", flat=True)) == sorted(
        events.values_list("pk", flat=True)
    )
    assert not RunwayTask.objects.exclude(lease_owner="").exists()
    assert set(RunwayTask.objects.values_list("status", flat=True)) == {Status.RUNNING}


@pytest.mark.postgres
def test_sigkill_mid_batch_leases_expire_and_another_run_finishes(live_api, tmp_path):
    server, feed = live_api
    server.latency = 3.0  # the batch is in flight for a while
    tasks = track_many(server, 20)
    claimed_at = timezone.now()

    worker = start_python(["-m", "django", "runway_poll"], feed, tmp_path / "poll.log")
    wait_for(lambda: server.max_concurrent_requests >= 1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    leased = RunwayTask.objects.exclude(lease_owner="")
    assert leased.exists(), (tmp_path / "poll.log").read_text()
    # Nobody else may touch them while the dead worker's lease lasts, and not a second longer.
    with Poller() as poller:
        assert poller.run_round().claimed == 0
    latest = max(leased.values_list("lease_expires_at", flat=True))
    assert latest <= timezone.now() + dt.timedelta(seconds=LEASE)
    assert latest >= claimed_at

    server.latency = 0.0
    finish_with_a_fresh_worker(after=LEASE + 1)

    assert_each_transition_once_and_signalled_once(tasks)


@pytest.mark.postgres
def test_sigkill_between_commit_and_signals_sweep_sends_once(live_api, tmp_path):
    server, feed = live_api
    tasks = track_many(server, 5)
    # The worker commits its first transition and dies before any receiver hears of it.
    code = textwrap.dedent(
        """
        import os, signal, django
        django.setup()
        from django_runway_feed import outbox
        outbox.dispatch = lambda event_pk: os.kill(os.getpid(), signal.SIGKILL)
        from django_runway_feed.polling import Poller
        with Poller() as poller:
            poller.run_round()
        """
    )

    worker = start_python(["-c", code], feed, tmp_path / "poll.log")
    assert worker.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "poll.log").read_text()

    orphan = TaskEvent.objects.get(kind=EventKind.TRANSITION, from_status=Status.QUEUED)
    assert orphan.dispatched_at is None
    assert not SignalRecord.objects.exists()
    # A live worker's on-commit send may still be coming: the sweep leaves young events alone.
    assert outbox.sweep(now=timezone.now()) == 0

    later = timezone.now() + dt.timedelta(seconds=LEASE + 1)
    sent: list[int] = []
    errors = run_in_threads(3, lambda: sent.append(outbox.sweep(now=later)))
    assert errors == []
    assert sum(sent) == 1
    assert outbox.sweep(now=later + dt.timedelta(hours=1)) == 0
    assert list(
        SignalRecord.objects.filter(signal="task_status_changed").values_list("event_pk", flat=True)
    ) == [orphan.pk]

    finish_with_a_fresh_worker(after=LEASE + 1)

    assert_each_transition_once_and_signalled_once(tasks)


def _terminate_backend_of(pid: int) -> None:
    import psycopg

    settings_dict = connection.settings_dict
    with psycopg.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"] or None,
        password=settings_dict["PASSWORD"] or None,
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        autocommit=True,
    ) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.mark.postgres
def test_dropped_connection_between_batches_next_batch_recovers(api, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BATCH_SIZE": 10}
    tasks = [
        RunwayTask.objects.track(api.add_task(STARTS_RUNNING), now=now_of()) for _ in range(30)
    ]

    with Poller(clock=now_of) as poller:
        first = poller.run_round()
        _terminate_backend_of(_backend_pid())
        later = [poller.run_round() for _ in range(4)]

    assert first.polled == 10
    assert poller.database_errors == 1
    assert sum(summary.polled for summary in later) == 20
    assert Counter(call.task_id for call in api.feed_calls()) == {t.task_id: 1 for t in tasks}
    assert not RunwayTask.objects.exclude(lease_owner="").exists()
    assert RunwayTask.objects.filter(status=Status.RUNNING).count() == 30


@pytest.mark.postgres
def test_dropped_connection_mid_batch_loses_only_that_poll(api, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BATCH_SIZE": 10, "LEASE_SECONDS": LEASE}
    tasks = [
        RunwayTask.objects.track(api.add_task(STARTS_RUNNING), now=now_of()) for _ in range(10)
    ]
    moment = now_of()

    with Poller(clock=lambda: moment) as poller:
        pid = _backend_pid()
        owner = "doomed:1"
        claimed = poller.claim(owner, now=moment, limit=10)
        results = poller.fetch(claimed)
        _terminate_backend_of(pid)
        # The answers cannot be written: the run survives, the rows stay leased, no longer.
        summary = poller._guarded(lambda: poller.apply(owner, claimed, results, now=moment), None)
        assert summary is None
        leases = list(RunwayTask.objects.values_list("lease_owner", "lease_expires_at"))
        assert {owner_ for owner_, _until in leases} == {owner}
        assert {until for _owner, until in leases} == {moment + dt.timedelta(seconds=LEASE)}
        assert poller.run_round().claimed == 0  # still leased

        moment += dt.timedelta(seconds=LEASE + 1)
        assert poller.run_round().polled == 10

    assert Counter(call.task_id for call in api.feed_calls()) == {t.task_id: 2 for t in tasks}
    assert TaskEvent.objects.filter(kind=EventKind.TRANSITION, from_status="queued").count() == 10
    assert not RunwayTask.objects.exclude(lease_owner="").exists()


def test_processes_polling_at_once_never_double_poll(live_api, tmp_path):
    server, feed = live_api
    server.latency = 0.05  # long enough for the three runs to overlap
    tasks = track_many(server, 300)

    log = tmp_path / "poll.log"
    workers = [start_python(["-m", "django", "runway_poll"], feed, log) for _ in range(3)]
    codes = [worker.wait(timeout=120) for worker in workers]

    assert codes == [0, 0, 0], log.read_text()[-3000:]
    calls = Counter(call.task_id for call in server.feed_calls())
    assert calls == {task.task_id: 1 for task in tasks}
    assert_each_transition_once_and_signalled_once(tasks)


def _undelivered(count: int, *, when: dt.datetime) -> None:
    task = RunwayTask.objects.create(route="tracked", status=Status.RUNNING, task_id=f"s{count}")
    TaskEvent.objects.bulk_create(
        TaskEvent(
            task=task,
            kind=EventKind.TRANSITION,
            from_status=Status.QUEUED,
            to_status=Status.RUNNING,
            redeliver_after=when,
        )
        for _ in range(count)
    )


@pytest.mark.django_db
@pytest.mark.parametrize("due", [5, 50])
def test_sweep_runs_the_same_queries_for_5_and_50_due_events(due, django_assert_num_queries):
    now = timezone.now()
    _undelivered(due, when=now - dt.timedelta(minutes=5))

    with django_assert_num_queries(3):  # claim, read with the tasks, mark
        assert outbox.sweep(now=now) == due

    assert not TaskEvent.objects.filter(dispatched_at__isnull=True).exists()


@pytest.mark.django_db
def test_sweep_leaves_events_whose_redelivery_time_has_not_come():
    now = timezone.now()
    _undelivered(3, when=now + dt.timedelta(minutes=1))

    assert outbox.sweep(now=now) == 0
    assert TaskEvent.objects.filter(dispatched_at__isnull=True).count() == 3

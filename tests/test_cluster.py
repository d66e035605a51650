"""End to end: a real ``qcluster`` subprocess polls tasks against the fake CometAPI.

Runs on the configured database and broker: SQLite and the ORM broker by default, PostgreSQL
and Redis in the second pass of ``.ci/run``.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest
from django_q.brokers import get_broker
from django_q.tasks import async_task

from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.schedules import POLL_FUNC
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, TaskScript
from tests.processes import start_cluster, stop
from tests.testapp.models import SignalRecord

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

POLL_INTERVAL = 1.0

SCENARIOS = {
    "succeeds": (TaskScript(queued_for=1, run_for=4), Status.SUCCEEDED),
    "moderated": (
        TaskScript(run_for=2, outcome="failed", failure_code="SAFETY.OUTPUT.VIDEO"),
        Status.FAILED,
    ),
    "invisible": (TaskScript(invisible_for=3, run_for=2), Status.SUCCEEDED),
    "throttled": (TaskScript(throttled_for=3, run_for=2), Status.SUCCEEDED),
    "cancelled": (TaskScript(run_for=2, outcome="cancelled"), Status.CANCELLED),
    "legacy": (TaskScript(run_for=2, shape="legacy"), Status.SUCCEEDED),
}


@pytest.fixture
def real_time_api(settings, monkeypatch):
    monkeypatch.setenv("RUNWAY_RECORD_SIGNALS", "1")
    with FakeCometAPI(api_key="cluster-key") as server:
        feed = {
            "API_KEY": "cluster-key",
            "BASE_URL": server.url,
            "POLL_INTERVAL": POLL_INTERVAL,
            "MAX_POLL_INTERVAL": 2,
            "POLL_WINDOW": 15,
            "LEASE_SECONDS": 60,
        }
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, **feed}
        yield server, feed


def test_qcluster_drives_every_task_to_its_end(real_time_api, tmp_path):
    server, feed = real_time_api
    get_broker().purge_queue()
    server.script_next(*(script for script, _expected in SCENARIOS.values()))
    tasks = {
        name: RunwayTask.objects.generate(f"scenario {name}", metadata={"scenario": name})
        for name in SCENARIOS
    }
    assert all(task.status == Status.QUEUED for task in tasks.values())

    log = tmp_path / "qcluster.log"
    cluster = start_cluster(feed, log)
    try:
        # Two overlapping runs on two workers: the leases must keep them apart.
        async_task(POLL_FUNC)
        async_task(POLL_FUNC)
        deadline = time.monotonic() + 90
        while RunwayTask.objects.unfinished().exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop([cluster])

    unfinished = list(RunwayTask.objects.unfinished().values_list("metadata", "status"))
    assert unfinished == [], log.read_text()[-3000:]
    for name, task in tasks.items():
        task.refresh_from_db()
        assert task.status == SCENARIOS[name][1], name
    assert tasks["moderated"].failure_code == "SAFETY.OUTPUT.VIDEO"
    assert tasks["succeeds"].result_url.endswith(f"/outputs/{tasks['succeeds'].task_id}.mp4")
    assert tasks["legacy"].result_url.endswith(f"/outputs/{tasks['legacy'].task_id}.mp4")

    # Every transition event was signalled exactly once, in order, after commit.
    events = TaskEvent.objects.filter(kind=EventKind.TRANSITION).order_by("pk")
    changed = SignalRecord.objects.filter(signal="task_status_changed").order_by("pk")
    assert sorted(changed.values_list("event_pk", flat=True)) == sorted(
        events.values_list("pk", flat=True)
    )
    for task in tasks.values():
        history = list(events.filter(task=task).values_list("pk", "from_status", "to_status"))
        seen = list(changed.filter(task_pk=task.pk).values_list("event_pk", "previous", "status"))
        assert seen == history
        assert history[0][1:] == ("submitting", "queued")
        assert history[-1][2] == task.status
        # History is a chain: each transition starts where the previous one ended.
        assert all(a[2] == b[1] for a, b in itertools.pairwise(history))
    assert not SignalRecord.objects.filter(in_atomic_block=True).exists()
    assert SignalRecord.objects.filter(signal="task_submitted").count() == len(SCENARIOS)
    assert SignalRecord.objects.filter(signal="task_succeeded").count() == 4
    assert SignalRecord.objects.filter(signal="task_failed").count() == 2
    # The signals of polled transitions came from the cluster's processes, not from this one.
    assert SignalRecord.objects.filter(signal="task_succeeded").exclude(pid=os.getpid()).count()
    assert TaskEvent.objects.filter(dispatched_at__isnull=True).count() == 0

    # No task was polled faster than POLL_INTERVAL.
    for task in tasks.values():
        times = [call.at for call in server.feed_calls(task.task_id)]
        assert times, task
        assert all(b - a >= POLL_INTERVAL for a, b in itertools.pairwise(times)), (task, times)


def test_one_worker_stores_the_result_within_seconds_of_success(
    real_time_api, tmp_path, monkeypatch, settings
):
    # The quick start's SQLite setup: one worker, downloads on. The poll run holds that worker
    # for POLL_WINDOW; it must hand it back to the download job instead of finishing its window.
    server, feed = real_time_api
    feed = {
        **feed,
        "POLL_WINDOW": 40,
        "DOWNLOAD_RESULTS": True,
        "DOWNLOAD_ALLOW_HTTP": True,
        "DOWNLOAD_ALLOWED_NETWORKS": ["127.0.0.0/8"],
    }
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, **feed}
    monkeypatch.setenv("RUNWAY_TEST_WORKERS", "1")
    monkeypatch.setenv("RUNWAY_TEST_MEDIA_ROOT", str(tmp_path / "media"))
    get_broker().purge_queue()
    server.script_next(TaskScript(queued_for=1, run_for=3))
    task = RunwayTask.objects.generate("one worker", metadata={"scenario": "one worker"})

    cluster = start_cluster(feed, tmp_path / "qcluster.log")
    try:
        async_task(POLL_FUNC)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task.refresh_from_db()
            if task.downloaded_at:
                break
            time.sleep(0.5)
    finally:
        stop([cluster])

    assert task.downloaded_at, (tmp_path / "qcluster.log").read_text()[-3000:]
    succeeded = TaskEvent.objects.get(
        task=task, kind=EventKind.TRANSITION, to_status=Status.SUCCEEDED
    ).created_at
    delay = (task.downloaded_at - succeeded).total_seconds()
    print(f"stored {delay:.1f} s after success (POLL_WINDOW 40 s, one worker)")
    assert delay < 15  # generous; without the hand-back it is the rest of the 40 s window
    assert (tmp_path / "media").exists()

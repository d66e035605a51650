"""Soak: two ``qcluster`` processes on the Redis broker and PostgreSQL, many tasks, faults.

Sized for the CI machine (two shared cores), about two and a half minutes: ``TASKS`` tasks with
scripts of 35 to 50 s, long enough for every task to be polled several times although the budget
spreads the polls (``POLL_INTERVAL`` 1 s, but ``RATE`` requests/s for all tasks together).
Each of the four scripts (success, failure, invisible start, throttled wait) gets a quarter;
5 % of feed requests get a random fault (429 with Retry-After, 500, 502, 503, an HTML page,
truncated JSON); the shared request budget is set to
``RATE`` requests/s for both clusters together. At the end:

- every task is terminal with its script's status;
- every transition was signalled exactly once (signals are written to the database by the
  receivers of ``tests.testapp``, from whichever process sent them), in order;
- no task was polled faster than ``POLL_INTERVAL`` (the fake server's record of feed calls);
- API calls per task stay within ``script seconds / POLL_INTERVAL + 6`` (the spacing allows
  one call per interval while the script runs, one more to see the end; faults only widen the
  spacing, and the slack covers a run of faults after the end), and the total within the
  budget: ``RATE x elapsed + burst``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter

import pytest
from django_q.brokers import get_broker
from django_q.tasks import async_task

from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.schedules import POLL_FUNC
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, TaskScript
from tests.processes import start_cluster, stop
from tests.testapp.models import SignalRecord

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]

TASKS = 2000
POLL_INTERVAL = 1.0
RATE = 150
FAULT_RATE = 0.05
DEADLINE = 300.0
CALL_SLACK = 6

# Long enough that each task is polled several times while the budget spreads the polls of
# 2,000 tasks: RATE requests/s reach each task every ~TASKS / RATE seconds.
SCRIPTS: dict[str, tuple[TaskScript, str]] = {
    "success": (TaskScript(queued_for=10, run_for=40), Status.SUCCEEDED),
    "failure": (
        TaskScript(queued_for=5, run_for=30, outcome="failed", failure_code="SAFETY.OUTPUT.VIDEO"),
        Status.FAILED,
    ),
    "invisible": (TaskScript(invisible_for=20, queued_for=0, run_for=30), Status.SUCCEEDED),
    "throttled": (TaskScript(queued_for=0, throttled_for=30, run_for=20), Status.SUCCEEDED),
}


def script_seconds(script: TaskScript) -> float:
    return script.invisible_for + script.queued_for + script.throttled_for + script.run_for


def test_soak_two_clusters_mixed_scripts_and_faults(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("RUNWAY_RECORD_SIGNALS", "1")
    with FakeCometAPI(api_key="soak-key", fault_rate=FAULT_RATE, seed=7) as server:
        feed = {
            "API_KEY": "soak-key",
            "BASE_URL": server.url,
            "POLL_INTERVAL": POLL_INTERVAL,
            "MAX_POLL_INTERVAL": 3,
            "POLL_WINDOW": 10,
            "LEASE_SECONDS": 60,
            "BATCH_SIZE": 50,
            "CONCURRENCY": 8,
            "MAX_REQUESTS_PER_SECOND": RATE,
        }
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, **feed}
        broker = get_broker()
        broker.purge_queue()
        log = tmp_path / "qcluster.log"
        started = time.time()
        clusters = [start_cluster(feed, log) for _ in range(2)]
        try:
            # Tasks are created once both clusters listen, so their scripts play out under polling.
            boot_deadline = time.monotonic() + 90
            while log.read_text(errors="replace").count(" running.") < 2:
                assert time.monotonic() < boot_deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            names = list(itertools.islice(itertools.cycle(SCRIPTS), TASKS))
            creating = time.monotonic()
            tasks = {}
            for index, name in enumerate(names):
                task_id = server.add_task(SCRIPTS[name][0])
                tasks[task_id] = (name, RunwayTask.objects.track(task_id, metadata={"n": index}))
            created_in = time.monotonic() - creating
            deadline = time.monotonic() + DEADLINE
            next_runs = 0.0
            while time.monotonic() < deadline and (
                RunwayTask.objects.unfinished().exists()
                # The last transitions' signals are sent just after their commit.
                or TaskEvent.objects.filter(dispatched_at__isnull=True).exists()
            ):
                if any(cluster.poll() is not None for cluster in clusters):
                    break  # a cluster died: the assertions below show its log
                # What the Schedule does every minute, more often: two runs every POLL_WINDOW/2.
                if time.monotonic() >= next_runs:
                    async_task(POLL_FUNC)
                    async_task(POLL_FUNC)
                    next_runs = time.monotonic() + feed["POLL_WINDOW"] / 2
                time.sleep(0.5)
        finally:
            stop(clusters)
        elapsed = time.time() - started
        calls = server.feed_calls()

    unfinished = RunwayTask.objects.unfinished().count()
    assert unfinished == 0, log.read_text()[-3000:]

    # Every task ended as its script says.
    for task_id, (name, task) in tasks.items():
        task.refresh_from_db()
        assert task.status == SCRIPTS[name][1], (name, task_id, task.last_error)
        if name == "failure":
            assert task.failure_code == "SAFETY.OUTPUT.VIDEO"

    # Each transition was signalled exactly once, in order, never inside a transaction.
    events = TaskEvent.objects.filter(kind=EventKind.TRANSITION)
    changed = SignalRecord.objects.filter(signal="task_status_changed")
    event_pks = list(events.values_list("pk", flat=True))
    assert sorted(changed.values_list("event_pk", flat=True)) == sorted(event_pks)
    assert not TaskEvent.objects.filter(dispatched_at__isnull=True).exists()
    assert not SignalRecord.objects.filter(in_atomic_block=True).exists()
    for _task_id, (_name, task) in tasks.items():
        history = list(
            events.filter(task=task).order_by("pk").values_list("from_status", "to_status")
        )
        assert all(a[1] == b[0] for a, b in itertools.pairwise(history)), history
        assert history[-1][1] == task.status
    assert SignalRecord.objects.filter(signal="task_succeeded").count() == 3 * TASKS // 4
    assert SignalRecord.objects.filter(signal="task_failed").count() == TASKS // 4

    # Nobody polled a task faster than POLL_INTERVAL, nor more often than its script allows.
    per_task: dict[str, list[float]] = {}
    for call in calls:
        per_task.setdefault(str(call.task_id), []).append(call.at)
    assert set(per_task) == set(tasks)
    for task_id, times in per_task.items():
        gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
        assert all(gap >= POLL_INTERVAL for gap in gaps), (task_id, gaps)
        script = SCRIPTS[tasks[task_id][0]][0]
        bound = math.floor(script_seconds(script) / POLL_INTERVAL) + CALL_SLACK
        assert len(times) <= bound, (task_id, len(times), bound)

    # The shared budget held for both clusters together.
    assert len(calls) <= RATE * elapsed + RATE
    faults = Counter(call.status_code for call in calls if call.status_code >= 429)
    assert faults  # the background fault rate did fire
    print(
        f"soak: {TASKS} tasks (tracked in {created_in:.0f} s), {len(calls)} feed calls in "
        f"{elapsed:.0f} s "
        f"({len(calls) / TASKS:.1f} per task), HTTP faults {dict(faults)}"
    )

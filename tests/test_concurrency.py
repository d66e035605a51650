"""Several poll runs at once never poll a task twice in a round nor apply a transition twice.

On PostgreSQL this exercises ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite the conditional
``UPDATE`` claim. Each thread has its own database connection, as separate workers would.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import connection

from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.polling import Poller
from django_runway_feed.testing import TaskScript
from tests.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 300


def test_concurrent_runs_poll_each_task_once(api, now_of, signal_log, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BATCH_SIZE": 25, "CONCURRENCY": 8}
    ids = [api.add_task(TaskScript(queued_for=0, run_for=600)) for _ in range(TASKS)]
    for task_id in ids:
        RunwayTask.objects.track(task_id, now=now_of())

    def poll_until_nothing_due() -> None:
        with Poller(clock=now_of) as poller:
            # The clock stands still, so once polled a task is not due again.
            while poller.run_round().claimed:
                pass

    errors = run_in_threads(3, poll_until_nothing_due)

    assert errors == []
    calls = Counter(call.task_id for call in api.feed_calls())
    assert set(calls) == set(ids)
    assert set(calls.values()) == {1}
    events = TaskEvent.objects.filter(kind=EventKind.TRANSITION)
    assert events.count() == TASKS
    assert Counter(events.values_list("task_id", flat=True)).most_common(1)[0][1] == 1
    assert len(signal_log.of("task_status_changed")) == TASKS
    assert RunwayTask.objects.filter(status="running").count() == TASKS
    assert not RunwayTask.objects.exclude(lease_owner="").exists()


@pytest.mark.postgres
def test_claim_uses_skip_locked_on_postgres(api, now_of):
    assert connection.vendor == "postgresql"
    assert connection.features.has_select_for_update_skip_locked
    RunwayTask.objects.track(api.add_task(TaskScript()), now=now_of())

    with Poller(clock=now_of) as poller:
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            poller.claim("a:1", now=now_of(), limit=10)

    assert any("FOR UPDATE SKIP LOCKED" in q["sql"] for q in queries.captured_queries)

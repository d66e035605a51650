from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.signals import pre_enqueue

from django_runway_feed import services
from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, TaskScript
from tests.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

LEGACY_SUCCESS = {
    "task_id": "whatever",
    "status": "3",
    "video_url": "https://evil.example/fake.mp4",
}


@pytest.fixture
def sync_cluster(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}


@pytest.fixture
def queued_polls() -> Iterator[list[tuple[Any, ...]]]:
    """The arguments of every poll_task job queued meanwhile (django-q2's own signal)."""
    seen: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def record(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
        if task["func"] == "django_runway_feed.jobs.poll_task":
            with lock:
                seen.append(tuple(task["args"]))

    pre_enqueue.connect(record, dispatch_uid="test-queued-polls")
    yield seen
    pre_enqueue.disconnect(dispatch_uid="test-queued-polls")


def callback_path(task_pk: int, signature: str | None = None) -> str:
    return reverse(
        "django_runway_feed:callback",
        kwargs={"pk": task_pk, "signature": signature or services.callback_signature(task_pk)},
    )


def test_callback_wrong_signature_is_404_without_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.post(
            callback_path(1, "0" * 40), data=LEGACY_SUCCESS, content_type="application/json"
        )

    assert response.status_code == 404


def test_callback_get_is_not_allowed(client):
    assert client.get(callback_path(1)).status_code == 405


def test_callback_body_too_large_is_413(client):
    response = client.post(
        callback_path(1), data="x" * (64 * 1024 + 1), content_type="application/json"
    )

    assert response.status_code == 413


def test_callback_claiming_success_for_running_task_changes_nothing(
    api, client, clock, sync_cluster
):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    clock.advance(30)

    response = client.post(
        callback_path(task.pk), data=LEGACY_SUCCESS, content_type="application/json"
    )

    task.refresh_from_db()
    assert response.status_code == 202
    assert api.call_count(task.task_id) == 1
    assert task.status == Status.RUNNING
    assert task.result_url == ""


def test_callback_repeated_polls_once_per_interval(api, client, clock, sync_cluster):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))

    for _ in range(5):
        client.post(callback_path(task.pk), data="{}", content_type="application/json")

    assert api.call_count(task.task_id) == 1


def test_callback_for_finished_task_is_harmless(api, client, sync_cluster):
    task = RunwayTask.objects.track(api.add_task(TaskScript()))
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.SUCCEEDED)

    response = client.post(callback_path(task.pk), data="{}", content_type="application/json")

    assert response.status_code == 200
    assert json.loads(response.content) == {"ok": True, "poll": False}
    assert api.call_count(task.task_id) == 0


def test_callback_records_when_the_first_one_came(api, client, queued_polls):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    before = timezone.now()

    client.post(callback_path(task.pk), data="{}", content_type="application/json")

    task.refresh_from_db()
    first = task.callback_at
    assert first is not None
    assert before <= first <= timezone.now()


def test_callback_again_keeps_the_time_of_the_first(api, client, queued_polls):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    client.post(callback_path(task.pk), data="{}", content_type="application/json")
    task.refresh_from_db()
    first = task.callback_at

    services.request_prompt_poll(task.pk, now=timezone.now() + dt.timedelta(minutes=5))
    client.post(callback_path(task.pk), data="{}", content_type="application/json")

    task.refresh_from_db()
    assert task.callback_at == first


def test_callback_for_finished_task_is_recorded_too(api, client, queued_polls):
    task = RunwayTask.objects.track(api.add_task(TaskScript()))
    RunwayTask.objects.filter(pk=task.pk).update(status=Status.FAILED)
    before = timezone.now()

    response = client.post(callback_path(task.pk), data="{}", content_type="application/json")

    task.refresh_from_db()
    assert json.loads(response.content) == {"ok": True, "poll": False}
    assert task.callback_at is not None
    assert task.callback_at >= before
    assert queued_polls == []


def test_callback_for_unknown_task_records_nothing(client):
    response = client.post(callback_path(999_999), data="{}", content_type="application/json")

    assert response.status_code == 200
    assert not RunwayTask.objects.filter(callback_at__isnull=False).exists()


def test_callback_end_to_end_over_http(live_server, settings, sync_cluster, clock):
    with FakeCometAPI(api_key="cb-key", clock=clock, callbacks=False) as server:
        settings.RUNWAY_FEED = {
            **settings.RUNWAY_FEED,
            "API_KEY": "cb-key",
            "BASE_URL": server.url,
            "CALLBACK_BASE_URL": live_server.url,
        }
        server.script_next(TaskScript(queued_for=1, run_for=5))
        task = RunwayTask.objects.generate("a cat")
        clock.advance(10)

        deliveries = server.deliver_callbacks()
        outputs = f"{server.url}/outputs"

    task.refresh_from_db()
    assert [(d.task_id, d.status_code) for d in deliveries] == [(task.task_id, 202)]
    assert deliveries[0].url.startswith(f"{live_server.url}/runway-feed/callback/{task.pk}/")
    assert task.status == Status.SUCCEEDED
    assert task.result_url == f"{outputs}/{task.task_id}.mp4"


def test_callback_replays_queue_one_poll_per_interval(api, client, queued_polls):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))

    answers = {
        client.post(callback_path(task.pk), data="{}", content_type="application/json").status_code
        for _ in range(200)
    }

    assert answers == {202}
    assert [args[0] for args in queued_polls] == [task.pk]


def test_callback_job_pending_queues_no_second_one_however_long(api, settings, queued_polls):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5}
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    start = timezone.now()

    # No worker runs: 600 callbacks over an hour queue one job, not one per interval.
    for second in range(0, 3600, 6):
        services.request_prompt_poll(task.pk, now=start + dt.timedelta(seconds=second))

    task.refresh_from_db()
    assert [args[0] for args in queued_polls] == [task.pk]
    assert task.next_poll_at <= start + dt.timedelta(seconds=3594)


def test_callback_after_its_job_ran_queues_again(api, settings, queued_polls):
    from django_runway_feed import jobs

    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5}
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    services.request_prompt_poll(task.pk)
    jobs.poll_task(*queued_polls[0])

    services.request_prompt_poll(task.pk, now=timezone.now() + dt.timedelta(seconds=6))

    assert [args[0] for args in queued_polls] == [task.pk, task.pk]


def test_callback_replays_from_many_workers_queue_one_poll(api, queued_polls):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))

    def replay() -> None:
        for _ in range(10):
            services.request_prompt_poll(task.pk)

    errors = run_in_threads(8, replay)

    assert errors == []
    assert [args[0] for args in queued_polls] == [task.pk]


def test_callback_queued_poll_takes_over_its_lease_and_polls(api, queued_polls, settings):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0, run_for=100)))
    services.request_prompt_poll(task.pk)
    ((pk, token),) = queued_polls

    from django_runway_feed import jobs

    result = jobs.poll_task(pk, token)

    task.refresh_from_db()
    assert result["polled"] == 1
    assert api.call_count(task.task_id) == 1
    assert task.lease_owner == ""

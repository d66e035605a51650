from __future__ import annotations

import pytest

from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import Fault, TaskScript

pytestmark = pytest.mark.django_db(transaction=True)


def test_generate_saves_request_without_callback_and_queues(api):
    task = RunwayTask.objects.generate("a cat surfing", image="https://example.com/cat.png")

    body = api.create_requests[-1].body
    assert task.status == Status.QUEUED
    assert task.task_id == api.create_requests[-1].task_id
    assert body["callback_url"].startswith("https://callback.invalid/runway-feed/callback/")
    assert task.callback_token in body["callback_url"]
    assert task.request == {
        "prompt": "a cat surfing",
        "model": "gen4",
        "ratio": "1280:720",
        "options": {"seconds": 5},
        "image": "https://example.com/cat.png",
    }
    assert list(task.events.values_list("from_status", "to_status")) == [("submitting", "queued")]


def test_generate_refused_is_failed_rejected(api, signal_log):
    api.inject(
        Fault(kind="status", status=200, body='{"code": 400, "msg": "prompt too long"}'),
        route="create",
    )

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.FAILED
    assert task.failure_code == "rejected"
    assert task.fail_reason == "CometAPI refused the task: prompt too long"
    assert len(signal_log.of("task_failed")) == 1
    assert signal_log.of("task_submitted") == []


def test_generate_unknown_outcome_is_not_retried(api):
    api.inject(Fault.server_error(502), route="create")

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.SUBMITTING
    assert task.task_id is None
    assert task.last_error.startswith("Outcome unknown, not retried")
    assert len(api.create_requests) <= 1


def test_track_is_idempotent(api):
    task_id = api.add_task(TaskScript())

    first = RunwayTask.objects.track(task_id)
    second = RunwayTask.objects.track(task_id)

    assert first.pk == second.pk
    assert RunwayTask.objects.count() == 1


def test_generate_with_refused_key_is_failed_rejected(api):
    api.inject(Fault.unauthorized(), route="create")

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.FAILED
    assert task.failure_code == "rejected"
    assert "HTTP 401" in task.fail_reason


def test_generate_without_key_raises_before_any_row(api, settings):
    from django_runway_feed.exceptions import ConfigurationError

    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": None}

    with pytest.raises(ConfigurationError):
        RunwayTask.objects.generate("x")

    assert not RunwayTask.objects.exists()
    assert api.create_requests == []

"""With one django-q2 worker, the scheduled poll run hands its worker back to a waiting result
download instead of holding it for the rest of POLL_WINDOW (the cluster test measures it)."""

from __future__ import annotations

import time

import pytest

from django_runway_feed import jobqueue, services
from django_runway_feed.downloads import first_downloads_waiting
from django_runway_feed.models import DownloadStatus, RunwayTask
from django_runway_feed.schedules import POLL_FUNC
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def downloads_on(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "runway": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": True, "STORAGE": "runway"}
    settings.Q_CLUSTER = {
        k: v for k, v in settings.Q_CLUSTER.items() if k not in ("sync", "redis")
    } | {"orm": "default", "workers": 1}


def waiting_download(**fields) -> RunwayTask:
    return RunwayTask.objects.create(
        task_id="done",
        route="tracked",
        status=Status.SUCCEEDED,
        result_url="https://cdn.example.com/v.mp4",
        download_status=DownloadStatus.PENDING,
        **fields,
    )


@pytest.fixture
def queued(monkeypatch) -> list[str]:
    """The jobs queued (by function), recorded instead of sent to whichever broker is set."""
    funcs: list[str] = []
    monkeypatch.setattr(jobqueue, "enqueue", lambda func, *args: funcs.append(func))
    return funcs


def test_first_downloads_waiting_sees_a_fresh_success(downloads_on):
    waiting_download()

    assert first_downloads_waiting() is True


def test_first_downloads_waiting_ignores_retries(downloads_on):
    waiting_download(download_attempts=1)

    assert first_downloads_waiting() is False


def test_first_downloads_waiting_is_false_while_downloads_are_off(settings):
    waiting_download()

    assert first_downloads_waiting() is False


def test_single_worker_cluster_reads_q_cluster_workers(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "workers": 1, "sync": False}
    assert services.single_worker_cluster() is True

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "workers": 2}
    assert services.single_worker_cluster() is False


def test_scheduled_run_hands_back_early_and_queues_the_next_run(downloads_on, queued):
    waiting_download()
    started = time.monotonic()

    services.poll_due_tasks(window=30, hand_back_downloads=True)

    assert time.monotonic() - started < 20  # generous: it returns at once, not after 30 s
    assert queued.count(POLL_FUNC) == 1


def test_scheduled_run_without_waiting_downloads_queues_no_extra_run(downloads_on, queued):
    services.poll_due_tasks(window=1, hand_back_downloads=True)

    assert POLL_FUNC not in queued

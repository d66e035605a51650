"""Result downloads end to end: the poller, the outbox, the job, storage and the fake CometAPI."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage, storages
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from django_runway_feed import downloads as results
from django_runway_feed import jobs, signals
from django_runway_feed.exceptions import DownloadUnavailable
from django_runway_feed.models import DownloadStatus, EventKind, RunwayTask, TaskEvent
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeClock, FakeCometAPI, TaskScript
from django_runway_feed.testing.tasks import output_bytes

from .conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

WITH_POSTER = TaskScript(queued_for=1, run_for=5, output_location="legacy_video_url")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def downloads(settings: Any, api: FakeCometAPI, media: Path) -> dict[str, Any]:
    """Downloads on, into a tmp FileSystemStorage alias, with the fake server's address allowed."""
    settings.STORAGES = {
        **settings.STORAGES,
        "runway": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media), "base_url": "/media/runway/"},
        },
    }
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "DOWNLOAD_RESULTS": True,
        "STORAGE": "runway",
        "DOWNLOAD_ALLOW_HTTP": True,
        "DOWNLOAD_ALLOWED_NETWORKS": ["127.0.0.1/32"],
    }
    return settings.RUNWAY_FEED


@pytest.fixture
def stored_log() -> Iterator[list[tuple[dict[str, Any], bool]]]:
    calls: list[tuple[dict[str, Any], bool]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal", None)
        calls.append((kwargs, connection.in_atomic_block))

    signals.task_result_stored.connect(receiver, weak=False)
    yield calls
    signals.task_result_stored.disconnect(receiver)


def finish(
    api: FakeCometAPI, clock: FakeClock, now_of: Callable[[], dt.datetime], script: TaskScript
) -> RunwayTask:
    task = RunwayTask.objects.track(api.add_task(script), now=now_of())
    with Poller(clock=now_of) as poller:
        for _ in range(60):
            poller.run_round()
            task.refresh_from_db()
            if task.is_finished:
                break
            clock.advance(1)
    assert task.status == Status.SUCCEEDED
    return task


def stored_files(media: Path) -> list[Path]:
    return sorted(path for path in media.rglob("*") if path.is_file()) if media.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kinds(task: RunwayTask) -> list[str]:
    return list(TaskEvent.objects.filter(task=task).order_by("pk").values_list("kind", flat=True))


def test_success_stores_video_poster_and_last_frame_with_matching_sha256(
    api, clock, now_of, downloads, media, stored_log
):
    task = finish(api, clock, now_of, WITH_POSTER)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    video = output_bytes(task.task_id, ".mp4")
    poster = output_bytes(task.task_id, "-poster.png")
    last = output_bytes(task.task_id, "-last.png")
    runway = storages["runway"]
    with runway.open(task.output_file.name) as stored:
        assert stored.read() == video
    with runway.open(task.poster_file.name) as stored:
        assert stored.read() == poster
    assert task.output_sha256 == hashlib.sha256(video).hexdigest()
    assert task.output_size == len(video)
    assert task.output_content_type == "video/mp4"
    assert task.downloaded_at is not None
    assert [(f["kind"], f["size"], f["sha256"], f["content_type"]) for f in task.stored_files] == [
        ("video", len(video), hashlib.sha256(video).hexdigest(), "video/mp4"),
        ("poster", len(poster), hashlib.sha256(poster).hexdigest(), "image/png"),
        ("last_frame", len(last), hashlib.sha256(last).hexdigest(), "image/png"),
    ]
    assert re.fullmatch(rf"runway_feed/\d{{4}}/\d{{2}}/{task.task_id}\.mp4", task.output_file.name)
    assert len(stored_files(media)) == 3
    assert results.stored_file_url(task, "poster") == f"/media/runway/{task.poster_file.name}"


def test_the_file_fields_answer_from_the_configured_storage_alias(
    api, clock, now_of, downloads, media
):
    task = finish(api, clock, now_of, WITH_POSTER)

    task.refresh_from_db()
    # STORAGE is "runway" here, not "default": the fields forward to it at every call.
    assert task.output_file.url == f"/media/runway/{task.output_file.name}"
    assert task.poster_file.url == results.stored_file_url(task, "poster")
    with task.output_file.open("rb") as stored:
        assert stored.read() == output_bytes(task.task_id, ".mp4")
    assert task.output_file.size == task.output_size


def test_result_stored_is_an_outbox_event_sent_after_commit(
    api, clock, now_of, downloads, stored_log
):
    task = finish(api, clock, now_of, WITH_POSTER)

    event = TaskEvent.objects.get(task=task, kind=EventKind.RESULT_STORED)
    assert event.dispatched_at is not None
    assert event.payload["files"][0]["kind"] == "video"
    assert len(stored_log) == 1
    kwargs, in_atomic = stored_log[0]
    assert not in_atomic
    assert kwargs["task"].pk == task.pk
    assert kwargs["event"].pk == event.pk
    assert kwargs["task"].download_status == DownloadStatus.STORED


def test_authorization_never_reaches_the_download_host(api, clock, now_of, downloads):
    task = finish(api, clock, now_of, WITH_POSTER)

    requests_ = api.output_requests(task.task_id)
    assert [r.status_code for r in requests_] == [200, 200, 200]
    for request in requests_:
        assert "authorization" not in request.headers
        assert "cookie" not in request.headers
        assert not any("test-key" in value for value in request.headers.values())


def test_nothing_downloaded_when_downloads_are_off(api, clock, now_of, settings, media):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}

    task = finish(api, clock, now_of, WITH_POSTER)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.NONE
    assert api.output_requests() == []
    assert stored_files(media) == []


def test_expired_url_repolls_the_feed_and_downloads_fresh_urls(
    clock, now_of, settings, downloads, media
):
    with FakeCometAPI(api_key="test-key", clock=clock, output_url_ttl=60) as api:
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BASE_URL": api.url}
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": False}
        task = finish(api, clock, now_of, WITH_POSTER)
        old_url = task.result_url
        clock.advance(3600)  # the URLs handed out by the last poll are now expired
        feed_calls = api.call_count(task.task_id)
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": True}

        results.queue_download(task)

        task.refresh_from_db()
        assert task.download_status == DownloadStatus.STORED
        assert api.call_count(task.task_id) == feed_calls + 1
        assert [r.status_code for r in api.output_requests(task.task_id)] == [403, 200, 200, 200]
        assert task.result_url != old_url
        assert "expires=" in task.result_url
        with storages["runway"].open(task.output_file.name) as stored:
            assert stored.read() == output_bytes(task.task_id, ".mp4")
        retry = TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_RETRY)
        assert "HTTP 403" in retry.message
        assert "fresh URLs" in retry.message
        assert "signature" not in retry.message  # signed query strings are never echoed
        assert kinds(task)[-3:] == [
            EventKind.DOWNLOAD_QUEUED,
            EventKind.DOWNLOAD_RETRY,
            EventKind.RESULT_STORED,
        ]


def test_outputs_without_a_video_url_repoll_the_feed_first(api, clock, now_of, downloads, media):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, WITH_POSTER)
    poster = next(o for o in task.outputs if o["kind"] == "poster")
    RunwayTask.objects.filter(pk=task.pk).update(result_url="", outputs=[poster])
    feed_calls = api.call_count(task.task_id)
    downloads["DOWNLOAD_RESULTS"] = True

    results.queue_download(task)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert api.call_count(task.task_id) == feed_calls + 1
    assert [entry["kind"] for entry in task.stored_files] == ["video", "poster", "last_frame"]
    retry = TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_RETRY)
    assert (
        retry.message
        == "Attempt 1: The task has no video URL (yet). Asking the feed for fresh URLs."
    )


def point_outputs_at(task: RunwayTask, url: str) -> None:
    RunwayTask.objects.filter(pk=task.pk).update(
        result_url=url, outputs=[{"kind": "video", "url": url}]
    )


def test_transient_failure_is_retried_with_backoff_by_the_scheduled_run(
    api, clock, now_of, downloads, media
):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    good_url = RunwayTask.objects.get(pk=task.pk).result_url
    point_outputs_at(task, f"http://127.0.0.1:{free_port()}/gone.mp4")  # nobody listens there
    downloads["DOWNLOAD_RESULTS"] = True

    results.queue_download(task)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert task.download_status == DownloadStatus.PENDING
    assert task.download_attempts == 1
    assert "Could not fetch http://127.0.0.1:" in task.download_error
    assert task.download_retry_at is not None
    assert task.lease_owner == ""
    now = task.download_retry_at - dt.timedelta(seconds=1)
    assert results.queue_due_downloads(now=now) == 0  # not due yet

    point_outputs_at(task, good_url)
    # Let the backoff pass (the job checks the real time again, so move the row, not a clock).
    RunwayTask.objects.filter(pk=task.pk).update(download_retry_at=timezone.now())
    assert results.queue_due_downloads() == 1

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert task.download_attempts == 2
    assert task.download_error == ""
    assert len(stored_files(media)) == 1


def test_retry_delay_doubles_from_the_setting(downloads):
    downloads["DOWNLOAD_RETRY_DELAY"] = 10
    assert [results.retry_delay(n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]


def test_last_attempt_leaves_the_task_succeeded_with_a_failed_download(
    api, clock, now_of, downloads, media
):
    downloads.update(DOWNLOAD_RESULTS=False, DOWNLOAD_MAX_ATTEMPTS=2)
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    point_outputs_at(task, f"http://127.0.0.1:{free_port()}/gone.mp4")
    downloads["DOWNLOAD_RESULTS"] = True

    results.queue_download(task)
    task.refresh_from_db()
    results.download_result(task.pk, now=task.download_retry_at)

    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    assert task.download_status == DownloadStatus.FAILED
    assert task.download_attempts == 2
    assert task.download_retry_at is None
    failed = TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_FAILED)
    assert failed.message.startswith("Download failed 2 time(s): Could not fetch http://127.0.0.1:")
    assert TaskEvent.objects.filter(task=task, kind=EventKind.DOWNLOAD_RETRY).count() == 1
    assert stored_files(media) == []
    assert results.queue_due_downloads() == 0


def test_refused_url_fails_at_once_with_its_reason(api, clock, now_of, downloads, media):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    point_outputs_at(task, "http://169.254.169.254/latest/meta-data/")
    downloads["DOWNLOAD_RESULTS"] = True

    results.queue_download(task)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.FAILED
    assert task.download_attempts == 1
    assert task.download_error == (
        "Refused http://169.254.169.254/latest/meta-data/: 169.254.169.254 is link-local; add "
        "its network to RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] only if it is trusted."
    )
    assert TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_FAILED).message.startswith(
        "Download refused: Refused http://169.254.169.254/"
    )


def test_queue_download_explains_why_it_cannot(api, clock, now_of, downloads, settings):
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    task.refresh_from_db()

    with pytest.raises(DownloadUnavailable) as stored:
        results.queue_download(task)
    assert str(stored.value) == (
        f"The result of task {task} is already stored (use force to download it again)."
    )

    running = RunwayTask.objects.create(task_id="t-running", route="tracked", status="running")
    with pytest.raises(DownloadUnavailable) as unfinished:
        results.queue_download(running)
    assert str(unfinished.value) == (
        f"Task {running} has not succeeded, so it has no result to download."
    )

    bare = RunwayTask.objects.create(task_id="t-bare", route="tracked", status="succeeded")
    with pytest.raises(DownloadUnavailable) as no_url:
        results.queue_download(bare)
    assert str(no_url.value) == f"Task {bare} has no output URL to download."

    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": False}
    assert results.downloads_enabled() is False
    with pytest.raises(DownloadUnavailable, match=r"DOWNLOAD_RESULTS'\] = True"):
        results.queue_download(task)
    assert isinstance(DownloadUnavailable("x"), ValueError)


def test_forced_download_stores_again(api, clock, now_of, downloads, media):
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    task.refresh_from_db()
    first = task.output_file.name

    results.queue_download(task, force=True)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert task.output_file.name != first
    assert TaskEvent.objects.filter(task=task, kind=EventKind.RESULT_STORED).count() == 2
    # The new copy replaces the old one: nothing is left behind in storage.
    assert not storages["runway"].exists(first)
    assert stored_files(media) == [media / task.output_file.name]


def test_concurrent_jobs_download_a_task_once(api, clock, now_of, downloads, media):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, WITH_POSTER)
    RunwayTask.objects.filter(pk=task.pk).update(download_status=DownloadStatus.PENDING)
    downloads["DOWNLOAD_RESULTS"] = True
    outcomes: list[str] = []

    errors = run_in_threads(4, lambda: outcomes.append(results.download_result(task.pk).outcome))

    assert errors == []
    assert sorted(outcomes) == ["skipped", "skipped", "skipped", "stored"]
    assert len(api.output_requests(task.task_id)) == 3
    assert TaskEvent.objects.filter(task=task, kind=EventKind.RESULT_STORED).count() == 1
    assert len(stored_files(media)) == 3


def test_undelivered_result_stored_event_is_resent_by_the_sweep(
    api, clock, now_of, downloads, stored_log
):
    from django_runway_feed import outbox

    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    event = TaskEvent.objects.get(task=task, kind=EventKind.RESULT_STORED)
    # As if the worker died between commit and send.
    TaskEvent.objects.filter(pk=event.pk).update(dispatched_at=None)
    stored_log.clear()

    assert outbox.sweep(now=event.redeliver_after + dt.timedelta(seconds=1)) == 1

    assert [kwargs["event"].pk for kwargs, _ in stored_log] == [event.pk]


# -- the runway_download command -----------------------------------------------------------------


def test_command_downloads_one_task(api, clock, now_of, downloads, media, capsys):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    downloads["DOWNLOAD_RESULTS"] = True

    call_command("runway_download", "--task", task.task_id)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert capsys.readouterr().out == f"{task}: stored\n"


def test_command_missing_backfills_every_succeeded_task_without_a_stored_result(
    api, clock, now_of, downloads, media, capsys
):
    downloads["DOWNLOAD_RESULTS"] = False
    first = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    second = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    RunwayTask.objects.create(task_id="t-running", route="tracked", status="running")
    downloads["DOWNLOAD_RESULTS"] = True

    call_command("runway_download", "--missing")

    assert set(
        RunwayTask.objects.filter(download_status="stored").values_list("pk", flat=True)
    ) == {
        first.pk,
        second.pk,
    }
    assert capsys.readouterr().out.endswith("Stored 2 result(s); 0 could not be done.\n")


def test_command_reports_a_task_it_cannot_download(api, clock, now_of, downloads):
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))

    with pytest.raises(CommandError) as error:
        call_command("runway_download", "--task", task.task_id)

    assert str(error.value) == (
        f"The result of task {task} is already stored (use force to download it again)."
    )


def test_command_unknown_task_and_no_arguments_are_clear_errors(downloads):
    with pytest.raises(CommandError, match="No task with id or pk 'nope'"):
        call_command("runway_download", "--task", "nope")
    with pytest.raises(CommandError, match="Give --task ID or --missing"):
        call_command("runway_download")


def test_the_scheduled_poll_run_queues_due_download_retries(api, clock, now_of, downloads, media):
    from django_runway_feed import services

    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    downloads["DOWNLOAD_RESULTS"] = True
    RunwayTask.objects.filter(pk=task.pk).update(
        download_status=DownloadStatus.PENDING,
        download_attempts=1,
        download_retry_at=timezone.now() - dt.timedelta(seconds=1),
    )

    services.poll_due_tasks(window=0)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert task.download_attempts == 2


def test_a_crashed_workers_download_is_taken_over_once_its_lease_runs_out(
    api, clock, now_of, downloads, media
):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    downloads["DOWNLOAD_RESULTS"] = True
    # A worker claimed the download (attempt 1) and died without recording anything.
    lease_end = timezone.now() + dt.timedelta(seconds=results.attempt_lease_seconds())
    RunwayTask.objects.filter(pk=task.pk).update(
        download_status=DownloadStatus.PENDING,
        download_attempts=1,
        lease_owner="dead-worker",
        lease_expires_at=lease_end,
    )

    assert results.queue_due_downloads() == 0  # its lease still holds
    assert results.download_result(task.pk).outcome == "skipped"
    with pytest.raises(DownloadUnavailable, match="is in progress"):
        results.queue_download(task)
    assert api.output_requests(task.task_id) == []

    after = lease_end + dt.timedelta(seconds=1)
    assert results.download_result(task.pk, now=after).outcome == "stored"

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.STORED
    assert task.download_attempts == 2
    assert task.lease_owner == ""
    assert len(stored_files(media)) == 1


def test_an_attempts_claim_outlasts_every_fetch_it_may_make(settings):
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "DOWNLOAD_MAX_DURATION": 100,
        "DOWNLOAD_TIMEOUT": (5, 10),
    }

    # Three outputs, each fetched twice at most (before and after asking for fresh URLs),
    # each within DOWNLOAD_MAX_DURATION plus a stalled connect and two reads; a minute spare.
    assert results.attempt_lease_seconds() == 2 * 3 * (100 + 5 + 2 * 10) + 60


@pytest.mark.browser
def test_the_fake_servers_video_plays_in_a_browser(api, browser_page):
    task_id = api.add_task(TaskScript(queued_for=0, run_for=0))

    browser_page.set_content(f'<video id="v" muted src="{api.url}/outputs/{task_id}.mp4"></video>')
    state = browser_page.evaluate(
        """() => new Promise((resolve) => {
            const video = document.getElementById("v");
            const report = () => resolve({width: video.videoWidth, height: video.videoHeight,
                                          duration: video.duration, error: video.error?.code});
            if (video.readyState >= 2 || video.error) report();
            video.addEventListener("loadeddata", report);
            video.addEventListener("error", report);
        })"""
    )

    assert state == {"width": 64, "height": 64, "duration": 1, "error": None}


class PosterFailsStorage(FileSystemStorage):
    """Saves videos, fails on posters: a storage outage in the middle of one task's files."""

    def _save(self, name: str, content: Any) -> str:
        if "-poster" in name:
            raise OSError("disk full")
        return super()._save(name, content)


def test_a_storage_failure_midway_keeps_no_file_and_retries(
    api, clock, now_of, downloads, media, settings
):
    settings.STORAGES = {
        **settings.STORAGES,
        "runway": {
            "BACKEND": "tests.test_downloads.PosterFailsStorage",
            "OPTIONS": {"location": str(media)},
        },
    }

    task = finish(api, clock, now_of, WITH_POSTER)

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.PENDING
    assert task.download_error == "Saving to storage failed: OSError"
    assert task.output_file.name == ""
    assert stored_files(media) == []  # the video saved first was deleted again


def test_an_unexpected_error_is_recorded_not_raised(api, clock, now_of, downloads, media):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    port = api.url.rsplit(":", 1)[1]
    # A host name, so the download needs the resolver, which breaks in a way nobody planned for.
    point_outputs_at(task, f"http://videos.example:{port}/outputs/{task.task_id}.mp4")
    RunwayTask.objects.filter(pk=task.pk).update(download_status=DownloadStatus.PENDING)
    downloads["DOWNLOAD_RESULTS"] = True

    def broken_resolver(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver exploded")

    outcome = results.download_result(
        task.pk, downloader=results.SafeDownloader(resolver=broken_resolver)
    )

    task.refresh_from_db()
    assert outcome.outcome == "retry"
    assert task.download_error == "Unexpected error while downloading: RuntimeError"
    assert task.status == Status.SUCCEEDED
    assert task.lease_owner == ""


def test_a_setting_the_downloader_cannot_read_is_recorded_and_releases_the_claim(
    api, clock, now_of, downloads, media
):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    RunwayTask.objects.filter(pk=task.pk).update(download_status=DownloadStatus.PENDING)
    downloads.update(DOWNLOAD_RESULTS=True, DOWNLOAD_ALLOWED_NETWORKS=["not-a-network"])

    outcome = results.download_result(task.pk)

    task.refresh_from_db()
    assert outcome.outcome == "retry"
    assert task.download_error == "Unexpected error while downloading: ValueError"
    assert task.lease_owner == ""
    assert task.download_retry_at is not None
    assert stored_files(media) == []


def test_queue_download_inside_a_rolled_back_transaction_queues_nothing(
    api, clock, now_of, downloads, media
):
    from django.db import transaction

    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    downloads["DOWNLOAD_RESULTS"] = True

    def queue_then_fail() -> None:
        with transaction.atomic():
            results.queue_download(task)
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        queue_then_fail()

    task.refresh_from_db()
    assert task.download_status == DownloadStatus.NONE
    assert api.output_requests() == []
    assert not TaskEvent.objects.filter(task=task, kind=EventKind.DOWNLOAD_QUEUED).exists()


def test_command_queue_hands_downloads_to_the_cluster(api, clock, now_of, downloads, media, capsys):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    downloads["DOWNLOAD_RESULTS"] = True

    call_command("runway_download", "--task", str(task.pk), "--queue")

    task.refresh_from_db()
    assert capsys.readouterr().out == f"{task}: queued\n"
    # The test cluster is synchronous, so the queued job has already run.
    assert task.download_status == DownloadStatus.STORED
    assert TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_QUEUED).message == (
        "Download queued by runway_download."
    )


def test_command_fails_when_downloads_are_off(api, clock, now_of, settings):
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))

    with pytest.raises(CommandError) as error:
        call_command("runway_download", "--task", task.task_id)

    assert str(error.value) == (
        "Result downloads are off: set RUNWAY_FEED['DOWNLOAD_RESULTS'] = True."
    )


def test_command_exits_1_when_a_download_fails(api, clock, now_of, downloads, capsys):
    downloads["DOWNLOAD_RESULTS"] = False
    task = finish(api, clock, now_of, TaskScript(queued_for=1, run_for=5))
    point_outputs_at(task, "http://10.0.0.1/video.mp4")
    downloads["DOWNLOAD_RESULTS"] = True

    with pytest.raises(CommandError) as error:
        call_command("runway_download", "--task", task.task_id)

    assert str(error.value) == f"The download of task {task} did not complete."
    assert capsys.readouterr().err.startswith(
        f"{task}: failed (Download refused: Refused http://10.0.0.1/video.mp4: 10.0.0.1 is private;"
    )


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, dt.datetime | None]]:
    """The download jobs queued, recorded instead of sent to the broker (none of them runs)."""
    calls: list[tuple[int, dt.datetime | None]] = []
    monkeypatch.setattr(results, "_enqueue", lambda pk, until=None: calls.append((pk, until)))
    return calls


def test_scheduled_run_queues_a_pending_download_once_and_its_job_may_claim_it_early(
    api, clock, now_of, downloads, media, queued
):
    task = finish(api, clock, now_of, WITH_POSTER)
    assert queued == [(task.pk, None)]  # on commit of the success; that job never ran
    queued.clear()
    now = timezone.now()

    assert results.queue_due_downloads(now=now) == 1
    assert results.queue_due_downloads(now=now + dt.timedelta(seconds=60)) == 0  # held for it

    hold = now + dt.timedelta(seconds=results.QUEUED_HOLD_SECONDS)
    assert queued == [(task.pk, hold)]
    # Only the job queued with the hold may claim the task before the hold ends.
    assert results.download_result(task.pk, now=now).outcome == "skipped"
    assert jobs.download_result(task.pk, hold.isoformat())["outcome"] == "stored"


def test_a_download_job_that_never_ran_is_queued_again_after_its_hold(
    api, clock, now_of, downloads, media, queued
):
    task = finish(api, clock, now_of, WITH_POSTER)
    now = timezone.now()
    assert results.queue_due_downloads(now=now) == 1

    later = now + dt.timedelta(seconds=results.QUEUED_HOLD_SECONDS + 1)

    assert results.queue_due_downloads(now=later) == 1
    assert [pk for pk, _hold in queued] == [task.pk, task.pk, task.pk]

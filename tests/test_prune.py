from __future__ import annotations

import datetime as dt
import time
import tracemalloc

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_runway_feed import jobs
from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.pruning import prune_finished_tasks
from django_runway_feed.statuses import Status

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


def make_task(*, status=Status.SUCCEEDED, days_old=0.0, now=NOW, events=1, **fields):
    task = RunwayTask.objects.create(
        route="tracked", status=status, created_at=now - dt.timedelta(days=days_old), **fields
    )
    TaskEvent.objects.bulk_create(
        TaskEvent(task=task, kind=EventKind.TRANSITION, to_status=status, dispatched_at=now)
        for _ in range(events)
    )
    return task


def remaining() -> set[int]:
    return set(RunwayTask.objects.values_list("pk", flat=True))


@pytest.mark.django_db
def test_prune_deletes_old_finished_tasks_and_their_events():
    old = [make_task(status=s, days_old=31, events=2) for s in Status]
    recent = make_task(days_old=29)

    result = prune_finished_tasks(days=30, now=NOW)

    unfinished = {
        t.pk for t in old if t.status in (Status.SUBMITTING, Status.QUEUED, Status.RUNNING)
    }
    assert remaining() == unfinished | {recent.pk}
    assert (result.tasks, result.events, result.files) == (3, 6, 0)
    assert TaskEvent.objects.count() == 2 * 3 + 1


@pytest.mark.django_db
def test_prune_only_given_statuses():
    failed = make_task(status=Status.FAILED, days_old=10)
    make_task(status=Status.SUCCEEDED, days_old=10)

    result = prune_finished_tasks(days=1, statuses=["succeeded", "cancelled"], now=NOW)

    assert result.tasks == 1
    assert remaining() == {failed.pk}


def test_prune_refuses_unfinished_statuses():
    with pytest.raises(ValueError, match=r"^Only finished tasks can be pruned; got running\. "):
        prune_finished_tasks(days=1, statuses=["running", "failed"], now=NOW)


@pytest.mark.django_db
def test_prune_keeps_tasks_with_undelivered_signals():
    task = make_task(days_old=10)
    TaskEvent.objects.create(task=task, kind=EventKind.TRANSITION, to_status=Status.SUCCEEDED)

    result = prune_finished_tasks(days=1, now=NOW)

    assert result.tasks == 0
    assert remaining() == {task.pk}


@pytest.mark.django_db
def test_prune_in_batches_and_stops_after_max_batches():
    for _ in range(5):
        make_task(days_old=10)

    result = prune_finished_tasks(days=1, batch_size=2, max_batches=2, now=NOW)

    assert (result.batches, result.tasks) == (2, 4)
    assert len(remaining()) == 1


@pytest.mark.django_db
def test_prune_dry_run_counts_and_deletes_nothing():
    make_task(days_old=10, events=3)
    make_task(days_old=10, events=0)

    result = prune_finished_tasks(days=1, dry_run=True, now=NOW)

    assert (result.tasks, result.events, result.dry_run) == (2, 3, True)
    assert RunwayTask.objects.count() == 2
    assert TaskEvent.objects.count() == 3


@pytest.mark.django_db
def test_prune_deletes_stored_files(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    storage = storages["default"]
    name = storage.save("runway_feed/2030/01/video.mp4", ContentFile(b"mp4"))
    kept = storage.save("runway_feed/2030/01/recent.mp4", ContentFile(b"mp4"))
    make_task(days_old=10, output_file=name)
    make_task(days_old=0, output_file=kept)

    result = prune_finished_tasks(days=1, now=NOW)

    assert (result.tasks, result.files, result.file_errors) == (1, 1, 0)
    assert not storage.exists(name)
    assert storage.exists(kept)


@pytest.mark.django_db
def test_prune_deletes_the_poster_and_last_frame_too(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    storage = storages["default"]
    video, poster, frame = (
        storage.save(f"runway_feed/2030/01/{name}", ContentFile(b"x"))
        for name in ("v.mp4", "p.png", "f.png")
    )
    make_task(
        days_old=10,
        output_file=video,
        poster_file=poster,
        stored_files=[
            {"kind": "video", "name": video},
            {"kind": "poster", "name": poster},
            {"kind": "last_frame", "name": frame},
        ],
    )

    result = prune_finished_tasks(days=1, now=NOW)

    assert (result.tasks, result.files, result.file_errors) == (1, 3, 0)
    assert not any(storage.exists(name) for name in (video, poster, frame))


@pytest.mark.django_db(transaction=True)
def test_prune_keeps_a_newer_resubmission_and_clears_its_link():
    old = make_task(status=Status.FAILED, days_old=31)
    newer = make_task(days_old=1, resubmitted_from=old)
    chained = make_task(status=Status.FAILED, days_old=40, resubmitted_from=old)

    result = prune_finished_tasks(days=30, now=NOW)

    assert result.tasks == 2
    assert remaining() == {newer.pk}
    newer.refresh_from_db()
    assert newer.resubmitted_from is None
    assert not RunwayTask.objects.filter(pk=chained.pk).exists()


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_runway_prune_reports_what_it_deleted(capsys):
    make_task(days_old=40, events=2, now=timezone.now())
    make_task(status=Status.RUNNING, days_old=40, now=timezone.now())

    call_command("runway_prune", "--days", "30")

    assert capsys.readouterr().out == "Deleted 1 task(s), 2 event(s), 0 file(s).\n"
    assert RunwayTask.objects.get().status == Status.RUNNING


@pytest.mark.django_db
def test_runway_prune_dry_run(capsys):
    make_task(days_old=40, events=2, now=timezone.now())

    call_command("runway_prune", "--days", "30", "--dry-run", "--status", "succeeded")

    assert capsys.readouterr().out == "Would delete 1 task(s), 2 event(s), 0 file(s) (dry run).\n"
    assert RunwayTask.objects.count() == 1


@pytest.mark.django_db
def test_runway_prune_defaults_to_setting(settings, capsys):
    settings.RUNWAY_FEED = {"API_KEY": "k", "PRUNE_AFTER_DAYS": 7}
    make_task(days_old=8, now=timezone.now())
    make_task(days_old=6, now=timezone.now())

    call_command("runway_prune", "--batch-size", "1")

    assert capsys.readouterr().out == "Deleted 1 task(s), 1 event(s), 0 file(s).\n"


@pytest.mark.django_db
def test_runway_prune_without_days_is_an_error():
    with pytest.raises(
        CommandError, match=r"Pass --days N \(or set RUNWAY_FEED\['PRUNE_AFTER_DAYS'\]\)\."
    ):
        call_command("runway_prune")


@pytest.mark.django_db
def test_runway_prune_rejects_unfinished_status():
    with pytest.raises(CommandError, match="invalid choice: 'running'"):
        call_command("runway_prune", "--days", "1", "--status", "running")


# -- the scheduled job ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_scheduled_job_prunes_a_batch_when_prune_after_days_set(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "PRUNE_AFTER_DAYS": 30}
    now = timezone.now()
    old = make_task(days_old=31, now=now)
    young = make_task(days_old=1, now=now)

    jobs.poll_due_tasks(window=0)

    assert remaining() == {young.pk}
    assert not TaskEvent.objects.filter(task_id=old.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_scheduled_job_does_not_prune_without_setting(api):
    make_task(days_old=3650, now=timezone.now())

    jobs.poll_due_tasks(window=0)

    assert RunwayTask.objects.count() == 1


# -- scale ---------------------------------------------------------------------------------------

TOTAL = 100_000
UNFINISHED_EVERY = 100  # 1,000 old unfinished tasks that must survive
CHUNK = 5_000


def _bulk_create_tasks() -> int:
    old = NOW - dt.timedelta(days=90)
    unfinished = 0
    for start in range(0, TOTAL, CHUNK):
        rows = []
        for i in range(start, start + CHUNK):
            keep = i % UNFINISHED_EVERY == 0
            unfinished += keep
            rows.append(
                RunwayTask(
                    route="tracked",
                    status=Status.RUNNING if keep else Status.SUCCEEDED,
                    created_at=old,
                    result_url=f"https://cdn.example/{i}.mp4",
                )
            )
        RunwayTask.objects.bulk_create(rows)
    return unfinished


@pytest.mark.slow
@pytest.mark.django_db
def test_prune_100k_tasks_in_bounded_memory(capsys):
    unfinished = _bulk_create_tasks()
    # Events for a slice of them, so the cascade path is exercised at scale too.
    some = list(RunwayTask.objects.finished().values_list("pk", flat=True)[:10_000])
    TaskEvent.objects.bulk_create(
        (
            TaskEvent(
                task_id=pk, kind=EventKind.TRANSITION, to_status="succeeded", dispatched_at=NOW
            )
            for pk in some
        ),
        batch_size=CHUNK,
    )

    started = time.perf_counter()
    tracemalloc.start()
    try:
        result = prune_finished_tasks(days=30, batch_size=2_000, now=NOW)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started

    with capsys.disabled():
        print(f"\nprune of {result.tasks} tasks: peak {peak / 1e6:.2f} MB traced, {elapsed:.1f} s")
    assert result.tasks == TOTAL - unfinished
    assert result.events == 10_000
    assert RunwayTask.objects.count() == unfinished
    assert set(RunwayTask.objects.values_list("status", flat=True)) == {Status.RUNNING}
    # Loading every row would take hundreds of MB and even every pk alone ~4 MB; a batch of
    # 2,000 pks plus query machinery stays far below this.
    assert peak < 3_000_000


@pytest.mark.django_db
def test_prune_pages_past_kept_tasks_created_at_the_same_moment():
    # Pages are keyed on (created_at, pk): a kept task does not stop the walk, nor do ties.
    kept = make_task(days_old=10)
    TaskEvent.objects.create(task=kept, kind=EventKind.TRANSITION, to_status=Status.SUCCEEDED)
    for _ in range(4):
        make_task(days_old=10)

    result = prune_finished_tasks(days=1, batch_size=2, now=NOW)

    assert result.tasks == 4
    assert remaining() == {kept.pk}


@pytest.mark.django_db
def test_prune_pages_oldest_first_within_the_cutoff():
    make_task(days_old=0.5)  # younger than the cutoff: never in a page

    with CaptureQueriesContext(connection) as captured:
        result = prune_finished_tasks(days=1, max_batches=1, now=NOW)

    assert result.tasks == 0
    [page] = [q["sql"] for q in captured.captured_queries if "ORDER BY" in q["sql"]]
    # In creation order: an idle run reads an empty range of an index, not the rest of the key's.
    assert (
        page.split("ORDER BY")[1]
        .lstrip()
        .startswith(('"django_runway_feed_runwaytask"."created_at" ASC', "1 ASC"))
    )

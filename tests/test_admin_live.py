"""The admin's presentation details (seconds, "-" for empty values, short ids, the summary's
age) and the live JSON view the list and the task page poll."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_runway_feed/runwaytask/"
LIVE = f"{CHANGELIST}live/"
EVENTS = "/admin/django_runway_feed/taskevent/"


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_runway_feed", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def tasks(count: int, prefix: str = "t") -> list[RunwayTask]:
    return RunwayTask.objects.bulk_create(
        RunwayTask(
            task_id=f"{prefix}-{i}", route="tracked", status=Status.RUNNING, progress=i % 100
        )
        for i in range(count)
    )


def live(client: Client, *ids: int, summary: bool = False) -> dict:
    query = f"?ids={','.join(map(str, ids))}" + ("&summary=1" if summary else "")
    response = client.get(LIVE + query)
    assert response.status_code == 200
    return response.json()


def summary_queries() -> int:
    from django.contrib.admin import site

    with CaptureQueriesContext(connection) as queries:
        site._registry[RunwayTask].summary()
    return len(queries)


def live_queries(client: Client, ids: list[int]) -> int:
    with CaptureQueriesContext(connection) as queries:
        live(client, *ids, summary=True)
    return len(queries)


# -- presentation -----------------------------------------------------------------------------


def test_task_page_times_show_seconds(admin_client):
    created = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    task = RunwayTask.objects.create(task_id="t", route="tracked")
    RunwayTask.objects.filter(pk=task.pk).update(created_at=created)

    html = admin_client.get(f"{CHANGELIST}{task.pk}/change/").content.decode()

    assert (
        '<time class="rf-time" datetime="2030-01-02T03:04:05+00:00">2030-01-02 03:04:05</time>'
        in (html)
    )


def test_task_page_shows_a_dash_for_empty_values(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.QUEUED)

    html = admin_client.get(f"{CHANGELIST}{task.pk}/change/").content.decode()

    # No host object, no output, never finished: the admin's empty value, not a blank.
    assert '<div class="readonly">-</div>' in html
    assert '<div class="readonly"></div>' not in html
    assert '<div class="readonly">None</div>' not in html


def test_changelist_shows_a_dash_for_an_empty_prompt_and_error(admin_client):
    RunwayTask.objects.create(task_id="t", route="tracked", status=Status.QUEUED)

    html = admin_client.get(CHANGELIST).content.decode()

    assert '<td class="field-prompt_excerpt">-</td>' in html
    assert '<td class="field-last_error_excerpt">-</td>' in html
    assert '<td class="field-host_object">-</td>' in html


def test_summary_gives_seconds_for_a_recent_poll(admin_client):
    PollerState.objects.create(pk=1, last_success_at=timezone.now() - dt.timedelta(seconds=12))

    html = admin_client.get(CHANGELIST).content.decode()

    assert ">12 s ago</time>" in html
    assert "0\xa0minutes" not in html


def test_event_list_shows_short_task_ids_with_seconds(admin_client):
    task = RunwayTask.objects.create(
        task_id="3d957031-aaaa-bbbb-cccc-1234567890ab", route="tracked"
    )
    TaskEvent.objects.create(task=task, kind=EventKind.MANUAL_POLL, message="m")

    html = admin_client.get(EVENTS).content.decode()

    assert 'title="3d957031-aaaa-bbbb-cccc-1234567890ab">3d957031</a>' in html
    assert "3d957031-aaaa-bbbb-cccc-1234567890ab (" not in html
    assert '<time class="rf-time"' in html


def test_list_and_task_page_mark_live_cells_and_load_the_script(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    for url in (CHANGELIST, f"{CHANGELIST}{task.pk}/change/"):
        html = admin_client.get(url).content.decode()
        assert f'data-rf-task="{task.pk}" data-rf-field="status"' in html
        assert f'data-rf-task="{task.pk}" data-rf-field="progress"' in html
        assert f'data-url="{LIVE}"' in html


# -- the live view ----------------------------------------------------------------------------


def test_live_view_returns_status_label_and_progress(admin_client):
    task = RunwayTask.objects.create(
        task_id="t", route="tracked", status=Status.RUNNING, progress=42
    )

    data = live(admin_client, task.pk)

    assert data == {
        "tasks": {str(task.pk): {"status": "running", "label": "Running", "progress": 42}}
    }


def test_live_view_follows_a_status_change(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)
    live(admin_client, task.pk)

    RunwayTask.objects.filter(pk=task.pk).update(status=Status.SUCCEEDED, progress=100)

    assert live(admin_client, task.pk)["tasks"][str(task.pk)]["status"] == "succeeded"


def test_live_view_is_never_cached(admin_client):
    response = admin_client.get(LIVE)

    assert "no-cache" in response["Cache-Control"]
    assert "no-store" in response["Cache-Control"]


def test_live_view_summary_counts_and_last_poll(admin_client):
    tasks(3)
    PollerState.objects.create(pk=1, last_success_at=timezone.now() - dt.timedelta(seconds=5))

    summary = live(admin_client, summary=True)["summary"]

    assert summary["counts"]["running"] == "3"
    assert summary["unfinished"] == 3
    assert summary["last_success"] == "5 s ago"
    assert summary["paused"] == ""


def test_live_view_ignores_bad_ids(admin_client):
    [task] = tasks(1)

    response = admin_client.get(f"{LIVE}?ids=x,{task.pk},-1,,9999999")

    assert list(response.json()["tasks"]) == [str(task.pk)]


def test_live_view_runs_the_same_queries_for_1_and_100_tasks(admin_client):
    few = [t.pk for t in tasks(1)]
    one = live_queries(admin_client, few)

    many = [t.pk for t in tasks(100, prefix="more")]

    assert live_queries(admin_client, many) == one
    # The session, the user and the tasks, plus what the list's own summary reads.
    assert one == 3 + summary_queries()


def test_live_view_answers_viewers():
    client = staff_client("view_runwaytask")

    assert client.get(LIVE).status_code == 200


def test_live_view_refuses_staff_without_view_permission():
    client = staff_client()

    assert client.get(LIVE).status_code == 403


def test_live_view_sends_anonymous_users_to_login(client):
    response = client.get(LIVE)

    assert response.status_code == 302
    assert "/login/" in response["Location"]

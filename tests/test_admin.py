"""The admin: list and task page content, escaping, query counts, actions and permissions."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_runway_feed.admin import task_summary
from django_runway_feed.admin import tasks as admin_module
from django_runway_feed.admin.display import duration, web_url
from django_runway_feed.admin.filters import FailureCodeFilter
from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.pause import settings_fingerprint
from django_runway_feed.statuses import FailureCode, Status
from django_runway_feed.testing import TaskScript
from tests.testapp.models import Product, SignalRecord

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_runway_feed/runwaytask/"
EVENTS = "/admin/django_runway_feed/taskevent/"


def change_url(task: RunwayTask) -> str:
    return f"{CHANGELIST}{task.pk}/change/"


def action_url(task: RunwayTask, action: str) -> str:
    return f"{CHANGELIST}{task.pk}/actions/{action}/"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_runway_feed", codename__in=codenames
        )
    )
    return user


def client_for(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def make_tasks(count: int, product: Product, prefix: str = "task") -> list[RunwayTask]:
    ct = ContentType.objects.get_for_model(Product)
    now = timezone.now()
    statuses = list(Status)
    tasks = RunwayTask.objects.bulk_create(
        RunwayTask(
            task_id=f"{prefix}-{i:05d}",
            route="generate",
            status=statuses[i % len(statuses)],
            progress=i % 101,
            prompt=f"prompt number {i}",
            request={"prompt": f"prompt number {i}"},
            content_type=ct,
            object_id=str(product.pk),
            created_at=now - dt.timedelta(minutes=i),
            last_error="ReadTimeout" if i % 7 == 0 else "",
        )
        for i in range(count)
    )
    return tasks


def add_events(task: RunwayTask, count: int) -> None:
    now = timezone.now()
    TaskEvent.objects.bulk_create(
        TaskEvent(
            task=task,
            kind=EventKind.TRANSITION,
            from_status="queued",
            to_status="running",
            progress=i % 100,
            message=f"event {i}",
            created_at=now + dt.timedelta(seconds=i),
            dispatched_at=now,
        )
        for i in range(count)
    )


def query_count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


# -- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example.com/v.mp4", "https://cdn.example.com/v.mp4"),
        ("HTTP://cdn.example.com/v.mp4", "http://cdn.example.com/v.mp4"),
        ("javascript:alert(1)", None),
        (" javascript:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        ("data:text/html,<script>alert(1)</script>", None),
        ("http:alert(1)", None),
        ("/media/runway/v.mp4", None),
        ("", None),
        (None, None),
    ],
)
def test_web_url_accepts_only_http_and_https_with_a_host(url, expected):
    assert web_url(url) == expected


def test_web_url_allows_a_site_path_only_for_storage_urls():
    assert web_url("/media/runway/v.mp4", allow_path=True) == "/media/runway/v.mp4"
    assert web_url("javascript:alert(1)", allow_path=True) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (125, "2 min"), (3600, "1 h"), (3900, "1 h 5 min"), (90000, "1 d 1 h")],
)
def test_duration_is_compact(seconds, text):
    assert duration(seconds) == text


# -- changelist -------------------------------------------------------------------------------


def test_changelist_shows_badges_progress_excerpts_and_host_links(admin_client):
    product = Product.objects.create(name="Board")
    RunwayTask.objects.create(
        task_id="3d957031-aaaa-bbbb-cccc-1234567890ab",
        route="generate",
        status=Status.RUNNING,
        progress=40,
        prompt="a cat surfing a wave " * 10,
        poll_count=7,
        last_error="ReadTimeout: the read timed out",
        content_type=ContentType.objects.get_for_model(Product),
        object_id=str(product.pk),
    )

    response = admin_client.get(CHANGELIST)

    html = response.content.decode()
    assert '<span title="3d957031-aaaa-bbbb-cccc-1234567890ab">3d957031</span>' in html
    assert '<span class="rf-badge rf-badge--running">Running</span>' in html
    assert 'aria-valuenow="40"' in html
    assert 'style="width: 40%"' in html
    [short] = re.findall(
        r'<td class="field-prompt_excerpt"><span title="[^"]*">([^<]*)</span>', html
    )
    assert len(short) == 60
    assert short.startswith("a cat surfing a wave a cat")
    assert short.endswith("…")
    assert f'<a href="/admin/testapp/product/{product.pk}/change/">product #{product.pk}</a>' in (
        html
    )
    assert "ReadTimeout: the read timed out" in html
    assert '<td class="field-poll_count">7</td>' in html
    assert "min old" in html or " s old" in html
    assert "django_runway_feed/admin.css" in html


def test_changelist_summary_counts_statuses_and_shows_poller_health(admin_client):
    for status in ["queued", "queued", "running", "succeeded", "failed"]:
        RunwayTask.objects.create(route="tracked", status=status)
    last = timezone.now() - dt.timedelta(minutes=3)
    PollerState.objects.create(pk=1, last_success_at=last)

    response = admin_client.get(CHANGELIST)

    summary = response.context["runway_summary"]
    assert {row["status"]: row["count"] for row in summary["counts"]} == {
        "submitting": 0,
        "queued": 2,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert summary["unfinished"] == 3
    assert summary["paused_until"] is None
    html = response.content.decode()
    assert '<strong class="rf-summary__unfinished">3</strong>' in html
    assert '<time class="rf-summary__last"' in html
    assert ">3 min ago</time>" in html
    assert "Polling is paused" not in html


def test_changelist_summary_shows_the_api_pause(admin_client):
    until = timezone.now() + dt.timedelta(minutes=10)
    PollerState.objects.create(pk=1, paused_until=until, pause_reason="401 <b>Invalid</b> token")

    response = admin_client.get(CHANGELIST)

    html = response.content.decode()
    assert "Polling is paused until" in html
    assert "401 &lt;b&gt;Invalid&lt;/b&gt; token" in html


def test_changelist_summary_ignores_a_pause_that_ended(admin_client):
    PollerState.objects.create(
        pk=1, paused_until=timezone.now() - dt.timedelta(minutes=1), pause_reason="401"
    )

    response = admin_client.get(CHANGELIST)

    assert "Polling is paused" not in response.content.decode()


def test_changelist_summary_ignores_a_pause_for_a_key_since_replaced(admin_client, settings):
    until = timezone.now() + dt.timedelta(minutes=10)
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "old-key"}
    PollerState.objects.create(
        pk=1, paused_until=until, pause_reason="401", pause_fingerprint=settings_fingerprint()
    )
    assert "Polling is paused" in admin_client.get(CHANGELIST).content.decode()

    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "new-key"}

    assert "Polling is paused" not in admin_client.get(CHANGELIST).content.decode()


def test_changelist_get_never_creates_the_poller_row(admin_client):
    admin_client.get(CHANGELIST)

    assert not PollerState.objects.exists()


def test_admin_stuck_filter_lists_only_old_unfinished_tasks(admin_client):
    old = timezone.now() - dt.timedelta(hours=2)
    stuck = RunwayTask.objects.create(
        task_id="stuck-1", route="tracked", status=Status.RUNNING, submitted_at=old
    )
    RunwayTask.objects.create(task_id="fresh-1", route="tracked", status=Status.RUNNING)
    RunwayTask.objects.create(
        task_id="done-1", route="tracked", status=Status.SUCCEEDED, submitted_at=old
    )

    response = admin_client.get(f"{CHANGELIST}?stuck=yes")

    assert response.status_code == 200
    assert [task.pk for task in response.context["cl"].result_list] == [stuck.pk]


@pytest.mark.parametrize(
    ("value", "expected"), [("url", ["with-url"]), ("stored", ["stored"]), ("none", ["none"])]
)
def test_output_filter(admin_client, value, expected):
    RunwayTask.objects.create(task_id="with-url", route="tracked", result_url="https://x.io/v")
    RunwayTask.objects.create(task_id="stored", route="tracked", output_file="runway/v.mp4")
    RunwayTask.objects.create(task_id="none", route="tracked")

    response = admin_client.get(f"{CHANGELIST}?output={value}")

    assert [task.task_id for task in response.context["cl"].result_list] == expected


def test_changelist_filters_and_search(admin_client):
    RunwayTask.objects.create(
        task_id="alpha", route="generate", status="failed", failure_code="SAFETY.INPUT.TEXT"
    )
    RunwayTask.objects.create(
        task_id="beta", route="act_one", status="failed", fail_reason="quota exceeded"
    )
    RunwayTask.objects.create(task_id="gamma", route="tracked", status="running", prompt="cat")

    def listed(query: str) -> list[str]:
        response = admin_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200
        return sorted(task.task_id for task in response.context["cl"].result_list)

    assert listed("status__exact=failed") == ["alpha", "beta"]
    assert listed("route__exact=act_one") == ["beta"]
    assert listed("failure_code=SAFETY.INPUT.TEXT") == ["alpha"]
    assert listed("q=cat") == ["gamma"]
    assert listed("q=alpha") == ["alpha"]  # the task id, exactly
    assert listed("q=alph") == []  # ids are matched whole: a part would read every row
    assert listed("q=quota") == []  # the failure reason is not searched


def test_search_matches_a_row_number_exactly(admin_client):
    first = RunwayTask.objects.create(task_id="one", route="tracked", prompt="a dog")
    RunwayTask.objects.create(task_id=f"{first.pk}0", route="tracked", prompt="a cat")

    response = admin_client.get(f"{CHANGELIST}?q={first.pk}")

    assert [task.task_id for task in response.context["cl"].result_list] == ["one"]


def test_search_needs_every_word_of_the_prompt(admin_client):
    RunwayTask.objects.create(task_id="both", route="tracked", prompt="A Cat surfing at dawn")
    RunwayTask.objects.create(task_id="one", route="tracked", prompt="a cat sleeping")

    response = admin_client.get(f"{CHANGELIST}?q=cat+surfing")

    assert [task.task_id for task in response.context["cl"].result_list] == ["both"]


def test_failure_code_filter_offers_the_codes_in_use_with_their_labels(admin_client):
    RunwayTask.objects.create(
        task_id="a", route="generate", status="failed", failure_code="SAFETY.INPUT.TEXT"
    )
    RunwayTask.objects.create(
        task_id="b", route="tracked", status="cancelled", failure_code=FailureCode.STOPPED
    )
    RunwayTask.objects.create(task_id="c", route="tracked", status="succeeded")

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    [spec] = [f for f in response.context["cl"].filter_specs if isinstance(f, FailureCodeFilter)]
    assert spec.lookup_choices == [
        ("SAFETY.INPUT.TEXT", "SAFETY.INPUT.TEXT"),
        ("stopped", "Stopped by an operator"),
    ]
    # The codes are read from the latest failed and cancelled tasks only, a bounded number.
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "django_runway_feed_runwaytask"."failure_code"')
    ]
    assert len(reads) == 2
    assert all("LIMIT 500" in sql for sql in reads)


def test_failure_code_filter_keeps_offering_the_chosen_code(admin_client):
    response = admin_client.get(f"{CHANGELIST}?failure_code=timeout")

    [spec] = [f for f in response.context["cl"].filter_specs if isinstance(f, FailureCodeFilter)]
    assert spec.lookup_choices == [("timeout", "Gave up: task timeout")]


def test_changelist_runs_the_same_queries_for_10_and_1000_tasks(admin_client):
    product = Product.objects.create(name="Board")
    make_tasks(10, product)
    PollerState.objects.create(pk=1, last_success_at=timezone.now())
    small = query_count(admin_client, CHANGELIST)

    make_tasks(990, product, prefix="more")
    large = query_count(admin_client, CHANGELIST)

    assert large == small
    filtered = query_count(admin_client, f"{CHANGELIST}?status__exact=running&output=none")
    assert filtered <= small + 1


@pytest.mark.parametrize(
    "query", ["q=prompt", "q=task-00003", f"created_at__year={dt.date.today().year}", "stuck=yes"]
)
def test_searched_and_drilled_down_lists_run_the_same_queries_for_10_and_100_tasks(
    admin_client, query
):
    product = Product.objects.create(name="Board")
    make_tasks(10, product)
    small = query_count(admin_client, f"{CHANGELIST}?{query}")

    make_tasks(90, product, prefix="more")

    assert query_count(admin_client, f"{CHANGELIST}?{query}") == small


def test_date_links_offer_every_month_between_the_first_and_last_task(admin_client):
    for month in (2, 5):
        RunwayTask.objects.create(
            task_id=f"m{month}",
            route="tracked",
            created_at=dt.datetime(2030, month, 10, tzinfo=dt.UTC),
        )

    html = admin_client.get(CHANGELIST).content.decode()

    # One year only: its months, from the first task's to the last's, empty ones included.
    for month in ("February", "March", "April", "May"):
        assert f"{month} 2030" in html
    assert "January 2030" not in html
    assert "June 2030" not in html


def test_date_links_offer_years_then_the_days_of_a_month(admin_client):
    for day in (dt.date(2029, 12, 30), dt.date(2030, 2, 3), dt.date(2030, 2, 5)):
        RunwayTask.objects.create(
            task_id=str(day),
            route="tracked",
            created_at=dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC),
        )

    years = admin_client.get(CHANGELIST).content.decode()
    days = admin_client.get(f"{CHANGELIST}?created_at__year=2030&created_at__month=2")

    assert "?created_at__year=2029" in years
    assert "?created_at__year=2030" in years
    html = days.content.decode()
    assert [t.task_id for t in days.context["cl"].result_list] == ["2030-02-05", "2030-02-03"]
    for day in (3, 4, 5):
        assert f"created_at__day={day}" in html
    assert "created_at__day=6" not in html


def test_unfiltered_changelist_takes_its_count_from_the_summary(admin_client):
    product = Product.objects.create(name="Board")
    make_tasks(120, product)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    # The summary's: one GROUP BY of the unfinished statuses, one bounded count per finished
    # status; no COUNT(*) of the whole table.
    assert "GROUP BY" in counts[0]
    assert "IN (" in counts[0].split("WHERE", 1)[1]
    assert len(counts) == 4
    assert all("LIMIT 10001" in sql for sql in counts[1:])
    cl = response.context["cl"]
    assert (cl.result_count, cl.paginator.num_pages) == (120, 3)
    assert "120 Runway tasks" in response.content.decode()
    # The latest rows first (make_tasks makes each older than the one before).
    assert [t.task_id for t in cl.result_list[:2]] == ["task-00000", "task-00001"]


def test_changelist_orders_by_creation_time_newest_first(admin_client):
    now = timezone.now()
    RunwayTask.objects.create(task_id="old", route="tracked", created_at=now - dt.timedelta(days=9))
    RunwayTask.objects.create(task_id="new", route="tracked", created_at=now)
    RunwayTask.objects.create(
        task_id="older", route="tracked", created_at=now - dt.timedelta(days=99)
    )

    response = admin_client.get(CHANGELIST)

    assert [t.task_id for t in response.context["cl"].result_list] == ["new", "old", "older"]


@pytest.mark.parametrize("url", [CHANGELIST, f"{CHANGELIST}?status__exact=succeeded"])
def test_changelist_counts_past_the_limit_say_more_than(admin_client, monkeypatch, url):
    monkeypatch.setattr(task_summary, "COUNT_LIMIT", 5)
    monkeypatch.setattr(admin_module.BoundedPaginator, "limit", 5)
    RunwayTask.objects.bulk_create(
        RunwayTask(task_id=f"t{i}", route="tracked", status="succeeded") for i in range(7)
    )

    response = admin_client.get(url)

    cl = response.context["cl"]
    assert cl.result_count == 6  # counted up to the limit + 1
    html = response.content.decode()
    assert "More than 5 Runway tasks" in html
    assert "6 Runway tasks" not in html


def test_summary_counts_finished_statuses_up_to_the_limit(admin_client, monkeypatch):
    monkeypatch.setattr(task_summary, "COUNT_LIMIT", 5)
    RunwayTask.objects.bulk_create(
        RunwayTask(task_id=f"t{i}", route="tracked", status="succeeded") for i in range(7)
    )
    RunwayTask.objects.create(task_id="q", route="tracked", status="queued")

    response = admin_client.get(CHANGELIST)

    summary = response.context["runway_summary"]
    rows = {row["status"]: (row["count"], row["more_than"]) for row in summary["counts"]}
    assert rows["succeeded"] == (5, True)
    assert rows["queued"] == (1, False)
    assert summary["total"] is None
    html = response.content.decode()
    assert "more than 5" in html
    assert "Counts are exact up to 5" in html


def test_search_past_the_limit_says_more_than(admin_client, monkeypatch):
    monkeypatch.setattr(admin_module.BoundedPaginator, "limit", 2)
    RunwayTask.objects.bulk_create(
        RunwayTask(task_id=f"t{i}", route="tracked", prompt="a fox") for i in range(4)
    )

    response = admin_client.get(f"{CHANGELIST}?q=fox")

    assert "more than 2 results" in response.content.decode()


def test_filtered_changelist_counts_the_filtered_rows(admin_client):
    product = Product.objects.create(name="Board")
    make_tasks(120, product)

    response = admin_client.get(f"{CHANGELIST}?status__exact=running")

    assert response.context["cl"].result_count == 20
    assert "20 results" in response.content.decode()


def test_changelist_queries_do_not_grow_with_the_host_models(admin_client):
    product = Product.objects.create(name="Board")
    make_tasks(10, product)
    small = query_count(admin_client, CHANGELIST)
    # Hosts of several models: registered (users), not registered (signal records), and a
    # content type whose model is gone.
    stale = ContentType.objects.create(app_label="gone", model="oldmodel")
    hosts = [
        ContentType.objects.get_for_model(User),
        ContentType.objects.get_for_model(SignalRecord),
        stale,
    ]
    more = make_tasks(990, product, prefix="more")
    for i, task in enumerate(more):
        task.content_type = hosts[i % len(hosts)]
        task.object_id = str(i)
    RunwayTask.objects.bulk_update(more, ["content_type", "object_id"])

    response = admin_client.get(CHANGELIST)
    large = query_count(admin_client, CHANGELIST)

    assert large == small
    html = response.content.decode()
    assert re.search(r'<a href="/admin/auth/user/\d+/change/">user #\d+</a>', html)
    assert re.search(r"signal record #\d+</td>", html)
    assert re.search(r"oldmodel #\d+</td>", html)


# -- task page --------------------------------------------------------------------------------


def test_task_page_is_read_only_but_metadata(admin_client):
    task = RunwayTask.objects.create(task_id="t-1", route="tracked", status=Status.QUEUED)

    response = admin_client.get(change_url(task))

    assert response.status_code == 200
    assert b'name="task_id"' not in response.content
    assert b'name="status"' not in response.content
    assert b'name="metadata"' in response.content
    form = response.context["adminform"].form
    assert list(form.fields) == ["metadata"]


def test_task_page_saves_metadata_and_nothing_else(admin_client):
    task = RunwayTask.objects.create(task_id="t-1", route="tracked", status=Status.QUEUED)

    response = admin_client.post(
        change_url(task), {"metadata": '{"order": 12}', "status": "succeeded", "task_id": "x"}
    )

    assert response.status_code == 302
    task.refresh_from_db()
    assert task.metadata == {"order": 12}
    assert (task.status, task.task_id) == ("queued", "t-1")


def test_task_page_shows_json_video_poster_and_links(admin_client):
    product = Product.objects.create(name="Board")
    task = RunwayTask.objects.create(
        task_id="t-1",
        route="generate",
        status=Status.SUCCEEDED,
        progress=100,
        request={"prompt": "a cat", "seconds": 5},
        last_response={"code": "success", "data": {"status": "SUCCESS"}},
        result_url="https://cdn.example.com/v.mp4",
        outputs=[
            {"kind": "video", "url": "https://cdn.example.com/v.mp4"},
            {"kind": "poster", "url": "https://cdn.example.com/p.jpg"},
        ],
        content_type=ContentType.objects.get_for_model(Product),
        object_id=str(product.pk),
    )

    html = admin_client.get(change_url(task)).content.decode()

    assert (
        '<video class="rf-video" controls preload="metadata" '
        'src="https://cdn.example.com/v.mp4" poster="https://cdn.example.com/p.jpg"></video>'
    ) in html
    assert '<pre class="rf-json">{\n  &quot;prompt&quot;: &quot;a cat&quot;,' in html
    assert "&quot;status&quot;: &quot;SUCCESS&quot;" in html
    assert 'poster: <a href="https://cdn.example.com/p.jpg"' in html
    assert f'<a href="/admin/testapp/product/{product.pk}/change/">Board</a>' in html


def test_task_page_plays_the_stored_copy_when_there_is_one(admin_client, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path), "base_url": "/media/"},
        },
    }
    task = RunwayTask.objects.create(
        task_id="t-1",
        route="generate",
        status=Status.SUCCEEDED,
        result_url="https://cdn.example.com/v.mp4",
        output_file="runway_feed/2026/11/t-1.mp4",
        stored_files=[
            {"kind": "video", "name": "runway_feed/2026/11/t-1.mp4", "size": 10},
            {"kind": "poster", "name": "runway_feed/2026/11/t-1.jpg", "size": 3},
        ],
    )

    html = admin_client.get(change_url(task)).content.decode()

    assert 'src="/media/runway_feed/2026/11/t-1.mp4"' in html
    assert 'poster="/media/runway_feed/2026/11/t-1.jpg"' in html
    assert "stored copy" in html


def test_task_page_links_resubmissions_both_ways(admin_client):
    old = RunwayTask.objects.create(task_id="old", route="generate", status="failed")
    new = RunwayTask.objects.create(task_id="new", route="generate", resubmitted_from=old)

    old_html = admin_client.get(change_url(old)).content.decode()
    new_html = admin_client.get(change_url(new)).content.decode()

    assert f'<a href="{change_url(new)}">new (submitting)</a>' in old_html
    assert f'<a href="{change_url(old)}">old (failed)</a>' in new_html


def test_task_page_timeline_shows_the_latest_events_and_links_to_all(admin_client):
    task = RunwayTask.objects.create(task_id="t-1", route="tracked", status=Status.RUNNING)
    add_events(task, 60)

    response = admin_client.get(change_url(task))

    events = response.context["runway_events"]
    assert len(events) == 50
    assert events[0].message == "event 59"
    assert response.context["runway_event_count"] == 60
    html = response.content.decode()
    assert "The latest 50 of 60 events, newest first." in html
    assert f'href="{EVENTS}?task__id__exact={task.pk}"' in html
    assert "event 10</td>" in html
    assert "event 9</td>" not in html


def test_task_page_runs_the_same_queries_for_5_and_500_events(admin_client):
    product = Product.objects.create(name="Board")
    small_task, large_task = make_tasks(2, product)
    add_events(small_task, 5)
    add_events(large_task, 500)
    RunwayTask.objects.filter(pk=large_task.pk).update(status=small_task.status)
    query_count(admin_client, change_url(small_task))  # warm per-process caches (content types)

    assert query_count(admin_client, change_url(large_task)) == query_count(
        admin_client, change_url(small_task)
    )


def test_task_page_runs_the_same_queries_for_10_and_1000_tasks(admin_client):
    product = Product.objects.create(name="Board")
    [task, *_rest] = make_tasks(10, product)
    query_count(admin_client, change_url(task))  # warm per-process caches (content types)
    small = query_count(admin_client, change_url(task))

    make_tasks(990, product, prefix="more")
    RunwayTask.objects.exclude(pk=task.pk).update(resubmitted_from=task)

    assert query_count(admin_client, change_url(task)) == small


# -- escaping ---------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def hostile_task() -> RunwayTask:
    task = RunwayTask.objects.create(
        task_id='"><img src=x onerror=alert(1)>',
        route="generate",
        status=Status.FAILED,
        prompt=f"{HOSTILE} a cat",
        fail_reason=f"{HOSTILE} flagged",
        last_error=f"{HOSTILE} error",
        failure_code=HOSTILE,
        result_url="javascript:alert(1)",
        outputs=[
            {"kind": "video", "url": "javascript:alert(1)"},
            {"kind": f"poster{HOSTILE}", "url": "java\nscript:alert(2)"},
        ],
        request={"prompt": HOSTILE},
        last_response={"data": {"fail_reason": HOSTILE}},
        metadata={"note": HOSTILE},
    )
    TaskEvent.objects.create(task=task, kind="transition", to_status="failed", message=HOSTILE)
    return task


def assert_inert(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html.lower()
    assert 'src="javascript:' not in html.lower()
    assert "poster=" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_hostile_values_render_inert_in_the_changelist(admin_client, hostile_task):
    html = admin_client.get(CHANGELIST).content.decode()

    assert_inert(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a cat" in html


def test_hostile_values_render_inert_on_the_task_page(admin_client, hostile_task):
    html = admin_client.get(change_url(hostile_task)).content.decode()

    assert_inert(html)
    assert "<video" not in html
    assert '<code class="rf-inert" title="Not an http(s) URL: not linked.">javascript:alert(1)' in (
        html
    )


def test_hostile_values_render_inert_in_the_event_list(admin_client, hostile_task):
    html = admin_client.get(EVENTS).content.decode()

    assert "<script>alert" not in html
    assert "<img src=x" not in html


# -- actions on the list ----------------------------------------------------------------------


def run_list_action(client: Client, action: str, *tasks: RunwayTask) -> Any:
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [task.pk for task in tasks]},
        follow=True,
    )


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_list_action_stop_reports_done_and_skipped(admin_client):
    running = RunwayTask.objects.create(task_id="r", route="tracked", status=Status.RUNNING)
    done = RunwayTask.objects.create(task_id="d", route="tracked", status=Status.SUCCEEDED)

    response = run_list_action(admin_client, "stop_action", running, done)

    assert messages_of(response) == ["Stopped 1 task. Skipped 1 task: already finished."]
    running.refresh_from_db()
    assert (running.status, running.failure_code) == ("cancelled", FailureCode.STOPPED)
    assert running.fail_reason.startswith("Stopped by admin: no longer tracked.")
    assert RunwayTask.objects.get(pk=done.pk).status == Status.SUCCEEDED
    assert TaskEvent.objects.filter(task=running, to_status="cancelled").count() == 1


def test_list_action_resume(admin_client):
    task = RunwayTask.objects.create(
        task_id="t", route="tracked", status=Status.FAILED, failure_code=FailureCode.TIMEOUT
    )

    response = run_list_action(admin_client, "resume_action", task)

    assert messages_of(response) == ["Resumed 1 task."]
    assert RunwayTask.objects.get(pk=task.pk).status == Status.QUEUED
    assert TaskEvent.objects.get(task=task).kind == EventKind.RESUMED


def test_list_action_poll_now(admin_client, api, now_of):
    task = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=0)), now=now_of())

    response = run_list_action(admin_client, "poll_now_action", task)

    assert messages_of(response) == ["Polled 1 task."]
    assert api.call_count(task.task_id) == 1
    assert TaskEvent.objects.filter(task=task, kind=EventKind.MANUAL_POLL).count() == 1


def test_list_action_resubmit_links_the_new_task(admin_client, api):
    old = RunwayTask.objects.generate("a cat surfing")
    RunwayTask.objects.filter(pk=old.pk).update(status=Status.FAILED)

    response = run_list_action(admin_client, "resubmit_action", old)

    new = RunwayTask.objects.get(resubmitted_from=old)
    assert messages_of(response) == [
        f'Resubmitted 1 task. New: <a href="{change_url(new)}">{new}</a>'
    ]
    assert f'New: <a href="{change_url(new)}">' in response.content.decode()


def test_list_actions_need_the_change_permission():
    viewer = staff("viewer", "view_runwaytask")
    task = RunwayTask.objects.create(task_id="r", route="tracked", status=Status.RUNNING)
    client = client_for(viewer)

    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert response.context["action_form"] is None
    assert b"Poll now" not in response.content

    client.post(CHANGELIST, {"action": "stop_action", "_selected_action": [task.pk]})
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING


def test_list_actions_offer_resubmit_only_with_the_add_permission():
    changer = client_for(staff("changer", "view_runwaytask", "change_runwaytask"))
    adder = client_for(staff("adder", "view_runwaytask", "change_runwaytask", "add_runwaytask"))
    RunwayTask.objects.create(task_id="r", route="tracked")

    def offered(client: Client) -> list[str]:
        form = client.get(CHANGELIST).context["action_form"]
        return [name for name, _label in form.fields["action"].choices if name]

    assert offered(changer) == ["poll_now_action", "resume_action", "stop_action"]
    assert offered(adder) == [
        "poll_now_action",
        "resume_action",
        "stop_action",
        "resubmit_action",
    ]


def test_no_add_button_for_tasks(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


# -- actions on the task page -----------------------------------------------------------------


def buttons(client: Client, task: RunwayTask) -> list[str]:
    return [action["name"] for action in client.get(change_url(task)).context["runway_actions"]]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("queued", "", ["poll", "stop"]),
        ("running", "", ["poll", "stop"]),
        ("submitting", "", []),  # its create call may be in flight
        ("submitting", "Outcome unknown", ["stop", "resubmit"]),
        ("failed", "timeout", ["resume", "resubmit"]),
        ("failed", "SAFETY.INPUT.TEXT", ["resubmit"]),
        ("succeeded", "", ["resubmit"]),
    ],
)
def test_task_page_shows_the_buttons_that_apply(admin_client, status, code, expected):
    task = RunwayTask.objects.create(
        route="generate",
        status=status,
        failure_code=code if status != "submitting" else "",
        last_error=code if status == "submitting" else "",
        request={"prompt": "x"},
    )

    assert buttons(admin_client, task) == expected


def test_task_page_buttons_post_with_csrf(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    html = admin_client.get(change_url(task)).content.decode()

    assert f'<form method="post" action="{action_url(task, "stop")}" class="rf-action-form">' in (
        html
    )
    assert 'name="csrfmiddlewaretoken"' in html


def test_task_page_stop_button(admin_client, signal_log, django_capture_on_commit_callbacks):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(action_url(task, "stop"), follow=True)

    assert response.redirect_chain == [(change_url(task), 302)]
    assert messages_of(response) == ["Stopped 1 task."]
    assert RunwayTask.objects.get(pk=task.pk).status == Status.CANCELLED
    assert signal_log.names() == ["task_status_changed", "task_failed"]


def test_task_page_poll_button_changes_the_status(admin_client, api, clock, now_of):
    task = RunwayTask.objects.track(
        api.add_task(TaskScript(queued_for=0, run_for=100)), now=now_of()
    )
    clock.advance(30)

    response = admin_client.post(action_url(task, "poll"), follow=True)

    assert messages_of(response) == ["Polled 1 task."]
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING
    note = TaskEvent.objects.get(task=task, kind=EventKind.MANUAL_POLL)
    assert note.message.startswith("Polled now by admin: queued 0% -> running")


def test_task_page_action_refuses_get(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    response = admin_client.get(action_url(task, "stop"))

    assert response.status_code == 405
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING


def test_task_page_action_refuses_a_post_without_csrf_token():
    admin = User.objects.create_superuser("root", password="pw")
    client = client_for(admin, enforce_csrf_checks=True)
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    response = client.post(action_url(task, "stop"))

    assert response.status_code == 403
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING


def test_task_page_action_unknown_name_or_task_is_404(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    assert admin_client.post(action_url(task, "explode")).status_code == 404
    assert admin_client.post(f"{CHANGELIST}999999/actions/stop/").status_code == 404


def test_task_page_actions_need_the_change_permission():
    client = client_for(staff("viewer", "view_runwaytask"))
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    assert buttons(client, task) == []
    assert client.post(action_url(task, "stop")).status_code == 403
    assert client.post(action_url(task, "poll")).status_code == 403
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING
    assert not TaskEvent.objects.exists()


def test_task_page_resubmit_needs_the_add_permission(api):
    client = client_for(staff("changer", "view_runwaytask", "change_runwaytask"))
    old = RunwayTask.objects.generate("a cat surfing")
    RunwayTask.objects.filter(pk=old.pk).update(status=Status.FAILED)

    assert "resubmit" not in buttons(client, old)
    assert client.post(action_url(old, "resubmit")).status_code == 403
    assert not RunwayTask.objects.filter(resubmitted_from=old).exists()


def test_anonymous_users_are_sent_to_the_login_page():
    task = RunwayTask.objects.create(task_id="t", route="tracked", status=Status.RUNNING)

    response = Client().post(action_url(task, "stop"))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert RunwayTask.objects.get(pk=task.pk).status == Status.RUNNING


# -- downloads --------------------------------------------------------------------------------


@pytest.fixture
def downloads_on(settings: Any, tmp_path: Path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "runway": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path), "base_url": "/media/runway/"},
        },
    }
    # The queued download would run in this process and fetch from a host that is not there:
    # the admin only queues it, which is what these tests look at.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": True, "STORAGE": "runway"}


def succeeded_task() -> RunwayTask:
    return RunwayTask.objects.create(
        task_id="t",
        route="generate",
        status=Status.SUCCEEDED,
        result_url="https://cdn.example.com/v.mp4",
    )


def test_download_is_hidden_while_downloads_are_off(admin_client):
    task = succeeded_task()

    assert "download" not in buttons(admin_client, task)
    assert admin_client.post(action_url(task, "download")).status_code == 403
    form = admin_client.get(CHANGELIST).context["action_form"]
    assert "download_action" not in [name for name, _label in form.fields["action"].choices]


def test_download_button_queues_the_download(admin_client, downloads_on):
    task = succeeded_task()
    assert "download" in buttons(admin_client, task)

    response = admin_client.post(action_url(task, "download"), follow=True)

    assert messages_of(response) == ["Queued the download of 1 task."]
    task.refresh_from_db()
    assert task.download_status == "pending"
    event = TaskEvent.objects.get(task=task, kind=EventKind.DOWNLOAD_QUEUED)
    assert event.message == "Download queued by admin."


def test_download_action_says_why_a_task_cannot_be_downloaded(admin_client, downloads_on):
    running = RunwayTask.objects.create(task_id="r", route="tracked", status=Status.RUNNING)

    response = run_list_action(admin_client, "download_action", running)

    assert messages_of(response) == [
        "Queued the download of 0 tasks. Skipped 1 task: "
        "Task r (running) has not succeeded, so it has no result to download."
    ]


# -- the event list and the poller row --------------------------------------------------------


def test_events_are_read_only(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked")
    event = TaskEvent.objects.create(task=task, kind="transition", to_status="queued")

    assert admin_client.get(f"{EVENTS}add/").status_code == 403
    page = admin_client.get(f"{EVENTS}{event.pk}/change/")
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields
    assert admin_client.post(f"{EVENTS}{event.pk}/delete/").status_code == 403
    assert admin_client.post(f"{EVENTS}{event.pk}/change/", {"message": "x"}).status_code == 403
    assert TaskEvent.objects.get(pk=event.pk).message == ""
    assert admin_client.get(EVENTS).context["action_form"] is None


def test_event_list_filters_by_kind_and_task(admin_client):
    one = RunwayTask.objects.create(task_id="one", route="tracked")
    two = RunwayTask.objects.create(task_id="two", route="tracked")
    TaskEvent.objects.create(task=one, kind="transition", to_status="queued")
    TaskEvent.objects.create(task=one, kind="manual_poll")
    TaskEvent.objects.create(task=two, kind="manual_poll")

    def listed(query: str) -> list[tuple[str, str]]:
        response = admin_client.get(f"{EVENTS}?{query}")
        assert response.status_code == 200
        return sorted((e.task.task_id, e.kind) for e in response.context["cl"].result_list)

    assert listed("kind__exact=manual_poll") == [("one", "manual_poll"), ("two", "manual_poll")]
    assert listed(f"task__id__exact={one.pk}") == [("one", "manual_poll"), ("one", "transition")]


def test_event_list_runs_the_same_queries_for_10_and_500_events(admin_client):
    task = RunwayTask.objects.create(task_id="t", route="tracked")
    add_events(task, 10)
    small = query_count(admin_client, EVENTS)

    add_events(task, 490)

    assert query_count(admin_client, EVENTS) == small


def test_poller_state_is_read_only(admin_client):
    PollerState.objects.create(pk=1, pause_reason="401")

    assert admin_client.get("/admin/django_runway_feed/pollerstate/1/change/").status_code == 200
    assert admin_client.get("/admin/django_runway_feed/pollerstate/add/").status_code == 403

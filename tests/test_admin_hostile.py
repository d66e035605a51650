"""The admin under hostile data: times at the ends of the calendar, NUL in a query string."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from django_runway_feed.models import RunwayTask, TaskEvent
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_runway_feed_runwaytask_changelist"
EVENTS = "admin:django_runway_feed_taskevent_changelist"


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


@pytest.mark.parametrize(
    ("zone", "shown_in_utc"),
    [
        ("America/New_York", "0001-01-01 00:00:00 UTC"),  # 5 h before year 1
        ("Asia/Tokyo", "9999-12-31 23:59:59 UTC"),  # 9 h after year 9999
    ],
)
def test_task_page_renders_times_at_the_ends_of_the_calendar(staff, settings, zone, shown_in_utc):
    settings.TIME_ZONE = zone
    task = RunwayTask.objects.create(
        task_id="t-far",
        route="generate",
        status=Status.SUCCEEDED,
        request={"prompt": "x"},
        submitted_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        started_at=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        finished_at=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    )

    page = staff.get(reverse("admin:django_runway_feed_runwaytask_change", args=[task.pk]))
    listing = staff.get(reverse(CHANGELIST))

    assert page.status_code == 200
    assert shown_in_utc in page.content.decode()
    assert listing.status_code == 200


@pytest.mark.parametrize(
    ("name", "query"),
    [
        (CHANGELIST, "failure_code=%00"),
        (CHANGELIST, "status__exact=%00"),
        (CHANGELIST, "q=a%00b"),
        (CHANGELIST, "%00=1"),
        (EVENTS, "kind__exact=%00"),
    ],
)
def test_list_query_with_a_nul_answers_400(staff, name, query):
    RunwayTask.objects.create(task_id="t-1", route="generate", status=Status.FAILED)

    response = staff.get(f"{reverse(name)}?{query}")

    assert response.status_code == 400


def test_list_query_without_a_nul_still_filters(staff):
    RunwayTask.objects.create(task_id="t-1", route="generate", status=Status.FAILED)

    response = staff.get(f"{reverse(CHANGELIST)}?status__exact=failed")

    assert response.status_code == 200
    assert TaskEvent.objects.count() == 0

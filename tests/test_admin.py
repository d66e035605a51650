from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db


def test_admin_stuck_filter_lists_only_old_unfinished_tasks(admin_client):
    old = timezone.now() - dt.timedelta(hours=2)
    stuck = RunwayTask.objects.create(
        task_id="stuck-1", route="tracked", status=Status.RUNNING, submitted_at=old
    )
    RunwayTask.objects.create(task_id="fresh-1", route="tracked", status=Status.RUNNING)
    RunwayTask.objects.create(
        task_id="done-1", route="tracked", status=Status.SUCCEEDED, submitted_at=old
    )

    response = admin_client.get("/admin/django_runway_feed/runwaytask/?stuck=yes")

    assert response.status_code == 200
    assert [task.pk for task in response.context["cl"].result_list] == [stuck.pk]


def test_admin_task_page_renders_read_only(admin_client):
    task = RunwayTask.objects.create(task_id="t-1", route="tracked", status=Status.QUEUED)

    response = admin_client.get(f"/admin/django_runway_feed/runwaytask/{task.pk}/change/")

    assert response.status_code == 200
    assert b'name="task_id"' not in response.content
    assert b'name="metadata"' in response.content

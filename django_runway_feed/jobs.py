"""django-q2 entry points, referenced by dotted path. Thin: primitives in, a summary out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import services
from .downloads import download_result as run_download
from .models import RunwayTask


def poll_due_tasks(window: float | None = None) -> dict[str, Any]:
    """The scheduled job: keep polling due tasks for ``POLL_WINDOW`` seconds.

    On a single-worker cluster it hands the worker back early to waiting result downloads.
    """
    return services.poll_due_tasks(
        window=window, hand_back_downloads=services.single_worker_cluster()
    ).as_dict()


def poll_task(task_pk: int, lease_token: str = "") -> dict[str, Any]:
    """Poll one task if it is due (queued by the callback view, with its lease's token)."""
    task = RunwayTask.objects.filter(pk=task_pk).first()
    if task is None:
        return {}
    if lease_token:
        return services.poll_for_callback(task, lease_token).as_dict()
    return services.poll_task_now(task, due_only=True).as_dict()


def download_result(task_pk: int, queued_until: str | None = None) -> dict[str, Any]:
    """Run one download attempt of a succeeded task's outputs.

    Queued after commit, or by the scheduled run with the hold it put on the task (an ISO
    timestamp).
    """
    hold = dt.datetime.fromisoformat(queued_until) if queued_until else None
    return run_download(task_pk, hold).as_dict()

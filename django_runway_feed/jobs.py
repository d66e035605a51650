"""django-q2 entry points, referenced by dotted path. Thin: primitives in, a summary out."""

from __future__ import annotations

from typing import Any

from . import services
from .models import RunwayTask


def poll_due_tasks(window: float | None = None) -> dict[str, Any]:
    """The scheduled job: keep polling due tasks for ``POLL_WINDOW`` seconds."""
    return services.poll_due_tasks(window=window).as_dict()


def poll_task(task_pk: int) -> dict[str, Any]:
    """Poll one task if it is due (queued by the callback view)."""
    task = RunwayTask.objects.filter(pk=task_pk).first()
    if task is None:
        return {}
    return services.poll_task_now(task, due_only=True).as_dict()


def download_result(task_pk: int) -> dict[str, Any]:
    """Run one download attempt of a succeeded task's outputs (queued after commit)."""
    from .storage import download_result as run_download

    return run_download(task_pk).as_dict()

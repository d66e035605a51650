"""Receivers that write every signal to the database, so a test can read what a qcluster sent."""

from __future__ import annotations

import os
from typing import Any

from django.db import connection

from django_runway_feed import signals

RECORDED = (
    "task_submitted",
    "task_status_changed",
    "task_succeeded",
    "task_failed",
)


def record(sender: Any, *, signal: Any, task: Any, **kwargs: Any) -> None:
    from .models import SignalRecord

    if not os.environ.get("RUNWAY_RECORD_SIGNALS"):
        return
    name = next(n for n in RECORDED if getattr(signals, n) is signal)
    event = kwargs.get("event")
    SignalRecord.objects.create(
        signal=name,
        task_pk=task.pk,
        event_pk=event.pk if event else None,
        previous=kwargs.get("previous", ""),
        status=kwargs.get("status", task.status),
        in_atomic_block=connection.in_atomic_block,
        pid=os.getpid(),
    )


def connect() -> None:
    for name in RECORDED:
        getattr(signals, name).connect(record, dispatch_uid=f"testapp.record.{name}")

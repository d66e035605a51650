"""The heartbeat: how the last poll run went, stored in the single ``PollerState`` row."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..models import PollerState
from .summary import PollSummary


def record_heartbeat(summary: PollSummary, *, now: dt.datetime) -> None:
    """Store how the last run went in the single PollerState row."""
    values: dict[str, Any] = {"last_run_at": now, "last_run": summary.as_dict()}
    if summary.polled or not summary.errors:
        values["last_success_at"] = now
    if not PollerState.objects.filter(pk=1).update(**values):
        PollerState.objects.get_or_create(pk=1, defaults=values)

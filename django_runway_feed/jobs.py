"""django-q2 entry points, referenced by dotted path. Thin: primitives in, a summary out."""

from __future__ import annotations

from typing import Any

from . import services


def poll_due_tasks(window: float | None = None) -> dict[str, Any]:
    """The scheduled job: keep polling due tasks for ``POLL_WINDOW`` seconds."""
    return services.poll_due_tasks(window=window).as_dict()

"""The canonical task statuses and their order."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    SUBMITTING = "submitting", _("Submitting")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
UNFINISHED_STATUSES = frozenset({Status.SUBMITTING, Status.QUEUED, Status.RUNNING})

# Status only moves forward: a transition is allowed when the target ranks higher.
RANK = {
    Status.SUBMITTING: 0,
    Status.QUEUED: 1,
    Status.RUNNING: 2,
    Status.SUCCEEDED: 3,
    Status.FAILED: 3,
    Status.CANCELLED: 3,
}


def is_forward(current: str, new: str) -> bool:
    """True when moving from ``current`` to ``new`` is a step forward."""
    return RANK[Status(new)] > RANK[Status(current)]


class FailureCode(models.TextChoices):
    """Why a task failed. Provider codes (``SAFETY.INPUT.TEXT`` ...) are stored as given."""

    TIMEOUT = "timeout", _("Gave up: task timeout")
    NOT_FOUND = "not_found", _("Gave up: task never became visible")
    REJECTED = "rejected", _("Create call refused")
    PROVIDER = "provider", _("Failed at the provider")
    STOPPED = "stopped", _("Stopped by an operator")

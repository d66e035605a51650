"""Install or remove the django-q2 Schedule that runs the poller every minute."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .conf import conf

logger = logging.getLogger(__name__)

POLL_FUNC = "django_runway_feed.jobs.poll_due_tasks"


def install_schedule(*, using: str = "default") -> tuple[Any, bool]:
    """Create or update the Schedule row named ``SCHEDULE_NAME``; never duplicate it.

    Returns ``(schedule, created)``. Safe to call on every migrate.
    """
    from django_q.models import Schedule

    name = conf.SCHEDULE_NAME
    with transaction.atomic(using=using):
        extras = Schedule.objects.using(using).filter(name=name).order_by("pk")[1:]
        extra_ids = list(extras.values_list("pk", flat=True))
        if extra_ids:
            Schedule.objects.using(using).filter(pk__in=extra_ids).delete()
            logger.warning("Removed %d duplicate schedule(s) named %r", len(extra_ids), name)
        schedule, created = Schedule.objects.using(using).update_or_create(
            name=name,
            defaults={
                "func": POLL_FUNC,
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
                "args": None,
                "kwargs": None,
            },
        )
    return schedule, created


def remove_schedule(*, using: str = "default") -> int:
    """Delete the Schedule row(s) named ``SCHEDULE_NAME``; returns how many were removed."""
    from django_q.models import Schedule

    deleted, _by_model = Schedule.objects.using(using).filter(name=conf.SCHEDULE_NAME).delete()
    return int(deleted)

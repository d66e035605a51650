"""Install or remove the django-q2 Schedule that runs the poller every minute."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .conf import conf
from .exceptions import ConfigurationError

logger = logging.getLogger(__name__)

POLL_FUNC = "django_runway_feed.jobs.poll_due_tasks"


def _schedule_model() -> Any:
    from django.apps import apps

    if not apps.is_installed("django_q"):
        raise ConfigurationError(
            "'django_q' is not in INSTALLED_APPS, so there is no Schedule to install; add it, "
            "set Q_CLUSTER and run manage.py migrate (docs/quickstart.md, step 2)."
        )
    from django_q.models import Schedule

    return Schedule


def install_schedule(*, using: str = "default") -> tuple[Any, bool]:
    """Create or update the Schedule row named ``SCHEDULE_NAME``; never duplicate it.

    Returns ``(schedule, created)``. Safe to call on every migrate. Raises
    :class:`~django_runway_feed.exceptions.ConfigurationError` when django-q2 is not installed.
    """
    Schedule = _schedule_model()

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
    Schedule = _schedule_model()

    deleted, _by_model = Schedule.objects.using(using).filter(name=conf.SCHEDULE_NAME).delete()
    return int(deleted)

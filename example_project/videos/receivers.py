"""What the example site does when a video finishes: tell its owner, and log it.

Connected in ``VideosConfig.ready()``. Signals arrive after the change is committed, and may
arrive twice for one event if a worker dies at the wrong moment, so each receiver keys its work
on ``event.pk`` (see ``Notification.event_id``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.dispatch import receiver
from django.utils.text import Truncator

from django_runway_feed.models import RunwayTask, TaskEvent
from django_runway_feed.signals import task_failed, task_succeeded

from .models import Notification

logger = logging.getLogger(__name__)


def task_owner(task: RunwayTask) -> models.Model | None:
    """The user a task was created for (``content_object=request.user``), or None."""
    if task.content_type_id is None:
        # Not attached to anything: no query at all.
        return None
    user_model = get_user_model()
    # get_for_model() is cached, so this costs a query once per process.
    if task.content_type_id != ContentType.objects.get_for_model(user_model).pk:
        return None
    return user_model._default_manager.filter(pk=task.object_id).first()


def _notify(task: RunwayTask, event: TaskEvent, kind: str, message: str) -> None:
    owner = task_owner(task)
    if owner is None:
        return
    _notification, created = Notification.objects.get_or_create(
        event_id=event.pk,
        defaults={
            "user": owner,
            "task_pk": task.pk,
            "kind": kind,
            "message": Truncator(message).chars(300),
        },
    )
    if created:
        logger.info("Task %s %s: notified user %s.", task.pk, kind, owner.pk)
    else:
        logger.info("Task %s: event %s was already notified; skipped.", task.pk, event.pk)


def _title(task: RunwayTask) -> str:
    return Truncator(task.prompt or "image to video").chars(60)


@receiver(task_succeeded, dispatch_uid="videos.notify_succeeded")
def notify_succeeded(sender: Any, *, task: RunwayTask, event: TaskEvent, **kwargs: Any) -> None:
    _notify(task, event, Notification.Kind.SUCCEEDED, f"Your video “{_title(task)}” is ready.")


@receiver(task_failed, dispatch_uid="videos.notify_failed")
def notify_failed(sender: Any, *, task: RunwayTask, event: TaskEvent, **kwargs: Any) -> None:
    verb = "was cancelled" if task.status == "cancelled" else "failed"
    reason = task.fail_reason or task.failure_code or "no reason given"
    logger.warning("Task %s %s: %s", task.pk, verb, reason)
    _notify(task, event, Notification.Kind.FAILED, f"Your video “{_title(task)}” {verb}: {reason}")

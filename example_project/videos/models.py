"""The example site's own model: an in-site notification, written by the signal receivers."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Notification(models.Model):
    """One message in a user's header: "your video is ready" or "your video failed".

    ``event_id`` is the pk of the ``TaskEvent`` that caused it. Signals are delivered at least
    once, so the receiver may see the same event twice; the unique constraint makes the second
    delivery a no-op instead of a duplicate message.
    """

    class Kind(models.TextChoices):
        SUCCEEDED = "succeeded", "Video ready"
        FAILED = "failed", "Video failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="video_notifications"
    )
    # Plain integers, not foreign keys: runway_prune deletes old tasks and events with
    # single-statement DELETEs, which a foreign key from this table would block.
    task_pk = models.BigIntegerField(null=True, blank=True)
    event_id = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    message = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(fields=["event_id"], name="videos_notification_once_per_event")
        ]
        indexes = [models.Index(fields=["user", "read_at"], name="videos_notif_unread_idx")]

    def __str__(self) -> str:
        return self.message

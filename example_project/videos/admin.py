from __future__ import annotations

from django.contrib import admin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("message", "user", "kind", "created_at", "read_at")
    list_filter = ("kind",)
    list_select_related = ("user",)
    readonly_fields = ("event_id", "task_pk", "created_at")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Min
from django.utils import timezone

from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.statuses import Status


class Command(BaseCommand):
    help = "Show Runway tasks per status, the oldest unfinished task, and the poller's health."

    def handle(self, **options: Any) -> None:
        now = timezone.now()
        counts = dict(RunwayTask.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in Status:
            self.stdout.write(f"{status.label:<12} {counts.get(status.value, 0)}")
        oldest = RunwayTask.objects.unfinished().aggregate(oldest=Min("created_at"))["oldest"]
        if oldest:
            self.stdout.write(f"Oldest unfinished task: {(now - oldest).total_seconds():.0f} s old")
        state = PollerState.objects.filter(pk=1).first()
        last = state.last_success_at if state else None
        self.stdout.write(f"Last successful poll: {last.isoformat() if last else 'never'}")
        if state and state.paused_until and state.paused_until > now:
            self.stdout.write(
                self.style.ERROR(
                    f"Polling paused until {state.paused_until.isoformat()}: {state.pause_reason}"
                )
            )
        else:
            self.stdout.write("Polling: active")

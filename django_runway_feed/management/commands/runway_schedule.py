from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from django_runway_feed.schedules import install_schedule, remove_schedule

from ._base import RunwayCommand


class Command(RunwayCommand):
    help = "Install (or update) the django-q2 Schedule that polls Runway tasks; --remove drops it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--remove", action="store_true", help="Remove the schedule.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *, remove: bool, database: str, **options: Any) -> None:
        if remove:
            removed = remove_schedule(using=database)
            self.stdout.write(f"Removed {removed} schedule(s)." if removed else "No schedule.")
            return
        schedule, created = install_schedule(using=database)
        verb = "Installed" if created else "Updated"
        self.stdout.write(f"{verb} schedule {schedule.name!r} ({schedule.func}, every minute).")

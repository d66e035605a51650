from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from django_runway_feed.models import RunwayTask

from ._base import RunwayCommand
from ._follow import add_follow_arguments, report


class Command(RunwayCommand):
    help = "Follow a Runway task created elsewhere (idempotent); --wait shows its progress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_id", help="The provider's task id (as CometAPI returned it).")
        add_follow_arguments(parser)

    def handle(
        self, *, task_id: str, wait: bool, timeout: float | None, json: bool, **options: Any
    ) -> None:
        try:
            task = RunwayTask.objects.track(task_id)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        report(self, task, wait=wait, timeout=timeout, as_json=json)

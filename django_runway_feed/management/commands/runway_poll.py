from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_runway_feed import services
from django_runway_feed.exceptions import RunwayFeedError
from django_runway_feed.management.commands._follow import find_task

from ._base import RunwayCommand, number_between

MAX_WINDOW_SECONDS = 86_400


class Command(RunwayCommand):
    help = (
        "Poll due Runway tasks once (until none is due), for --window seconds, or forever with "
        "--loop (for sites without a django-q2 cluster). --task polls one task now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--task", help="Poll this task now (task id or row id).")
        parser.add_argument(
            "--window",
            type=number_between(0, MAX_WINDOW_SECONDS),
            default=0.0,
            help="Keep polling for this many seconds (at most a day; --loop for longer).",
        )
        parser.add_argument(
            "--loop", action="store_true", help="Keep polling until interrupted (Ctrl-C)."
        )

    def handle(self, *, task: str | None, window: float, loop: bool, **options: Any) -> None:
        try:
            if task:
                self._poll_one(task)
                return
            while True:
                summary = services.poll_due_tasks(window=window)
                self.stdout.write(
                    f"Polled {summary.polled} task(s): {summary.transitions} transition(s), "
                    f"{summary.errors} error(s){', API paused' if summary.paused else ''}."
                )
                if not loop:
                    return
                if not summary.claimed:
                    time.sleep(1)
        except RunwayFeedError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")

    def _poll_one(self, ident: str) -> None:
        task = find_task(ident)
        if task is None:
            raise CommandError(f"No tracked task {ident!r}.")
        polled = services.poll_task_now(task).claimed
        task.refresh_from_db()
        note = "" if polled else " (not polled: finished, not yet accepted, or being polled)"
        self.stdout.write(f"{task.task_id}: {task.status} {task.progress}%{note}")

from __future__ import annotations

import json
from typing import Any

from django.core.checks import ERROR, WARNING
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_runway_feed.health import status_report
from django_runway_feed.statuses import Status

FAIL_LEVELS = {"ERROR": ERROR, "WARNING": WARNING}


class Command(BaseCommand):
    help = (
        "Show Runway tasks per status, the oldest unfinished task, stuck tasks and the poller's "
        "health. --json prints the same as a stable JSON document; --check exits non-zero when "
        "a health check fails (for container health probes and monitors)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON (see docs)."
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 when a check at --fail-level or above fails.",
        )
        parser.add_argument(
            "--fail-level",
            choices=sorted(FAIL_LEVELS),
            default="ERROR",
            help="Lowest level that makes --check fail (default ERROR).",
        )

    def handle(self, *, as_json: bool, check: bool, fail_level: str, **options: Any) -> None:
        report = status_report()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            self._write_text(report)
        if check:
            failing = [
                problem["id"]
                for problem in report["problems"]
                if FAIL_LEVELS[problem["level"]] >= FAIL_LEVELS[fail_level]
            ]
            if failing:
                raise CommandError(f"Unhealthy: {', '.join(failing)}.")

    def _write_text(self, report: dict[str, Any]) -> None:
        for status in Status:
            count = report["counts"][status.value]
            # PostgreSQL's statistics, for a finished status too large to count on each call.
            shown = f"about {count}" if status.value in report["estimated"] else str(count)
            self.stdout.write(f"{status.label:<12} {shown}")
        oldest = report["oldest_unfinished_age_seconds"]
        if oldest is not None:
            self.stdout.write(f"Oldest unfinished task: {oldest:.0f} s old")
        self.stdout.write(f"Stuck tasks: {report['stuck']}")
        poller = report["poller"]
        if poller["last_success_at"]:
            self.stdout.write(
                f"Last successful poll: {poller['last_success_at']} "
                f"({poller['seconds_since_success']:.0f} s ago)"
            )
        else:
            self.stdout.write("Last successful poll: never")
        if poller["paused"]:
            self.stdout.write(
                self.style.ERROR(
                    f"Polling paused until {poller['paused_until']}: {poller['pause_reason']}"
                )
            )
        else:
            self.stdout.write("Polling: active")
        problems = report["problems"]
        if not problems:
            self.stdout.write("Health: OK")
            return
        self.stdout.write(f"Health: {len(problems)} problem(s)")
        for problem in problems:
            style = self.style.ERROR if problem["level"] == "ERROR" else self.style.WARNING
            self.stdout.write(style(f"{problem['id']}: {problem['message']}"))
            if problem["hint"]:
                self.stdout.write(f"    HINT: {problem['hint']}")

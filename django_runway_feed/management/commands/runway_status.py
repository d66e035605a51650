from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.checks import ERROR, WARNING
from django.core.management.base import CommandError, CommandParser

from django_runway_feed.health import status_report
from django_runway_feed.outlook import (
    CallbackState,
)
from django_runway_feed.statuses import Status

from ._base import RunwayCommand

FAIL_LEVELS = {"ERROR": ERROR, "WARNING": WARNING}


class Command(RunwayCommand):
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
        elif poller["last_task_polled_at"]:
            polled = dt.datetime.fromisoformat(poller["last_task_polled_at"])
            generated = dt.datetime.fromisoformat(report["generated_at"])
            self.stdout.write(
                "Last successful poll: no poll run has finished yet; a task was polled "
                f"{max(0.0, (generated - polled).total_seconds()):.0f} s ago"
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
        self._write_gateway(report["gateway"])
        self._write_callbacks(report["callbacks"])
        self._write_run_times(report["run_times"], learning=report["learn_run_times"])
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

    def _write_gateway(self, gateway: dict[str, Any]) -> None:
        line = (
            f"Gateway: {gateway['errors']} of {gateway['answers']} answers failed in the last "
            f"{gateway['window_seconds']:.0f} s ({gateway['error_share']:.0%})"
        )
        if gateway["held_until"]:
            line += f"; trouble: every worker holds until {gateway['held_until']}"
        elif gateway["trouble"]:
            line += "; trouble: every worker holds at its next round"
        self.stdout.write(self.style.WARNING(line) if gateway["trouble"] else line)

    def _write_callbacks(self, callbacks: dict[str, Any]) -> None:
        state = callbacks["state"]
        count = callbacks["announced"] + callbacks["missed"]
        finishes = f"{count} finish" if count == 1 else f"{count} finishes"
        last = f"; last at {callbacks['last_callback_at']}" if callbacks["last_callback_at"] else ""
        if state == CallbackState.ARRIVING:
            line = (
                f"Callbacks: arriving ({callbacks['announced']} of the latest {finishes} "
                f"announced{last}): tasks that expect one are polled only as a safety net"
            )
        elif state == CallbackState.MISSING and not callbacks["announced"]:
            # Not one came: most likely CometAPI cannot reach the site at all.
            line = (
                f"Callbacks: missing (none of the latest {finishes} came with one): polling at "
                "the usual cadence; check that CometAPI can reach RUNWAY_FEED['CALLBACK_BASE_URL'] "
                "(docs/troubleshooting.md)"
            )
        elif state == CallbackState.MISSING:
            line = (
                f"Callbacks: missing ({callbacks['missed']} of the latest {finishes} came without "
                f"one{last}): polling at the usual cadence"
            )
        elif state == CallbackState.WAITING:
            line = (
                f"Callbacks: waiting for the first finishes ({callbacks['announced']} announced "
                "so far): polling at the usual cadence"
            )
        elif callbacks["callback_base_url_set"]:
            line = "Callbacks: off (TRUST_CALLBACKS is False): polling at the usual cadence"
        else:
            line = "Callbacks: off (CALLBACK_BASE_URL is not set)"
        self.stdout.write(self.style.WARNING(line) if state == CallbackState.MISSING else line)

    def _write_run_times(self, run_times: dict[str, Any], *, learning: bool) -> None:
        if not learning:
            self.stdout.write("Run times: off (LEARN_RUN_TIMES is False)")
            return
        if not run_times:
            self.stdout.write("Run times: none learned yet")
            return
        self.stdout.write("Run times (low / median / high):")
        for key, learned in run_times.items():
            self.stdout.write(
                f"  {key}: {learned['low']:.0f} s / {learned['median']:.0f} s / "
                f"{learned['high']:.0f} s from {learned['samples']} successes"
            )

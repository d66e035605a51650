from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_runway_feed.conf import conf
from django_runway_feed.pruning import DEFAULT_BATCH_SIZE, PruneResult, prune_finished_tasks
from django_runway_feed.statuses import TERMINAL_STATUSES

from ._base import RunwayCommand, number_between

# A century: older than that is no age a finished task can have; larger values would overflow
# the date arithmetic.
MAX_DAYS = 36_500
MAX_BATCH_SIZE = 100_000


class Command(RunwayCommand):
    help = (
        "Delete finished Runway tasks created more than --days days ago, with their events and "
        "stored files, in small batches. Safe while the poller runs; unfinished tasks are never "
        "touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=number_between(0, MAX_DAYS, above_low=True),
            help="Age in days (default: RUNWAY_FEED['PRUNE_AFTER_DAYS']).",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=sorted(TERMINAL_STATUSES),
            help="Only prune this status (repeatable; default: every finished status).",
        )
        parser.add_argument(
            "--batch-size",
            type=number_between(1, MAX_BATCH_SIZE, whole=True),
            default=DEFAULT_BATCH_SIZE,
            help=f"Tasks per batch and transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(
        self,
        *,
        days: float | None,
        status: list[str] | None,
        batch_size: int,
        dry_run: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        days = days if days is not None else conf.PRUNE_AFTER_DAYS
        if days is None:
            raise CommandError("Pass --days N (or set RUNWAY_FEED['PRUNE_AFTER_DAYS']).")
        if days <= 0:
            raise CommandError("--days must be positive.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")

        def progress(result: PruneResult) -> None:
            if verbosity >= 2:
                self.stdout.write(f"Batch {result.batches}: {result.tasks} task(s) so far")

        result = prune_finished_tasks(
            days=days, statuses=status, batch_size=batch_size, dry_run=dry_run, on_batch=progress
        )
        counts = f"{result.tasks} task(s), {result.events} event(s), {result.files} file(s)"
        if dry_run:
            self.stdout.write(f"Would delete {counts} (dry run).")
            return
        self.stdout.write(f"Deleted {counts}.")
        if result.file_errors:
            self.stderr.write(f"Could not delete {result.file_errors} stored file(s); see the log.")

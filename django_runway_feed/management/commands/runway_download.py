from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_runway_feed import downloads
from django_runway_feed.exceptions import DownloadUnavailable
from django_runway_feed.management.commands._follow import find_task
from django_runway_feed.models import RunwayTask

from ._base import RunwayCommand


class Command(RunwayCommand):
    help = (
        "Copy succeeded tasks' outputs into RUNWAY_FEED['STORAGE']: --task ID for one task, "
        "--missing for every succeeded task without a stored result. Downloads run here, one "
        "at a time (--queue hands them to the django-q2 cluster instead). Exits 1 when a "
        "download could not be done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--task", help="Download this task's outputs (task id or row id).")
        parser.add_argument(
            "--missing",
            action="store_true",
            help="Download every succeeded task whose result is not stored yet.",
        )
        parser.add_argument(
            "--force", action="store_true", help="Download again even when already stored."
        )
        parser.add_argument(
            "--queue", action="store_true", help="Queue django-q2 jobs instead of downloading."
        )

    def handle(
        self, *, task: str | None, missing: bool, force: bool, queue: bool, **options: Any
    ) -> None:
        if not task and not missing:
            raise CommandError("Give --task ID or --missing.")
        if not downloads.downloads_enabled():
            raise CommandError(downloads.DOWNLOADS_OFF)
        if task:
            row = self._find(task)
            try:
                ok = self._download(row, force=force, queue=queue)
            except DownloadUnavailable as exc:
                raise CommandError(str(exc)) from exc
            if not ok:
                raise CommandError(f"The download of task {row} did not complete.")
            return
        done = problems = 0
        for pk in list(downloads.missing_downloads().order_by("pk").values_list("pk", flat=True)):
            row = RunwayTask.objects.get(pk=pk)
            try:
                ok = self._download(row, force=force, queue=queue)
            except DownloadUnavailable as exc:
                self.stderr.write(f"{row}: {exc}")
                ok = False
            done += ok
            problems += not ok
        verb = "Queued" if queue else "Stored"
        self.stdout.write(f"{verb} {done} result(s); {problems} could not be done.")
        if problems:
            raise CommandError(f"{problems} download(s) could not be done; see above.")

    def _find(self, ident: str) -> RunwayTask:
        row = find_task(ident)
        if row is None:
            raise CommandError(f"No task with id or pk {ident!r}.")
        return row

    def _download(self, row: RunwayTask, *, force: bool, queue: bool) -> bool:
        if queue:
            downloads.queue_download(row, force=force, reason="Download queued by runway_download.")
            self.stdout.write(f"{row}: queued")
            return True
        outcome = downloads.download_now(row, force=force)
        row.refresh_from_db()
        detail = f" ({outcome.message})" if outcome.outcome != "stored" else ""
        line = f"{row}: {outcome.outcome}{detail}"
        (self.stdout if outcome.outcome == "stored" else self.stderr).write(line)
        return outcome.outcome == "stored"

"""The demo: the whole journey on the embedded default (SQLite, ORM broker, fake CometAPI)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import override_settings
from django.utils import timezone
from django_q.tasks import async_task

from django_runway_feed.models import RunwayTask
from django_runway_feed.schedules import POLL_FUNC
from django_runway_feed.testing import FakeCometAPI, TaskScript

# name, prompt, script: one success, one moderation failure, one invisible at first, one
# throttled, one that reports coarse progress only.
SCENARIOS = [
    ("succeeds", "a red fox running through snow, cinematic", TaskScript(run_for=12)),
    (
        "moderated",
        "something the moderation refuses",
        TaskScript(run_for=4, outcome="failed", failure_code="SAFETY.INPUT.TEXT"),
    ),
    ("invisible first", "a lighthouse at dusk", TaskScript(invisible_for=8, run_for=8)),
    ("throttled", "a paper boat on a river", TaskScript(throttled_for=10, run_for=8)),
    ("coarse progress", "city lights timelapse", TaskScript(run_for=10, progress_style="coarse")),
]


class Command(BaseCommand):
    help = "Run the demo: fake CometAPI, a handful of tasks, a real qcluster until all finish."
    # The key is supplied by the demo itself, so the missing-key warning would only confuse.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=240.0)

    def handle(self, *, timeout: float, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        key = secrets.token_urlsafe(16)
        with FakeCometAPI(api_key=key) as server:
            runway_feed = {**settings.RUNWAY_FEED, "API_KEY": key, "BASE_URL": server.url}
            with override_settings(RUNWAY_FEED=runway_feed):
                self._run(server, key, timeout)

    def _run(self, server: FakeCometAPI, key: str, timeout: float) -> None:
        started = timezone.now()
        server.script_next(*(script for _name, _prompt, script in SCENARIOS))
        tasks = []
        for name, prompt, _script in SCENARIOS:
            task = RunwayTask.objects.generate(prompt, metadata={"demo": name})
            self.stdout.write(f"submitted {name:<16} {task.task_id} ({task.status})")
            tasks.append(task)

        env = {
            **os.environ,
            "COMETAPI_KEY": key,
            "COMETAPI_BASE_URL": server.url,
            "RUNWAY_POLL_WINDOW": "30",
        }
        cluster = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "qcluster"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # The Schedule (installed by migrate) fires within 30 s; kick the first run now.
            async_task(POLL_FUNC)
            self._wait(tasks, timeout)
        finally:
            os.killpg(cluster.pid, signal.SIGTERM)
            try:
                cluster.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, signal.SIGKILL)
                cluster.wait()
        self._summary(tasks, server, started)

    def _wait(self, tasks: list[RunwayTask], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pks = [task.pk for task in tasks]
        while True:
            rows = list(RunwayTask.objects.filter(pk__in=pks).order_by("pk"))
            line = " | ".join(
                f"{row.metadata['demo']}: {row.status} {row.progress}%" for row in rows
            )
            self.stdout.write(f"[{time.strftime('%H:%M:%S')}] {line}")
            if all(row.is_finished for row in rows):
                return
            if time.monotonic() > deadline:
                raise CommandError(f"Tasks still unfinished after {timeout:.0f} s.")
            time.sleep(2)

    def _summary(self, tasks: list[RunwayTask], server: FakeCometAPI, started: Any) -> None:
        self.stdout.write("\nSummary")
        self.stdout.write(f"{'task':<38} {'scenario':<16} {'status':<10} polls  time  result")
        for task in RunwayTask.objects.filter(pk__in=[t.pk for t in tasks]).order_by("pk"):
            took = (task.finished_at - task.created_at).total_seconds() if task.finished_at else 0
            result = task.result_url or f"{task.failure_code}: {task.fail_reason}"
            self.stdout.write(
                f"{task.task_id:<38} {task.metadata['demo']:<16} {task.status:<10} "
                f"{server.call_count(task.task_id):>5} {took:>5.0f}s  {result}"
            )
        self.stdout.write(f"Done in {(timezone.now() - started).total_seconds():.0f} s.")

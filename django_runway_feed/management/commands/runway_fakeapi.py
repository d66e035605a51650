from __future__ import annotations

import secrets
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_runway_feed.testing import FakeCometAPI, TaskScript

from ._base import RunwayCommand, number_between


class Command(RunwayCommand):
    help = (
        "Run the fake CometAPI server (Runway create routes and feed) for local work and demos. "
        "Tasks succeed after --run-seconds in real time; a prompt containing a --fail-prompt "
        "word fails like a moderation refusal."
    )
    # The fake server needs none of the site's settings: it starts even while they are wrong.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1)."
        )
        parser.add_argument(
            "--port",
            type=number_between(0, 65535, whole=True),
            default=8765,
            help="Port to listen on (default 8765; 0 = any).",
        )
        parser.add_argument("--api-key", help="Key the server expects (default: a random one).")
        parser.add_argument(
            "--latency",
            type=number_between(0, 3600),
            default=0.0,
            help="Seconds per response.",
        )
        parser.add_argument(
            "--run-seconds",
            type=number_between(0, 86_400),
            default=20.0,
            help="Seconds a task takes from queued to finished (default 20).",
        )
        parser.add_argument(
            "--fail-prompt",
            action="append",
            default=[],
            metavar="WORD",
            help="A prompt containing WORD fails (SAFETY.INPUT.TEXT) after it ran. Repeatable.",
        )

    def handle(
        self,
        *,
        host: str,
        port: int,
        api_key: str | None,
        latency: float,
        run_seconds: float,
        fail_prompt: list[str],
        **options: Any,
    ) -> None:
        if any(not word.strip() for word in fail_prompt):
            raise CommandError("--fail-prompt needs a non-empty word.")
        key = api_key or secrets.token_urlsafe(16)
        server = FakeCometAPI(
            api_key=key,
            host=host,
            port=port,
            latency=latency,
            default_script=TaskScript(run_for=run_seconds),
        )
        for word in fail_prompt:
            server.script_prompt(word, TaskScript(run_for=run_seconds, outcome="failed"))
        with server:
            self.stdout.write(f"Fake CometAPI listening on {server.url}")
            if fail_prompt:
                self.stdout.write(f"Prompts containing {', '.join(map(repr, fail_prompt))} fail.")
            self.stdout.write(
                f"Point your site at it:\n  RUNWAY_FEED = {{'BASE_URL': '{server.url}', "
                f"'API_KEY': '{key}'}}"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                self.stdout.write("Stopped.")

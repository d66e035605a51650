from __future__ import annotations

import secrets
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_runway_feed.testing import FakeCometAPI, TaskScript


class Command(BaseCommand):
    help = (
        "Run the fake CometAPI server (Runway create routes and feed) for local work and demos. "
        "Tasks succeed after --run-seconds in real time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--api-key", help="Key the server expects (default: a random one).")
        parser.add_argument("--latency", type=float, default=0.0, help="Seconds per response.")
        parser.add_argument("--run-seconds", type=float, default=20.0)

    def handle(
        self,
        *,
        host: str,
        port: int,
        api_key: str | None,
        latency: float,
        run_seconds: float,
        **options: Any,
    ) -> None:
        key = api_key or secrets.token_urlsafe(16)
        server = FakeCometAPI(
            api_key=key,
            host=host,
            port=port,
            latency=latency,
            default_script=TaskScript(run_for=run_seconds),
        )
        with server:
            self.stdout.write(f"Fake CometAPI listening on {server.url}")
            self.stdout.write(
                f"Point your site at it:\n  RUNWAY_FEED = {{'BASE_URL': '{server.url}', "
                f"'API_KEY': '{key}'}}"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                self.stdout.write("Stopped.")

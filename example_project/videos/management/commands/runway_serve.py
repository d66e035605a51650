"""``make serve``: the example site with everything it needs, stopped together on Ctrl-C."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_q.tasks import async_task

from django_runway_feed.schedules import POLL_FUNC
from example_project.videos.supervisor import Supervisor

# Long enough that the next scheduled run (every minute, django-q2 checks every 30 s) starts
# before this one ends, so progress never pauses; short enough for Q_CLUSTER's timeout (120 s).
POLL_WINDOW = "75"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # our own local URL
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


class Command(BaseCommand):
    help = (
        "Serve the example site: migrate, create a demo user, then run the fake CometAPI, a "
        "django-q2 cluster and runserver together until Ctrl-C (or SIGTERM) stops them all."
    )
    # The API key is made up here and handed to the children; the missing-key warning would
    # only confuse.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="runserver's address.")
        parser.add_argument(
            "--fakeapi-port", type=int, default=0, help="Fake CometAPI port (default: a free one)."
        )
        parser.add_argument(
            "--run-seconds", type=float, default=20.0, help="How long each fake video renders."
        )
        parser.add_argument(
            "--no-downloads",
            action="store_true",
            help="Play the fake API's URLs instead of copies stored in MEDIA_ROOT.",
        )
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", help="Demo user's password (default: a new random one).")

    def handle(
        self,
        *,
        addr: str,
        fakeapi_port: int,
        run_seconds: float,
        no_downloads: bool,
        username: str,
        password: str | None,
        **options: Any,
    ) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        password = password or secrets.token_urlsafe(9)
        self._demo_user(username, password)

        key = secrets.token_urlsafe(16)
        port = fakeapi_port or free_port()
        fake_url = f"http://127.0.0.1:{port}"
        site_url = f"http://{addr}"
        env = {
            **os.environ,
            "COMETAPI_KEY": key,
            "COMETAPI_BASE_URL": fake_url,
            "RUNWAY_POLL_WINDOW": POLL_WINDOW,
            # Two overlapping poll runs can hold two workers; a third runs the downloads.
            "RUNWAY_Q_WORKERS": "3",
            "RUNWAY_DOWNLOAD_FROM_FAKE": "0" if no_downloads else "1",
            "PYTHONUNBUFFERED": "1",
        }
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        fake_argv = [*manage, "runway_fakeapi", "--port", str(port), "--api-key", key]
        fake_argv += ["--run-seconds", str(run_seconds), "--fail-prompt", "fail"]

        with Supervisor(log=self.stderr.write) as supervisor:
            supervisor.start("fake CometAPI", fake_argv, env=env)
            outcome = supervisor.wait(until=lambda: answers(fake_url))
            if outcome == "ready":
                supervisor.start("qcluster", [*manage, "qcluster"], env=env)
                supervisor.start("runserver", [*manage, "runserver", addr], env=env)
                # The Schedule (installed by migrate) first fires within a minute; start now.
                async_task(POLL_FUNC)
                outcome = supervisor.wait(until=lambda: answers(f"{site_url}/accounts/login/"))
            if outcome == "ready":
                self._banner(site_url, username, password)
                outcome = supervisor.wait()
            self.stdout.write("\nStopping the site, the cluster and the fake CometAPI ...")
            dead = supervisor.exited() if outcome == "exited" else None
        self.stdout.write("All stopped.")
        if dead is not None:
            raise CommandError(
                f"{dead.name} exited with code {dead.process.returncode}; see its output above."
            )

    def _demo_user(self, username: str, password: str) -> None:
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            user = user_model._default_manager.create_user(username, password=password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])

    def _banner(self, site_url: str, username: str, password: str) -> None:
        line = "-" * 64
        self.stdout.write(
            self.style.SUCCESS(
                f"\n{line}\n"
                f"  The example site is running: {site_url}/\n"
                f"  Log in as  {username} / {password}\n"
                f"  New video: {site_url}/videos/new/   Admin: {site_url}/admin/ "
                "(make a superuser with createsuperuser)\n"
                "  A prompt containing 'fail' ends as a moderation failure.\n"
                f"  Ctrl-C stops everything.\n{line}"
            )
        )

"""``manage.py runway_fakeapi``: the fake server as a process, as ``make serve`` runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_runway_feed.client import CometAPIClient
from django_runway_feed.exceptions import TaskNotVisibleError
from django_runway_feed.feed import parse_feed
from django_runway_feed.statuses import Status

ROOT = Path(__file__).resolve().parent.parent
CALLBACK = "https://callbacks.invalid/hook"
ARGS = ["--api-key", "k", "--run-seconds", "0.2", "--fail-prompt", "fail"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runway_fakeapi", "--port", str(port), *ARGS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # printed once the server is listening
        assert f"127.0.0.1:{port}" in banner
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def final_status(client: CometAPIClient, task_id: str) -> Status | None:
    for _ in range(200):  # the fake's tasks end after 2 s queued + 0.2 s running
        try:
            snapshot = parse_feed(client.feed(task_id))
        except TaskNotVisibleError:
            snapshot = None
        if snapshot is not None and snapshot.status in (Status.SUCCEEDED, Status.FAILED):
            return snapshot.status
        time.sleep(0.1)
    return None


def test_fail_prompt_makes_matching_prompts_fail_and_others_succeed(fake_process):
    with CometAPIClient(api_key="k", base_url=fake_process) as client:
        failing = client.create(
            "generate", {"prompt": "please fail now", "model": "gen4", "callback_url": CALLBACK}
        )
        passing = client.create(
            "generate", {"prompt": "a cat surfing", "model": "gen4", "callback_url": CALLBACK}
        )

        assert final_status(client, failing) == Status.FAILED
        assert final_status(client, passing) == Status.SUCCEEDED


def test_fail_prompt_must_not_be_empty():
    with pytest.raises(CommandError, match="--fail-prompt"):
        call_command("runway_fakeapi", "--fail-prompt", " ")

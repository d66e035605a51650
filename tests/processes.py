"""Starting and stopping the Django processes the cluster, crash and soak tests run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def start_python(argv: list[str], feed: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """Run ``python <argv>`` on the test database, with ``feed`` as its RUNWAY_FEED.

    The child records every signal it sends (``tests.testapp`` SignalRecord rows) and runs in
    a session of its own, so :func:`stop` reaches the workers a qcluster forks.
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "RUNWAY_TEST_DATABASE": connection.settings_dict["NAME"],
        "RUNWAY_TEST_CLUSTER_NAME": settings.Q_CLUSTER["name"],
        "RUNWAY_TEST_FEED_SETTINGS": json.dumps(feed),
        "RUNWAY_RECORD_SIGNALS": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_cluster(feed: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """A real ``qcluster`` on the test database and broker."""
    return start_python(["-m", "django", "qcluster"], feed, log)


def stop(processes: Iterable[subprocess.Popen[bytes]], *, timeout: float = 30) -> None:
    """SIGTERM every process group at once, then SIGKILL any still running after ``timeout``.

    All at once: a qcluster waits for its running poll jobs (up to POLL_WINDOW) before it exits.
    """
    processes = list(processes)
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

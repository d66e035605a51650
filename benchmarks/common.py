"""What every benchmark shares: a throwaway database, Django setup, the fake API, the output.

Each benchmark is run as a module (``python -m benchmarks.bench_throughput [--quick]``). It
creates its own database (a temporary SQLite file, or ``bench_runway_<pid>`` on the PostgreSQL
server of ``DATABASE_URL``), migrates it, measures, prints a table and one line per goal::

    goal <name>: <measured> (target <x>) ok|MISS

and drops the database again. The tests' databases are never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import multiprocessing.connection
import os
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

API_KEY = "test-key"
SETTINGS_MODULE = "benchmarks.settings"
# spawn, not fork: children start clean (no copied Django connections, no inherited RSS).
MP = multiprocessing.get_context("spawn")


# -- arguments and output -------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for CI (numbers are not judged)"
    )
    return parser.parse_args(argv)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in header]] + [[_cell(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def goal(
    name: str, measured: float | None, target: float, *, at_most: bool = False, unit: str = ""
) -> bool:
    """Print ``goal <name>: <measured> (target <x>) ok|MISS``; None means not measurable here."""
    suffix = f" {unit}" if unit else ""
    sign = "<=" if at_most else ">="
    if measured is None:
        print(f"goal {name}: n/a (target {sign} {target:g}{suffix}) n/a")
        return True
    met = measured <= target if at_most else measured >= target
    print(
        f"goal {name}: {measured:.3g}{suffix} (target {sign} {target:.3g}{suffix}) "
        f"{'ok' if met else 'MISS'}"
    )
    return met


# -- database --------------------------------------------------------------------------------


def on_postgres() -> bool:
    return bool(os.environ.get("DATABASE_URL"))


def setup_django() -> None:
    """Set Django up on the benchmark database named in ``RUNWAY_BENCH_DATABASE``."""
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()


def _admin_connection() -> Any:
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    return psycopg.connect(
        host=parts.hostname or None,
        port=parts.port or None,
        user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None,
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
        autocommit=True,
    )


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """Create and migrate a throwaway database, set Django up on it, drop it afterwards."""
    from django.core.management import call_command

    workdir = tempfile.mkdtemp(prefix="runway-bench-")
    if on_postgres():
        name = f"bench_runway_{os.getpid()}"
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
    else:
        name = str(Path(workdir) / "bench.sqlite3")
    os.environ["RUNWAY_BENCH_DATABASE"] = name
    try:
        setup_django()
        call_command("migrate", verbosity=0, interactive=False)
        yield name
    finally:
        from django.db import connections

        connections.close_all()
        if on_postgres():
            with _admin_connection() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for path in Path(workdir).glob("*"):
            path.unlink()
        Path(workdir).rmdir()


def database_label() -> str:
    from django.db import connection

    return f"{connection.vendor} ({connection.settings_dict['NAME']})"


def configure_feed(**values: Any) -> None:
    """Merge ``values`` into ``settings.RUNWAY_FEED`` (read at access time by the app)."""
    from django.conf import settings

    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, **values}


# -- tasks -----------------------------------------------------------------------------------


def task_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{index:07d}" for index in range(count)]


def seed_tasks(
    ids: Sequence[str],
    *,
    status: str = "running",
    now: dt.datetime,
    due_at: dt.datetime | None = None,
    chunk: int = 5000,
) -> None:
    """Insert one due row per id, in chunks (the fake server knows the same ids)."""
    from django.db import transaction

    from django_runway_feed.models import RunwayTask

    submitted = now - dt.timedelta(seconds=30)
    for start in range(0, len(ids), chunk):
        rows = [
            RunwayTask(
                task_id=task_id,
                route="tracked",
                status=status,
                submitted_at=submitted,
                started_at=submitted if status == "running" else None,
                last_polled_at=now - dt.timedelta(seconds=10),
                next_poll_at=due_at or now - dt.timedelta(seconds=1),
                provider_status="IN_PROGRESS" if status == "running" else "QUEUED",
                created_at=submitted,
            )
            for task_id in ids[start : start + chunk]
        ]
        with transaction.atomic():
            RunwayTask.objects.bulk_create(rows)


def make_due(now: dt.datetime) -> None:
    """Make every unfinished row due again, as it was seeded (running, quiet, unleased)."""
    from django_runway_feed.models import RunwayTask

    RunwayTask.objects.update(
        status="running",
        next_poll_at=now - dt.timedelta(seconds=1),
        last_polled_at=now - dt.timedelta(seconds=10),
        lease_owner="",
        lease_expires_at=None,
    )


def frozen_clock(moment: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that stands still, so a task polled once in a measured run is not due again."""
    return lambda: moment


def poll_until_idle(poller: Any) -> tuple[int, float]:
    """One poll run that drains what is due (``Poller.run(window=0)``); (polled, seconds)."""
    started = time.perf_counter()
    summary = poller.run(window=0)
    return int(summary.polled), time.perf_counter() - started


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB.

    Linux's VmHWM belongs to the address space, so it starts afresh at exec; ``ru_maxrss``
    would carry over the parent's peak into a spawned child (it survives fork and exec).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # ru_maxrss is in KiB on Linux, bytes on macOS; only Linux reaches here without /proc.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the fake CometAPI in its own process ----------------------------------------------------


def _serve_fake_api(
    conn: multiprocessing.connection.Connection,
    latency: float,
    prefix: str,
    count: int,
    script: dict[str, Any],
) -> None:
    from django_runway_feed.testing import FakeCometAPI, TaskScript

    with FakeCometAPI(api_key=API_KEY, latency=latency) as server:
        created = server.now() - 30
        task_script = TaskScript(**script)
        for task_id in task_ids(prefix, count):
            server.add_task(task_script, task_id=task_id, created_at=created)
        conn.send(server.url)
        while True:
            message = conn.recv()
            if message == "stop":
                break
            if message == "counts":
                conn.send(Counter(call.task_id for call in server.feed_calls()))


class RemoteFakeAPI:
    """A :class:`FakeCometAPI` serving ``count`` long-running tasks from a separate process.

    Out of process so its request handling competes neither for the poller's GIL nor for the
    memory a benchmark measures, as a real remote API would not.
    """

    def __init__(
        self,
        *,
        latency: float,
        prefix: str,
        count: int,
        script: dict[str, Any] | None = None,
    ) -> None:
        self._conn, child = MP.Pipe()
        # Running for ever at 0%: every poll of a running row is a quiet one.
        script = script or {"queued_for": 0, "run_for": 10_000_000}
        self._process = MP.Process(
            target=_serve_fake_api, args=(child, latency, prefix, count, script), daemon=True
        )
        self._process.start()
        self.url: str = self._conn.recv()

    def counts(self) -> Counter[str]:
        self._conn.send("counts")
        counts: Counter[str] = self._conn.recv()
        return counts

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def __enter__(self) -> RemoteFakeAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

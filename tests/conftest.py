from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections

from django_runway_feed import signals
from django_runway_feed.client import CometAPIClient
from django_runway_feed.testing import FakeClock, FakeCometAPI

SERVICE_MARKERS = {
    "postgres": ("DATABASE_URL", "needs PostgreSQL: set DATABASE_URL=postgres://..."),
    "redis": ("REDIS_URL", "needs Redis: set REDIS_URL=redis://..."),
}


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = [reason for env, reason in SERVICE_MARKERS.values() if not os.environ.get(env)]
    return [f"django-runway-feed: deselecting tests that {reason}" for reason in missing]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests needing a service run in the second pass of .ci/run, which sets both URLs; without
    # them they are deselected (not skipped), and the report header says why.
    if os.environ.get("REQUIRE_SERVICES"):
        return
    keep, drop = [], []
    for item in items:
        needs = [m for m in SERVICE_MARKERS if item.get_closest_marker(m)]
        (drop if any(not os.environ.get(SERVICE_MARKERS[m][0]) for m in needs) else keep).append(
            item
        )
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture
def now_of(clock: FakeClock) -> Callable[[], dt.datetime]:
    """The fake clock as aware datetimes, for the poller's ``clock=`` argument."""
    return lambda: dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC)


@pytest.fixture
def api(clock: FakeClock, settings: Any) -> Iterator[FakeCometAPI]:
    """A fake CometAPI on the test's clock, with RUNWAY_FEED pointed at it."""
    with FakeCometAPI(api_key="test-key", clock=clock) as server:
        settings.RUNWAY_FEED = {
            **settings.RUNWAY_FEED,
            "API_KEY": "test-key",
            "BASE_URL": server.url,
        }
        yield server


@pytest.fixture
def client_(api: FakeCometAPI) -> Iterator[CometAPIClient]:
    with CometAPIClient(api_key="test-key", base_url=api.url) as client:
        yield client


class SignalLog:
    """Records every signal of the app, with whether it was sent inside a transaction."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], bool]] = []

    def names(self) -> list[str]:
        return [name for name, _kwargs, _atomic in self.calls]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for n, kwargs, _atomic in self.calls if n == name]


@pytest.fixture
def signal_log() -> Iterator[SignalLog]:
    log = SignalLog()
    names = [
        "task_submitted",
        "task_status_changed",
        "task_progressed",
        "task_succeeded",
        "task_failed",
    ]
    receivers = []
    for name in names:

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            log.calls.append((_name, kwargs, connection.in_atomic_block))

        getattr(signals, name).connect(receiver, weak=False)
        receivers.append((name, receiver))
    yield log
    for name, receiver in receivers:
        getattr(signals, name).disconnect(receiver)


def run_in_threads(count: int, target: Callable[[], object], *, timeout: float = 120) -> list:
    """Run ``target`` in ``count`` threads released together, each with its own DB connection.

    Returns the exceptions the threads raised (an empty list when all went well).
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # handed back to the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return errors

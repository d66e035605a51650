from __future__ import annotations

import datetime as dt
import importlib.util
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections

from django_runway_feed import cleaning, signals
from django_runway_feed.client import CometAPIClient
from django_runway_feed.testing import FakeClock, FakeCometAPI

SERVICE_MARKERS = {
    "postgres": ("DATABASE_URL", "needs PostgreSQL: set DATABASE_URL=postgres://..."),
    "redis": ("REDIS_URL", "needs Redis: set REDIS_URL=redis://..."),
}


# Browser tests drive Debian's Chromium through Playwright (its own browser download does not
# work everywhere). RUNWAY_TEST_CHROMIUM points elsewhere.
CHROMIUM = os.environ.get("RUNWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "needs Playwright (pip install -e '.[test]')"
    return None


def _missing_reasons() -> list[str]:
    missing = [reason for env, reason in SERVICE_MARKERS.values() if not os.environ.get(env)]
    browser = _browser_missing()
    return [*missing, browser] if browser else missing


def pytest_report_header(config: pytest.Config) -> list[str]:
    if os.environ.get("REQUIRE_SERVICES"):
        return []
    return [f"django-runway-feed: deselecting tests that {reason}" for reason in _missing_reasons()]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests needing a service run in .ci/run, which sets REQUIRE_SERVICES (PostgreSQL, Redis and
    # the browser) or REQUIRE_BROWSER: a missing one is then an error, not a skip. Elsewhere they
    # are deselected, and the report header says why.
    if os.environ.get("REQUIRE_SERVICES"):
        return
    browser_missing = not os.environ.get("REQUIRE_BROWSER") and _browser_missing() is not None
    keep, drop = [], []
    for item in items:
        needs = [m for m in SERVICE_MARKERS if item.get_closest_marker(m)]
        missing = any(not os.environ.get(SERVICE_MARKERS[m][0]) for m in needs)
        if item.get_closest_marker("browser") and browser_missing:
            missing = True
        (drop if missing else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the whole run (Playwright's sync API)."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # around it are still plain synchronous code.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context and page (no cookies shared between tests)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


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


@pytest.fixture
def healthy(settings: Any) -> None:
    """A healthy site: valid settings, one Schedule, a fresh successful run, one worker."""
    from django.utils import timezone

    from django_runway_feed.models import PollerState
    from django_runway_feed.schedules import install_schedule

    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "catch_up": False, "workers": 1}
    install_schedule()
    PollerState.objects.update_or_create(
        pk=1,
        defaults={
            "last_run_at": timezone.now(),
            "last_success_at": timezone.now(),
            "last_run": {"rounds": 1, "claimed": 2, "polled": 2, "transitions": 1, "errors": 0},
        },
    )


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


def unclean(value: Any) -> list[str]:
    """Where ``value`` (read back from the database) holds something the cleaning removes."""
    found: list[str] = []

    def walk(item: Any, path: str) -> None:
        if isinstance(item, str):
            if cleaning.clean_text(item) != item:
                found.append(path)
        elif isinstance(item, float) and not math.isfinite(item):
            found.append(path)
        elif isinstance(item, dict):
            for key, child in item.items():
                walk(key, f"{path}.<key>")
                walk(child, f"{path}.{key}")
        elif isinstance(item, list):
            for index, child in enumerate(item):
                walk(child, f"{path}[{index}]")

    walk(value, "")
    return found

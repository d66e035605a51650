"""pytest fixtures for the fake CometAPI (registered as the ``django_runway_feed`` plugin).

Installed with the package, the plugin gives any project these fixtures:

- ``fake_cometapi_clock``: a :class:`~django_runway_feed.testing.FakeClock`;
- ``fake_cometapi``: a running :class:`~django_runway_feed.testing.FakeCometAPI` on real time;
- ``fake_cometapi_clocked``: the same, on ``fake_cometapi_clock``'s time.

The two servers point ``settings.RUNWAY_FEED`` at themselves while the test runs, when Django is
configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest

from .clock import FakeClock
from .server import FakeCometAPI

API_KEY = "test-key"


@pytest.fixture
def fake_cometapi_clock() -> FakeClock:
    """A :class:`FakeClock` set to the current time; it only moves when the test moves it."""
    return FakeClock()


@pytest.fixture
def fake_cometapi() -> Iterator[FakeCometAPI]:
    """A started :class:`FakeCometAPI` on real time, expecting the key ``"test-key"``.

    When Django settings are configured, ``settings.RUNWAY_FEED`` is overridden for the test
    (with ``django.test.override_settings``) so that ``API_KEY`` is ``"test-key"`` and
    ``BASE_URL`` is the server's URL; the site's other ``RUNWAY_FEED`` keys are kept. Without
    Django settings the server is simply yielded. The server is stopped at teardown.
    """
    with FakeCometAPI(api_key=API_KEY) as server, _pointing_settings_at(server):
        yield server


@pytest.fixture
def fake_cometapi_clocked(fake_cometapi_clock: FakeClock) -> Iterator[FakeCometAPI]:
    """Like ``fake_cometapi``, but tasks move on ``fake_cometapi_clock``, not real time.

    Advance the clock (``fake_cometapi_clock.advance(30)``) to move every task through its
    script without sleeping.
    """
    with (
        FakeCometAPI(api_key=API_KEY, clock=fake_cometapi_clock) as server,
        _pointing_settings_at(server),
    ):
        yield server


def _pointing_settings_at(server: FakeCometAPI) -> AbstractContextManager[Any]:
    # Imported here: the plugin loads in every pytest run of a site that installs the
    # package, including runs that never configure Django.
    try:
        from django.conf import settings
        from django.test import override_settings
    except ImportError:
        return nullcontext()
    if not settings.configured:
        return nullcontext()
    current = getattr(settings, "RUNWAY_FEED", None) or {}
    return override_settings(RUNWAY_FEED={**current, "API_KEY": API_KEY, "BASE_URL": server.url})

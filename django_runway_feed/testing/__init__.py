"""The shipped fake CometAPI server, for host sites' tests and local work.

Importing this package does not touch Django: the server runs without settings. The pytest
fixtures live in :mod:`django_runway_feed.testing.pytest_plugin`.
"""

from __future__ import annotations

from .clock import FakeClock
from .scripts import Fault, TaskScript
from .server import CallbackDelivery, CreateRequest, FakeCometAPI, FeedCall

__all__ = [
    "CallbackDelivery",
    "CreateRequest",
    "FakeClock",
    "FakeCometAPI",
    "Fault",
    "FeedCall",
    "TaskScript",
]

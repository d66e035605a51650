"""Generate Runway videos through CometAPI and follow every task to the end with django-q2."""

from __future__ import annotations

__version__ = "0.1.0"

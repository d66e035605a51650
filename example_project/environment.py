"""Read the database and broker from the environment (DATABASE_URL, REDIS_URL).

A deliberately small parser so the example and the tests need nothing beyond the app's own
dependencies (plus psycopg for PostgreSQL).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def database_from_env(sqlite_path: Path) -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            # Several workers write at once: wait for the lock rather than fail at once.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ValueError(f"Unsupported DATABASE_URL scheme {parts.scheme!r}; use postgres://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def q_cluster_from_env(name: str, **overrides: Any) -> dict[str, Any]:
    """django-q2 settings: the Redis broker when REDIS_URL is set, the ORM broker otherwise."""
    cluster: dict[str, Any] = {
        "name": name,
        "workers": 2,
        "timeout": 120,
        "retry": 180,
        "catch_up": False,
        "max_attempts": 1,
        "save_limit": 100,
        "poll": 0.5,
        "label": "Django Q",
    }
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        cluster["redis"] = redis_url
    else:
        cluster["orm"] = "default"
    cluster.update(overrides)
    return cluster

"""What the database can do beyond the ORM, for the few statements written by hand."""

from __future__ import annotations

import sqlite3

from django.db import connection


def supports_update_returning() -> bool:
    """``UPDATE ... RETURNING``: PostgreSQL, and SQLite from 3.35."""
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)

"""Row writes the poller and the services share, and how they tell the errors apart.

A value the database refuses for one row (``ROW_WRITE_ERRORS``) costs that row's task alone; a
database that is locked or gone (``DATABASE_TROUBLE``) is the whole round's trouble.
:func:`statement_guard` keeps a caller's transaction usable after a refused statement, and
:func:`bulk_write` writes the quiet poll results of a round in one statement per chunk.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any, cast

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Field

from .models import RunwayTask

# A write refused for one row's values (a constraint, a value the column or the driver cannot
# take) costs that row's task one poll; a database that is locked or gone is the round's trouble
# (see Poller._guarded) and is never mistaken for it.
ROW_WRITE_ERRORS = (DatabaseError, ValueError, RecursionError)
DATABASE_TROUBLE = (OperationalError, InterfaceError)


def supports_update_from_values() -> bool:
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        # UPDATE ... FROM arrived in SQLite 3.33.
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 33)
    return False


def bulk_write(owner: str, tasks: list[RunwayTask], names: list[str]) -> None:
    """Write ``names`` of every task still leased to ``owner``, in one statement per chunk.

    Django's ``bulk_update`` builds a ``CASE WHEN`` expression per field and row, which costs
    milliseconds of CPU per task (most of a poll round, measured in ``benchmarks/``). An
    ``UPDATE ... FROM (VALUES ...)`` with plain parameters writes the same values for a fraction
    of that. Backends without it fall back to ``bulk_update``.
    """
    if not tasks:
        return
    if not supports_update_from_values():
        RunwayTask.objects.filter(lease_owner=owner).bulk_update(tasks, names)
        return
    meta = RunwayTask._meta
    fields = [cast("Field[Any, Any]", meta.get_field(name)) for name in names]
    pk_field = meta.pk
    assert pk_field is not None
    quote = connection.ops.quote_name
    postgres = connection.vendor == "postgresql"
    placeholders = ", ".join(
        f"%s::{field.cast_db_type(connection)}" if postgres else "%s"
        for field in [pk_field, *fields]
    )
    columns = ", ".join(["pk", *(f"c{index}" for index in range(len(fields)))])
    assignments = ", ".join(
        f"{quote(str(field.column))} = v.c{index}" for index, field in enumerate(fields)
    )
    table, pk = quote(meta.db_table), quote(str(pk_field.column))
    per_row = len(fields) + 1
    max_params = connection.features.max_query_params or 65_535
    chunk = max(1, (max_params - 1) // per_row)
    with connection.cursor() as cursor:
        for start in range(0, len(tasks), chunk):
            rows = tasks[start : start + chunk]
            params: list[Any] = []
            for task in rows:
                params.append(task.pk)
                params.extend(
                    field.get_db_prep_save(getattr(task, field.attname), connection)
                    for field in fields
                )
            values = ", ".join([f"({placeholders})"] * len(rows))
            cursor.execute(
                f"WITH v ({columns}) AS (VALUES {values}) "  # noqa: S608 (names quoted, values bound)
                f"UPDATE {table} SET {assignments} FROM v "
                f"WHERE {table}.{pk} = v.pk AND {table}.{quote('lease_owner')} = %s",
                [*params, owner],
            )


def statement_guard() -> AbstractContextManager[object]:
    """What a write that may be refused needs so the connection stays usable if it is.

    In autocommit a refused statement leaves nothing behind. Inside a caller's transaction it
    would leave that transaction aborted (PostgreSQL) and fail every write after it: a savepoint
    contains it. No transaction of our own otherwise, so a quiet round costs no extra query.
    """
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()

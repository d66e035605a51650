"""Counting the rows of a large table: bounded counts, and PostgreSQL's estimates.

An exact ``COUNT`` reads every row it counts; a year of tasks is a million of them, so pages
and reports that show a count on every view count up to a limit, or ask PostgreSQL what its
statistics (the last ``ANALYZE``) say.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models


def count_up_to(queryset: models.QuerySet[Any], limit: int) -> int:
    """The number of rows of ``queryset``, counted up to ``limit + 1`` at most."""
    return queryset.order_by()[: limit + 1].count()


def estimated_rows(model: type[models.Model]) -> int | None:
    """PostgreSQL's estimate of the rows of ``model``'s table, or None (other databases, or a
    table never analyzed)."""
    connection = connections[model._default_manager.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    # -1 until the table was first analyzed.
    return int(row[0]) if row and row[0] >= 0 else None


def estimated_value_counts(model: type[models.Model], field: str) -> dict[str, int]:
    """PostgreSQL's estimate of the rows per value of ``field``, for its common values.

    The table's estimated rows times each value's share in the column's statistics. Empty on
    other databases, or before the table was analyzed.
    """
    connection = connections[model._default_manager.db]
    total = estimated_rows(model)
    if total is None:
        return {}
    column = model._meta.get_field(field).column  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::text[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            [model._meta.db_table, column],
        )
        row = cursor.fetchone()
    if not row or row[0] is None:
        return {}
    return {str(value): round(total * share) for value, share in zip(row[0], row[1], strict=True)}

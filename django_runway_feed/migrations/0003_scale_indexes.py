"""Indexes for a large table, built without a long lock.

On PostgreSQL every index is built with ``CREATE INDEX CONCURRENTLY``: writes go on while it
builds (which is why this migration is not atomic). Other databases build them as usual.

On PostgreSQL a trigram index on the prompt also serves the admin's search, when the
``pg_trgm`` extension is available or can be created; without it the search still works,
by reading the table. It is not part of the model state, so no other database sees it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

logger = logging.getLogger("django_runway_feed.migrations")

PROMPT_TRGM_INDEX = "runway_task_prompt_trgm"


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """``AddIndex``, built ``CONCURRENTLY`` on PostgreSQL.

    Django's own ``AddIndexConcurrently`` lives in ``django.contrib.postgres``, which needs
    psycopg to import; this one runs on every database.
    """

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: Any,
        to_state: Any,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: Any,
        to_state: Any,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


def add_prompt_trigram_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(
        apps.get_model("django_runway_feed", "RunwayTask")._meta.db_table
    )
    with connection.cursor() as cursor:
        try:
            # Trusted since PostgreSQL 13: the database's owner may create it.
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except Exception as exc:
            logger.warning("pg_trgm is not available (%s): the admin search reads the table", exc)
            return
        # UPPER(prompt): what the admin's case-insensitive "contains" compares.
        cursor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {PROMPT_TRGM_INDEX} "
            f"ON {table} USING gin (UPPER(prompt) gin_trgm_ops)"
        )


def drop_prompt_trigram_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {PROMPT_TRGM_INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_runway_feed", "0002_downloads_resubmit_budget"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="runwaytask",
            index=models.Index(fields=["created_at", "id"], name="runway_task_created_idx"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="runwaytask",
            index=models.Index(fields=["last_polled_at"], name="runway_task_polled_idx"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="taskevent",
            index=models.Index(
                condition=models.Q(("kind", "transition")),
                fields=["created_at"],
                name="runway_event_transition_idx",
            ),
        ),
        migrations.RunPython(add_prompt_trigram_index, drop_prompt_trigram_index, elidable=False),
    ]

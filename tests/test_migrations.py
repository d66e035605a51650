"""Migrations 0003 and 0005 add their indexes without a long lock, and run backwards and
forwards on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from django_runway_feed.models import RunwayTask, TaskEvent

pytestmark = pytest.mark.django_db(transaction=True)

SCALE_INDEXES = {
    RunwayTask._meta.db_table: {"runway_task_created_idx", "runway_task_polled_idx"},
    TaskEvent._meta.db_table: {"runway_event_transition_idx"},
}


def indexes(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


def test_scale_indexes_migrate_backwards_and_forwards():
    call_command("migrate", "django_runway_feed", "0002", verbosity=0)
    for table, names in SCALE_INDEXES.items():
        assert not names & indexes(table)
    assert "runway_task_prompt_trgm" not in indexes(RunwayTask._meta.db_table)

    call_command("migrate", "django_runway_feed", verbosity=0)

    for table, names in SCALE_INDEXES.items():
        assert names <= indexes(table)
    # The trigram index of the search exists on PostgreSQL only (pg_trgm is available here).
    trigram = "runway_task_prompt_trgm" in indexes(RunwayTask._meta.db_table)
    assert trigram == (connection.vendor == "postgresql")


def test_scale_migration_is_not_atomic_so_postgresql_can_build_concurrently():
    from importlib import import_module

    migration = import_module("django_runway_feed.migrations.0003_scale_indexes").Migration

    assert migration.atomic is False


CALLBACK_EVIDENCE_COLUMNS = {"expects_callback", "callback_at"}


def columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {
            column.name for column in connection.introspection.get_table_description(cursor, table)
        }


def test_callback_evidence_migrates_backwards_and_forwards():
    table = RunwayTask._meta.db_table
    call_command("migrate", "django_runway_feed", "0004", verbosity=0)
    assert not CALLBACK_EVIDENCE_COLUMNS & columns(table)
    assert "runway_task_finished_idx" not in indexes(table)
    before = MigrationExecutor(connection).loader.project_state(
        ("django_runway_feed", "0004_gateway_health")
    )
    old = before.apps.get_model("django_runway_feed", "RunwayTask").objects.create(
        route="generate", status="succeeded"
    )

    call_command("migrate", "django_runway_feed", verbosity=0)

    assert columns(table) >= CALLBACK_EVIDENCE_COLUMNS
    assert "runway_task_finished_idx" in indexes(table)
    # A task created before the upgrade expects no callback: it is no evidence either way.
    task = RunwayTask.objects.get(pk=old.pk)
    assert task.expects_callback is False
    assert task.callback_at is None


def test_callback_evidence_migration_is_not_atomic_so_postgresql_can_build_concurrently():
    from importlib import import_module

    module = import_module("django_runway_feed.migrations.0005_callback_evidence_run_times")

    assert module.Migration.atomic is False
    assert isinstance(module.Migration.operations[-1], module.AddIndexConcurrentlyOnPostgres)

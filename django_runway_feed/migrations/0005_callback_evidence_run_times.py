"""What the cadence learns from: which tasks expect a callback, when it came, newest finishes.

The two columns are added without rewriting the table (a constant default on PostgreSQL 11+).
The ``finished_at`` index is built ``CONCURRENTLY`` on PostgreSQL, so this migration is not
atomic, like 0003.
"""

from __future__ import annotations

from importlib import import_module

from django.db import migrations, models

AddIndexConcurrentlyOnPostgres = import_module(
    "django_runway_feed.migrations.0003_scale_indexes"
).AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_runway_feed", "0004_gateway_health"),
    ]

    operations = [
        migrations.AddField(
            model_name="runwaytask",
            name="callback_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="callback received"),
        ),
        migrations.AddField(
            model_name="runwaytask",
            name="expects_callback",
            field=models.BooleanField(default=False, verbose_name="expects a callback"),
        ),
        migrations.AddField(
            model_name="pollerstate",
            name="callbacks_state",
            field=models.CharField(blank=True, max_length=16),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="runwaytask",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at"],
                name="runway_task_finished_idx",
            ),
        ),
    ]

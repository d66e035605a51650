from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.db import connections
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from .conf import conf


def install_schedule_after_migrate(
    sender: AppConfig, *, using: str = "default", **kwargs: Any
) -> None:
    from .schedules import install_schedule

    if not (conf.AUTO_SCHEDULE and apps.is_installed("django_q")):
        return
    from django_q.models import Schedule

    # A partial migrate (only this app) may run before django_q's tables exist.
    if Schedule._meta.db_table in connections[using].introspection.table_names():
        install_schedule(using=using)


class RunwayFeedConfig(AppConfig):
    name = "django_runway_feed"
    label = "django_runway_feed"
    verbose_name = _("Runway feed")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            downloads,
            models,
            outbox,
            services,
        )

        # Lower layers reach higher ones through hooks, never imports (docs/architecture.md).
        outbox.when_succeeded(downloads.on_task_succeeded)
        models.register_services(services)

        # The schedule is written after migrate, never here: ready() must not touch the DB.
        post_migrate.connect(
            install_schedule_after_migrate,
            sender=self,
            dispatch_uid="django_runway_feed.install_schedule",
        )

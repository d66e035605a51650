"""Registers the app's system checks with Django (``AppConfig.ready`` imports this module).

The checks themselves live below this edge: the settings checks in
:mod:`django_runway_feed.settings_checks`, the operational ones in
:mod:`django_runway_feed.health`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Tags, register

from .health import check_catch_up, check_sqlite_workers, state_messages
from .settings_checks import check_settings
from .site_checks import check_callback_reachable

register(check_settings, Tags.compatibility)
# W030 judges a production setup (a callback origin on localhost is normal in development).
register(check_callback_reachable, Tags.compatibility, deploy=True)

# Operational health (django_runway_feed.health). The settings-only catch_up check runs with every
# ``check``; the rest read the database or judge production setup, so they only run with
# ``check --deploy`` (and ``runway_status --check``): plain ``check`` and ``migrate`` on a fresh
# database never query tables that do not exist yet.
#
# Deliberately not tagged ``Tags.database``: Django 6.1 leaves such checks out unless ``check`` is
# given ``--database``, and operators look for these under plain ``check --deploy``. The deploy
# flag alone already keeps them away from ``check``, ``migrate`` and ``runserver``.
HEALTH_TAG = "runway_feed_health"


@register(Tags.compatibility)
def check_cluster_catch_up(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    return check_catch_up()


@register(HEALTH_TAG, deploy=True)
def check_polling_health(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    return [*check_sqlite_workers(), *state_messages()]

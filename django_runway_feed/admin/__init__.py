"""The Django admin of Runway tasks, one module per part.

- :mod:`~django_runway_feed.admin.tasks`: ``RunwayTaskAdmin``, composed of the task list
  (:mod:`~django_runway_feed.admin.task_list`: badges, progress), its summary and live view
  (:mod:`~django_runway_feed.admin.task_summary`), the task page
  (:mod:`~django_runway_feed.admin.task_page`: output, JSON, timeline) and the operator actions
  (:mod:`~django_runway_feed.admin.task_actions`, calling :mod:`django_runway_feed.actions`);
  :mod:`~django_runway_feed.admin.base` holds what they share;
- :mod:`~django_runway_feed.admin.history`: the read-only event and poller-state pages;
- :mod:`~django_runway_feed.admin.filters`: the task list's filters;
- :mod:`~django_runway_feed.admin.display`: escaping and formatting helpers shared by the pages.

Importing this package registers the model admins (Django's admin autodiscovery does it).
"""

from __future__ import annotations

from . import history, tasks  # noqa: F401  (importing them registers the model admins)

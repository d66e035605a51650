"""The Django admin of Runway tasks, one module per part.

- :mod:`~django_runway_feed.admin.tasks`: the task list (badges, progress, the summary) and the
  task page (output, JSON, timeline), with the operator actions of
  :mod:`django_runway_feed.actions`;
- :mod:`~django_runway_feed.admin.history`: the read-only event and poller-state pages;
- :mod:`~django_runway_feed.admin.filters`: the task list's filters;
- :mod:`~django_runway_feed.admin.display`: escaping and formatting helpers shared by the pages.

Importing this package registers the model admins (Django's admin autodiscovery does it).
"""

from __future__ import annotations

from . import history, tasks  # noqa: F401  (importing them registers the model admins)

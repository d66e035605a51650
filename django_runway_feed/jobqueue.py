"""Hand a job to django-q2 by its dotted path.

Jobs are queued by name (the functions in :mod:`django_runway_feed.jobs`), so one queued before
an upgrade still finds its function after it. With ``Q_CLUSTER['sync']`` the job runs at once,
in this process (tests and the demo).
"""

from __future__ import annotations

from typing import Any

from .conf import q_cluster


def enqueue(func: str, *args: Any) -> None:
    """Queue ``func`` (a dotted path) with ``args`` on the site's django-q2 broker."""
    # django-q2's task module reads its models: imported on use, once the apps are ready.
    from django_q.tasks import async_task

    cluster = q_cluster()
    async_task(func, *args, sync=bool(cluster and cluster.get("sync")))

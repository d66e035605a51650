"""The API key never leaves the settings, and hostile input finds no way in.

One scenario drives every path that handles the key (creates accepted and refused, polls through
faults and a 401 pause, a callback's queued poll, the status report and the checks) with a
distinctive key, then searches for it everywhere it must not be: every table of the database,
django-q2's queued and stored task arguments, log records of every logger at DEBUG (urllib3's
included), exception messages and reprs, the admin pages. Size caps and the callback endpoint
are proven in test_client.py, test_faults.py and test_callbacks.py (see docs/reliability.md).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.urls import NoReverseMatch, reverse
from django_q.brokers import get_broker
from django_q.models import Task
from django_q.signing import SignedPackage

from django_runway_feed import health, services
from django_runway_feed.client import CometAPIClient
from django_runway_feed.exceptions import RunwayFeedError
from django_runway_feed.models import RunwayTask
from django_runway_feed.polling import AUTH_PAUSE_SECONDS, Poller
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeClock, FakeCometAPI, Fault, TaskScript

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-Zq8LEAKCANARY4f1d9e2b7c"


@pytest.fixture
def clock() -> FakeClock:
    # Creates stamp rows with the real time: the poller's clock starts there too.
    return FakeClock(start=time.time())


@pytest.fixture
def secret_api(clock, settings) -> Iterator[FakeCometAPI]:
    with FakeCometAPI(api_key=SECRET, clock=clock) as server:
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": SECRET, "BASE_URL": server.url}
        yield server


@pytest.fixture
def everything(secret_api, clock, now_of, caplog) -> dict[str, Any]:
    """Run the scenario; return the texts it produced (logs, errors, reports)."""
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    api = secret_api
    get_broker().purge_queue()

    accepted = RunwayTask.objects.generate("a cat surfing", metadata={"kind": "accepted"})
    api.inject(Fault.unauthorized(), route="create")
    refused = RunwayTask.objects.generate("a dog surfing", metadata={"kind": "refused"})
    api.inject(Fault.server_error(500), route="create")
    unknown = RunwayTask.objects.generate("a bird surfing", metadata={"kind": "unknown"})
    tracked = RunwayTask.objects.track(api.add_task(TaskScript(run_for=4)), now=now_of())
    for fault in (Fault.server_error(502), Fault.html(), Fault.reset(), Fault.unauthorized()):
        api.inject(fault, task_id=tracked.task_id)

    with Poller(clock=now_of) as poller:
        texts.append(repr(poller.client))
        for _ in range(60):
            poller.run_round()
            clock.advance(AUTH_PAUSE_SECONDS / 20)
        # A task still pollable, and a callback that queues its poll through django-q2.
        waiting = RunwayTask.objects.track(api.add_task(TaskScript(queued_for=10_000)))
        clock.advance(10)
        poller.run_round()
    services.request_prompt_poll(waiting.pk, now=now_of() + dt.timedelta(seconds=10))

    # Errors as a caller sees them.
    with CometAPIClient() as client:
        for fault in (Fault.unauthorized(), Fault.quota(), Fault.malformed_json(), Fault.reset()):
            api.inject(fault)
            try:
                client.feed(str(tracked.task_id))
            except RunwayFeedError as exc:
                texts += [str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)]
                texts.append(json.dumps(getattr(exc, "body", "")))
    try:
        CometAPIClient(base_url="http://127.0.0.1:9", timeout=(0.2, 0.2)).feed("x")
    except RunwayFeedError as exc:
        texts += [str(exc), repr(exc), repr(exc.__cause__)]

    out = io.StringIO()
    call_command("runway_status", "--json", stdout=out)
    texts.append(out.getvalue())
    texts += [str(message) for message in health.evaluate()]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    return {
        "texts": texts,
        "tasks": [accepted, refused, unknown, tracked, waiting],
        "records": list(caplog.records),
    }


def database_dump() -> str:
    """Every row of every table, as text (bytes decoded leniently)."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    parts.append(str(value))
    return "\n".join(parts)


def test_scenario_covers_the_paths_it_claims(everything, secret_api):
    accepted, refused, unknown, tracked, waiting = everything["tasks"]
    for task in everything["tasks"]:
        task.refresh_from_db()
    assert accepted.task_id
    assert refused.status == Status.FAILED
    assert unknown.status in (Status.FAILED, Status.SUBMITTING)
    assert tracked.status == Status.SUCCEEDED
    assert waiting.status == Status.QUEUED
    assert any(call.status_code == 401 for call in secret_api.feed_calls(tracked.task_id))
    assert any(r.name.startswith("urllib3") for r in everything["records"])
    assert any(r.levelno == logging.DEBUG for r in everything["records"])


def test_key_not_in_logs_errors_or_reports(everything):
    leaks = [text for text in everything["texts"] if SECRET in text]

    assert leaks == []


def test_key_not_in_any_table(everything):
    dump = database_dump()

    assert "a cat surfing" in dump  # the dump does see what the scenario wrote
    assert SECRET not in dump


def test_key_not_in_django_q_task_arguments(everything, settings, now_of):
    broker = get_broker()
    packages = []
    while broker.queue_size():
        packages += [SignedPackage.loads(package) for _id, package in broker.dequeue() or []]
    assert "django_runway_feed.jobs.poll_task" in [p["func"] for p in packages]

    # Run one through django-q2 synchronously too, so a Task row stores its arguments.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    waiting = everything["tasks"][-1]
    # The jobs dequeued above never run: the mark of a pending callback job goes with them.
    RunwayTask.objects.filter(pk=waiting.pk).update(callback_job_queued_at=None)
    services.request_prompt_poll(waiting.pk, now=now_of() + dt.timedelta(seconds=30))
    stored = list(Task.objects.all())

    texts = [repr((p.get("args"), p.get("kwargs"), p)) for p in packages]
    texts += [repr((t.func, t.args, t.kwargs, t.result)) for t in stored]
    assert stored
    assert not [text for text in texts if SECRET in text]


def test_key_not_on_admin_pages(everything, client):
    superuser = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(superuser)
    pages = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        try:
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        except NoReverseMatch:
            continue
        for pk in model._default_manager.values_list("pk", flat=True)[:5]:
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]))
        assert model_admin is not None

    bodies = {}
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        bodies[page] = response.content.decode()

    assert any("/django_runway_feed/runwaytask/" in page for page in pages)
    assert [page for page, body in bodies.items() if SECRET in body] == []


def test_admin_refuses_staff_without_permissions(everything, client):
    staff = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    client.force_login(staff)

    for model in admin.site._registry:
        if model._meta.app_label != "django_runway_feed":
            continue
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert client.get(url).status_code == 403, url
        for pk in model._default_manager.values_list("pk", flat=True)[:2]:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
            assert client.post(change, {}).status_code == 403, change

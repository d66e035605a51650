from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from django_runway_feed import services
from django_runway_feed.client import CometAPIClient
from django_runway_feed.exceptions import ConfigurationError
from django_runway_feed.models import EventKind, RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, Fault, TaskScript
from tests.conftest import run_in_threads
from tests.testapp.models import Product

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = "https://example.com/cat.png"
VIDEO = "https://example.com/dance.mp4"


def last_body(api: FakeCometAPI) -> dict:
    body = dict(api.create_requests[-1].body)
    body.pop("callback_url")
    return body


# -- what reaches the wire -------------------------------------------------------------------


def test_generate_sends_exact_body_and_headers(api):
    task = RunwayTask.objects.generate(
        "a cat surfing",
        image=IMAGE,
        end_image="https://example.com/end.png",
        model="gen4_turbo",
        ratio="720:1280",
        style="cinematic",
        seconds=10,
        motion_vector={"x": 1, "z": -2.5},
    )

    request = api.create_requests[-1]
    assert request.route == "generate"
    assert request.authorized
    assert request.headers["X-Runway-Version"] == "2024-11-06"
    assert request.headers["Content-Type"] == "application/json"
    assert last_body(api) == {
        "prompt": "a cat surfing",
        "model": "gen4_turbo",
        "ratio": "720:1280",
        "style": "cinematic",
        "image": IMAGE,
        "last_image": "https://example.com/end.png",
        "options": {"seconds": 10, "motion_vector": {"x": 1, "z": -2.5}},
    }
    assert task.request == last_body(api)
    assert task.status == Status.QUEUED
    assert task.task_id == request.task_id


def test_video_to_video_sends_exact_body(api):
    RunwayTask.objects.video_to_video(
        VIDEO, prompt="pixel art", structure_transformation=0.3, flip=True, seconds=5
    )

    assert api.create_requests[-1].route == "video2video"
    assert last_body(api) == {
        "video": VIDEO,
        "model": "gen4",
        "prompt": "pixel art",
        "options": {"structure_transformation": 0.3, "flip": True, "seconds": 5},
    }


def test_act_one_sends_exact_body(api):
    task = RunwayTask.objects.act_one(VIDEO, IMAGE)

    assert api.create_requests[-1].route == "act_one"
    assert last_body(api) == {"video": VIDEO, "image": IMAGE}
    assert task.route == "act_one"


def test_create_callback_url_is_invalid_host_by_default(api):
    task = RunwayTask.objects.generate("a cat")

    url = api.create_requests[-1].body["callback_url"]
    assert url == (
        f"https://callback.invalid/runway-feed/callback/{task.pk}/"
        f"{services.callback_signature(task.pk)}/"
    )


def test_create_callback_url_uses_site_base(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "CALLBACK_BASE_URL": "https://site.example"}

    task = RunwayTask.objects.generate("a cat")

    assert api.create_requests[-1].body["callback_url"] == (
        f"https://site.example/runway-feed/callback/{task.pk}/"
        f"{services.callback_signature(task.pk)}/"
    )


def test_create_with_callback_base_url_expects_a_callback(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "CALLBACK_BASE_URL": "https://site.example"}

    task = RunwayTask.objects.generate("a cat")

    assert task.expects_callback is True
    assert task.callback_at is None


def test_create_without_callback_base_url_expects_no_callback(api):
    task = RunwayTask.objects.generate("a cat")

    assert task.expects_callback is False


def announced_finishes(count: int) -> None:
    """Recent successes whose callbacks came: the evidence that callbacks arrive."""
    finished = timezone.now() - dt.timedelta(minutes=5)
    for _ in range(count):
        RunwayTask.objects.create(
            route="generate",
            status=Status.SUCCEEDED,
            expects_callback=True,
            finished_at=finished,
            callback_at=finished,
        )


def first_poll_in(task: RunwayTask) -> float:
    assert task.next_poll_at is not None
    assert task.submitted_at is not None
    return (task.next_poll_at - task.submitted_at).total_seconds()


def test_create_while_callbacks_arrive_polls_first_at_the_safety_net(api, settings):
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "CALLBACK_BASE_URL": "https://site.example",
        "POLL_INTERVAL": 5,
        "MAX_POLL_INTERVAL": 60,
    }
    announced_finishes(2)

    task = RunwayTask.objects.generate("a cat")

    assert task.status == Status.QUEUED
    assert 0.9 * 60 * 0.9 <= first_poll_in(task) <= 0.9 * 60 * 1.1


def test_create_without_evidence_of_callbacks_polls_first_at_poll_interval(api, settings):
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "CALLBACK_BASE_URL": "https://site.example",
        "POLL_INTERVAL": 5,
        "MAX_POLL_INTERVAL": 60,
    }
    announced_finishes(1)

    task = RunwayTask.objects.generate("a cat")

    assert first_poll_in(task) == 5


def test_create_without_callback_base_url_ignores_the_evidence(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5, "MAX_POLL_INTERVAL": 60}
    announced_finishes(2)

    task = RunwayTask.objects.generate("a cat")

    assert first_poll_in(task) == 5


def test_generate_links_host_object_and_metadata(api):
    product = Product.objects.create(name="mug")

    task = RunwayTask.objects.generate("a mug", content_object=product, metadata={"sku": 7})

    assert task.content_object == product
    assert task.metadata == {"sku": 7}
    assert list(RunwayTask.objects.for_object(product)) == [task]


# -- validation before any HTTP -------------------------------------------------------------

INVALID_GENERATE = [
    ({"prompt": ""}, "prompt", "Enter a prompt or an image URL."),
    ({"prompt": "x" * 1001}, "prompt", "Keep the prompt to 1000 characters (it has 1001)."),
    (
        {"prompt": "a", "image": "ftp://x/y.png"},
        "image",
        "Enter an image URL that starts with http:// or https://.",
    ),
    (
        {"prompt": "a", "image": "/relative.png"},
        "image",
        "Enter an image URL that starts with http:// or https://.",
    ),
    (
        {"prompt": "a", "image": "javascript:alert(1)"},
        "image",
        "Enter an image URL that starts with http:// or https://.",
    ),
    (
        {"prompt": "a", "ratio": "16/9"},
        "ratio",
        "ratio must look like '1280:720' (width:height).",
    ),
    ({"prompt": "a", "seconds": 7}, "seconds", "seconds must be 5 or 10."),
    ({"prompt": "a", "seconds": True}, "seconds", "seconds must be 5 or 10."),
    (
        {"prompt": "a", "model": "gen 4!"},
        "model",
        "model must be a model name such as 'gen4' or 'gen4_turbo'.",
    ),
    (
        {"prompt": "a", "motion_vector": {"spin": 1}},
        "motion_vector",
        "motion_vector has an unknown key 'spin'; use x, y, z, r, bg_x_pan, bg_y_pan.",
    ),
    (
        {"prompt": "a", "motion_vector": {"x": 11}},
        "motion_vector",
        "motion_vector['x'] must be a number from -10 to 10.",
    ),
    (
        {"prompt": "a", "end_image": IMAGE},
        "end_image",
        "end_image needs an image (the first frame).",
    ),
    ({"prompt": "a", "duration": 5}, "duration", "Unknown argument 'duration'."),
    (
        {"prompt": "a", "idempotency_key": ""},
        "idempotency_key",
        "idempotency_key must be a string of 1 to 255 characters.",
    ),
]


@pytest.mark.parametrize(("kwargs", "field", "message"), INVALID_GENERATE)
def test_generate_invalid_argument_makes_no_request_and_no_row(api, kwargs, field, message):
    with pytest.raises(ValidationError) as info:
        RunwayTask.objects.generate(**kwargs)

    assert info.value.message_dict == {field: [message]}
    assert api.create_requests == []
    assert not RunwayTask.objects.exists()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([1], "metadata must be a dict (a JSON object); got list."),
        ("x", "metadata must be a dict (a JSON object); got str."),
        (0, "metadata must be a dict (a JSON object); got int."),
    ],
)
def test_metadata_must_be_a_dict_before_any_request_or_row(api, metadata, message):
    with pytest.raises(ValidationError) as info:
        RunwayTask.objects.generate("x", metadata=metadata)

    assert info.value.message_dict == {"metadata": [message]}
    assert api.create_requests == []
    assert not RunwayTask.objects.exists()


def test_metadata_must_be_json_serialisable(api):
    with pytest.raises(ValidationError) as info:
        RunwayTask.objects.video_to_video(VIDEO, prompt="p", metadata={"when": object()})

    [message] = info.value.message_dict["metadata"]
    assert message.startswith("metadata must be JSON-serialisable")
    assert api.create_requests == []


def test_track_refuses_metadata_that_is_not_a_dict(api):
    with pytest.raises(ValidationError):
        RunwayTask.objects.track("t-1", metadata=["a"])  # type: ignore[arg-type]

    assert not RunwayTask.objects.exists()


def test_runway_submit_rejects_metadata_that_is_not_an_object(api):
    with pytest.raises(CommandError, match="metadata: metadata must be a dict"):
        call_command("runway_submit", "generate", "--prompt", "a cat", "--metadata", "0")

    assert api.create_requests == []


@pytest.mark.parametrize(
    ("kwargs", "errors"),
    [
        (
            {"video": "nope", "prompt": ""},
            {
                "video": ["Enter a video URL that starts with http:// or https://."],
                "prompt": ["Enter a prompt."],
            },
        ),
        (
            {"video": VIDEO, "prompt": "a", "structure_transformation": 2},
            {
                "structure_transformation": [
                    "structure_transformation must be a number from 0 to 1."
                ]
            },
        ),
        (
            {"video": VIDEO, "prompt": "a", "flip": "yes"},
            {"flip": ["flip must be True or False."]},
        ),
    ],
)
def test_video_to_video_invalid_arguments(api, kwargs, errors):
    with pytest.raises(ValidationError) as info:
        RunwayTask.objects.video_to_video(**kwargs)

    assert info.value.message_dict == errors
    assert api.create_requests == []
    assert not RunwayTask.objects.exists()


def test_act_one_requires_both_urls(api):
    with pytest.raises(ValidationError) as info:
        RunwayTask.objects.act_one("", None)

    assert info.value.message_dict == {
        "video": ["Enter a video URL."],
        "image": ["Enter an image URL."],
    }
    assert api.create_requests == []


def test_image_to_video_needs_no_prompt(api):
    task = RunwayTask.objects.generate(image=IMAGE)

    assert task.status == Status.QUEUED
    assert last_body(api)["prompt"] == ""


# -- outcomes: refused, unknown, idempotent --------------------------------------------------


def test_generate_refused_is_failed_rejected(api, signal_log):
    api.inject(
        Fault(kind="status", status=200, body='{"code": 400, "msg": "prompt too long"}'),
        route="create",
    )

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.FAILED
    assert task.failure_code == "rejected"
    assert task.fail_reason == "CometAPI refused the task: prompt too long"
    assert len(signal_log.of("task_failed")) == 1
    assert signal_log.of("task_submitted") == []


def test_generate_with_refused_key_is_failed_rejected(api):
    api.inject(Fault.unauthorized(), route="create")

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.FAILED
    assert task.failure_code == "rejected"
    assert "HTTP 401" in task.fail_reason


def test_generate_accepted_sends_task_submitted_once(api, signal_log):
    task = RunwayTask.objects.generate("x")

    assert [kwargs["task"].pk for kwargs in signal_log.of("task_submitted")] == [task.pk]
    assert list(task.events.values_list("from_status", "to_status")) == [("submitting", "queued")]


def test_row_stopped_while_its_create_call_is_in_flight_keeps_its_status(api, signal_log):
    class StoppedMidFlight(CometAPIClient):
        def create(self, route, body):  # type: ignore[no-untyped-def]
            # An operator stops the row while the request is on the wire.
            RunwayTask.objects.filter(status=Status.SUBMITTING).update(
                status=Status.CANCELLED, failure_code="stopped"
            )
            return super().create(route, body)

    with StoppedMidFlight(api_key="test-key", base_url=api.url) as client:
        task = RunwayTask.objects.generate("x", client=client)

    assert task.status == Status.CANCELLED
    assert task.task_id == api.task_ids()[0]  # the provider's id is kept for the record
    assert not task.events.exists()
    assert signal_log.of("task_submitted") == []


def test_generate_timeout_after_sending_is_not_retried(api):
    api.inject(Fault.slow(1.0), route="create")
    client = CometAPIClient(timeout=(1, 0.3))

    task = RunwayTask.objects.generate("x", client=client)
    time.sleep(1.0)  # let the fake finish the request it kept waiting

    assert task.status == Status.SUBMITTING
    assert task.task_id is None
    assert task.last_error.startswith("Outcome unknown, not retried")
    assert len(api.create_requests) == 1
    assert task.events.get().kind == EventKind.SUBMIT_ERROR


def test_generate_server_error_outcome_unknown(api):
    api.inject(Fault.server_error(502), route="create")

    task = RunwayTask.objects.generate("x")

    assert task.status == Status.SUBMITTING
    assert "HTTP 502" in task.last_error
    assert len(api.create_requests) == 1


def test_generate_without_key_raises_before_any_row(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": None}

    with pytest.raises(ConfigurationError):
        RunwayTask.objects.generate("x")

    assert not RunwayTask.objects.exists()
    assert api.create_requests == []


def test_callback_base_without_urls_raises_before_any_row(api, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "CALLBACK_BASE_URL": "https://site.example"}
    settings.ROOT_URLCONF = "tests.urls_without_app"

    with pytest.raises(ConfigurationError, match=r"include\('django_runway_feed\.urls'\)"):
        RunwayTask.objects.generate("x")

    assert not RunwayTask.objects.exists()
    assert api.create_requests == []


def without_django_q(settings) -> list[str]:
    return [app for app in settings.INSTALLED_APPS if app != "django_q"]


CREATES = {
    "generate": lambda: RunwayTask.objects.generate("x"),
    "video_to_video": lambda: RunwayTask.objects.video_to_video(VIDEO, prompt="x"),
    "act_one": lambda: RunwayTask.objects.act_one(VIDEO, IMAGE),
    "track": lambda: RunwayTask.objects.track("provider-id"),
}


@pytest.mark.parametrize("create", CREATES.values(), ids=CREATES.keys())
def test_create_without_django_q_raises_before_any_row_or_request(api, settings, create):
    # manage.py shell runs no system checks: the create methods refuse what E011 reports.
    with (
        override_settings(INSTALLED_APPS=without_django_q(settings)),
        pytest.raises(ConfigurationError, match=r"^No task was created: 'django_q' is not in"),
    ):
        create()

    assert not RunwayTask.objects.exists()
    assert api.create_requests == []


@pytest.mark.parametrize("create", CREATES.values(), ids=CREATES.keys())
def test_create_without_q_cluster_raises_before_any_row_or_request(api, settings, create):
    del settings.Q_CLUSTER

    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER is not set") as raised:
        create()

    assert "docs/quickstart.md, step 2" in str(raised.value)
    assert not RunwayTask.objects.exists()
    assert api.create_requests == []


def test_create_without_django_q_works_when_auto_schedule_is_off(api, settings):
    # A site polling with runway_poll --loop needs no cluster.
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "AUTO_SCHEDULE": False}

    with override_settings(INSTALLED_APPS=without_django_q(settings)):
        task = RunwayTask.objects.generate("x")

    assert task.status == Status.QUEUED
    assert len(api.create_requests) == 1


def test_idempotency_key_used_twice_makes_one_request(api):
    first = RunwayTask.objects.generate("x", idempotency_key="order-42")
    second = RunwayTask.objects.generate("x", idempotency_key="order-42")

    assert first.pk == second.pk
    assert len(api.create_requests) == 1
    assert RunwayTask.objects.count() == 1


def test_idempotency_key_from_concurrent_threads_makes_one_request(api):
    results: list[int] = []

    errors = run_in_threads(
        4, lambda: results.append(RunwayTask.objects.generate("x", idempotency_key="same").pk)
    )

    assert errors == []
    assert len(set(results)) == 1
    assert len(api.create_requests) == 1
    assert RunwayTask.objects.count() == 1


def test_track_is_idempotent(api):
    task_id = api.add_task(TaskScript())

    first = RunwayTask.objects.track(task_id)
    second = RunwayTask.objects.track(task_id)

    assert first.pk == second.pk
    assert RunwayTask.objects.count() == 1


# -- commands --------------------------------------------------------------------------------


@pytest.fixture
def quick(settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 0.5, "MAX_POLL_INTERVAL": 1}


@pytest.fixture
def live_api(settings, quick):
    with FakeCometAPI(api_key="live-key") as server:
        settings.RUNWAY_FEED = {
            **settings.RUNWAY_FEED,
            "API_KEY": "live-key",
            "BASE_URL": server.url,
        }
        yield server


def test_runway_submit_wait_shows_progress_and_succeeds(live_api, capsys):
    live_api.script_next(TaskScript(queued_for=0.5, run_for=2))

    call_command("runway_submit", "generate", "--prompt", "a cat", "--wait", "--timeout", "30")

    lines = capsys.readouterr().out.splitlines()
    statuses = [line.split(": ")[1].split()[0] for line in lines if ": " in line]
    assert statuses[0] == "queued"
    assert "running" in statuses
    assert statuses[-2] == "succeeded" or statuses[-1] == "succeeded"
    assert lines[-1].startswith("Result: http://127.0.0.1:")


def test_runway_submit_wait_fails_for_failed_task(live_api, capsys):
    live_api.script_next(
        TaskScript(queued_for=0.2, run_for=0.5, outcome="failed", failure_code="SAFETY.INPUT.TEXT")
    )

    with pytest.raises(CommandError, match=r"failed: SAFETY\.INPUT\.TEXT The prompt was flagged"):
        call_command("runway_submit", "generate", "--prompt", "bad", "--wait", "--timeout", "30")


def test_runway_submit_json_output(live_api, capsys):
    call_command("runway_submit", "act_one", "--video", VIDEO, "--image", IMAGE, "--json")

    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "queued"
    assert summary["route"] == "act_one"
    assert summary["task_id"] == live_api.create_requests[-1].task_id


def test_runway_submit_invalid_arguments(live_api):
    # (--seconds 7 no longer gets this far: the parser offers 5 and 10 only.)
    with pytest.raises(
        CommandError, match=r"Invalid arguments: ratio: ratio must look like '1280:720'"
    ):
        call_command("runway_submit", "generate", "--prompt", "a", "--ratio", "16x9")

    assert live_api.create_requests == []


def test_runway_track_wait_follows_to_the_end(live_api, capsys):
    task_id = live_api.add_task(TaskScript(queued_for=0.2, run_for=1))

    call_command("runway_track", task_id, "--wait", "--timeout", "30")

    out = capsys.readouterr().out
    assert f"{task_id}: succeeded 100%" in out
    assert RunwayTask.objects.get(task_id=task_id).status == Status.SUCCEEDED

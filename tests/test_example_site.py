"""The example host site (example_project/): its form, its JSON views and its receivers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.urls import reverse

from django_runway_feed import signals
from django_runway_feed.models import RunwayTask, TaskEvent
from django_runway_feed.statuses import Status
from django_runway_feed.testing import Fault, TaskScript
from example_project.videos.management.commands.runway_serve import Command as ServeCommand
from example_project.videos.models import Notification
from example_project.videos.supervisor import Supervisor, group_alive
from example_project.videos.views import UNCONFIRMED, task_state
from tests.testapp.models import Product

pytestmark = [pytest.mark.urls("example_project.urls"), pytest.mark.django_db(transaction=True)]

VALID = {"prompt": "a red fox in snow", "image": "", "model": "gen4", "ratio": "1280:720"}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def post_new(client, **changes):
    return client.post(reverse("videos:new"), {**VALID, "seconds": "5", **changes})


def finish(task: RunwayTask, clock, seconds: float = 60) -> RunwayTask:
    """Move the fake API's clock past the task's script and poll it once (real-time poller)."""
    clock.advance(seconds)
    return task.refresh_from_feed()


# -- the "new video" form ----------------------------------------------------------------------


def test_new_video_requires_login(client):
    response = client.get(reverse("videos:new"))

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/videos/new/"


def test_new_video_without_prompt_or_image_shows_app_error_next_to_prompt(alice_client, api):
    response = post_new(alice_client, prompt="")

    assert response.status_code == 200
    assert response.context["form"].errors == {"prompt": ["Enter a prompt or an image URL."]}
    assert (
        '<ul class="errors" id="id_prompt_errors"><li>Enter a prompt or an image URL.</li></ul>'
        in (response.content.decode())
    )
    assert RunwayTask.objects.count() == 0
    assert api.create_requests == []


def test_new_video_non_http_image_is_refused_by_the_app_on_the_image_field(alice_client, api):
    # Django's URLField accepts ftp://; generate() does not, and its message lands on "image".
    response = post_new(alice_client, image="ftp://example.com/cat.png")

    assert response.context["form"].errors == {
        "image": ["Enter an image URL that starts with http:// or https://."]
    }
    assert RunwayTask.objects.count() == 0


def test_new_video_prompt_too_long_is_refused_by_the_app(alice_client, api):
    response = post_new(alice_client, prompt="x" * 1001)

    assert response.context["form"].errors == {
        "prompt": ["Keep the prompt to 1000 characters (it has 1001)."]
    }


def test_new_video_form_rejects_unknown_choice_before_the_app(alice_client, api):
    response = post_new(alice_client, seconds="7")

    assert response.context["form"].errors == {
        "seconds": ["Select a valid choice. 7 is not one of the available choices."]
    }
    assert api.create_requests == []


def test_new_video_without_api_key_keeps_form_and_creates_nothing(alice_client, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": None}

    response = post_new(alice_client)

    assert response.status_code == 200
    form = response.context["form"]
    assert form.non_field_errors() == [
        "The video service is not available: No CometAPI key configured: set "
        "RUNWAY_FEED['API_KEY'] in your settings."
    ]
    assert form["prompt"].value() == "a red fox in snow"
    assert RunwayTask.objects.count() == 0


def test_new_video_creates_task_linked_to_the_user(alice_client, alice, api):
    response = post_new(alice_client, image="https://example.com/fox.png", seconds="10")

    assert response.status_code == 302
    assert response["Location"] == reverse("videos:list")
    task = RunwayTask.objects.get()
    assert task.status == Status.QUEUED
    assert task.content_object == alice
    assert api.create_requests[-1].body["image"] == "https://example.com/fox.png"
    assert api.create_requests[-1].body["options"] == {"seconds": 10}


def test_new_video_refused_by_the_api_says_so(alice_client, api):
    api.api_key = "another-key"  # the site's key is now refused (401)

    response = post_new(alice_client)

    task = RunwayTask.objects.get()
    assert task.status == Status.FAILED
    assert task.failure_code == "rejected"
    messages = [str(m) for m in response.wsgi_request._messages]
    assert len(messages) == 1
    assert messages[0].startswith("CometAPI refused the video: ")
    assert "test-key" not in messages[0]


# -- "my videos" and its JSON view ---------------------------------------------------------------


def test_video_list_shows_only_own_tasks(alice_client, alice, bob, api):
    RunwayTask.objects.generate("alice's lighthouse", content_object=alice)
    RunwayTask.objects.generate("bob's paper boat", content_object=bob)

    page = alice_client.get(reverse("videos:list")).content.decode()

    assert "alice&#x27;s lighthouse" in page
    assert "paper boat" not in page


def test_status_json_reports_own_task(alice_client, alice, api, clock):
    api.script_next(TaskScript(queued_for=0, run_for=10))
    task = RunwayTask.objects.generate("a fox", content_object=alice)
    clock.advance(5)
    task.refresh_from_feed()

    response = alice_client.get(reverse("videos:status", args=[task.pk]))

    assert response.status_code == 200
    assert response.json() == {
        "id": task.pk,
        "status": "running",
        "status_label": "Running",
        "progress": task.progress,
        "show_progress": True,
        "finished": False,
        "video_url": "",
        "failure": "",
    }
    assert 0 < task.progress < 100


def test_status_json_of_another_users_task_is_404(alice_client, bob, api):
    task = RunwayTask.objects.generate("bob's video", content_object=bob)

    assert alice_client.get(reverse("videos:status", args=[task.pk])).status_code == 404


def test_status_json_of_unlinked_task_is_404(alice_client, api):
    task = RunwayTask.objects.generate("nobody's video")

    assert alice_client.get(reverse("videos:status", args=[task.pk])).status_code == 404


def test_status_json_anonymous_is_401(client, alice, api):
    task = RunwayTask.objects.generate("a fox", content_object=alice)

    response = client.get(reverse("videos:status", args=[task.pk]))

    assert response.status_code == 401
    assert response.json() == {"error": "Log in first."}


def test_status_json_gives_result_url_once_succeeded(alice_client, alice, api, clock):
    task = finish(RunwayTask.objects.generate("a fox", content_object=alice), clock)

    state = alice_client.get(reverse("videos:status", args=[task.pk])).json()

    assert state["status"] == "succeeded"
    assert state["progress"] == 100
    assert state["video_url"] == f"{api.url}/outputs/{task.task_id}.mp4"


def test_video_url_never_uses_a_non_http_url(alice, api):
    task = RunwayTask.objects.generate("a fox", content_object=alice)
    RunwayTask.objects.filter(pk=task.pk).update(
        status=Status.SUCCEEDED, result_url="javascript:alert(1)"
    )
    task.refresh_from_db()

    assert task_state(task)["video_url"] == ""


def test_video_url_prefers_the_stored_file(alice, api, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.MEDIA_URL = "/media/"
    task = RunwayTask.objects.generate("a fox", content_object=alice)
    task.output_file.save("fox.mp4", ContentFile(b"not really a video"), save=True)
    RunwayTask.objects.filter(pk=task.pk).update(
        status=Status.SUCCEEDED, result_url="https://cdn.example.com/fox.mp4"
    )
    task.refresh_from_db()

    assert task_state(task)["video_url"] == f"/media/{task.output_file.name}"


def test_failed_task_shows_its_reason(alice_client, alice, api, clock):
    api.script_next(TaskScript(outcome="failed", failure="The prompt was flagged."))
    task = finish(RunwayTask.objects.generate("a fox", content_object=alice), clock)

    state = alice_client.get(reverse("videos:status", args=[task.pk])).json()
    page = alice_client.get(reverse("videos:list")).content.decode()

    assert state["finished"] is True
    assert state["failure"] == "The prompt was flagged."
    assert "The prompt was flagged." in page


# -- receivers and notifications ---------------------------------------------------------------


def test_success_notifies_the_owner_once(alice, api, clock):
    task = finish(RunwayTask.objects.generate("a fox in snow", content_object=alice), clock)

    notification = Notification.objects.get()
    assert notification.user == alice
    assert notification.kind == "succeeded"
    assert notification.task_pk == task.pk
    assert notification.message == "Your video “a fox in snow” is ready."
    event = TaskEvent.objects.get(task=task, to_status=Status.SUCCEEDED)
    assert notification.event_id == event.pk


def test_redelivered_event_does_not_notify_twice(alice, api, clock):
    task = finish(RunwayTask.objects.generate("a fox", content_object=alice), clock)
    event = TaskEvent.objects.get(task=task, to_status=Status.SUCCEEDED)

    # What the outbox sweep does when a worker died between commit and marking the event sent.
    signals.task_succeeded.send(sender=RunwayTask, task=task, event=event)
    signals.task_succeeded.send(sender=RunwayTask, task=task, event=event)

    assert Notification.objects.count() == 1


def test_failure_notifies_the_owner_with_the_reason(alice, api, clock):
    api.script_next(TaskScript(outcome="failed", failure="The prompt was flagged."))
    finish(RunwayTask.objects.generate("a fox", content_object=alice), clock)

    notification = Notification.objects.get()
    assert notification.kind == "failed"
    assert notification.message == "Your video “a fox” failed: The prompt was flagged."


def test_task_attached_to_another_model_notifies_nobody(api, clock, alice):
    product = Product.objects.create(pk=alice.pk, name="same pk as alice")
    task = finish(RunwayTask.objects.generate("a fox", content_object=product), clock)

    assert task.status == Status.SUCCEEDED
    assert task.content_type == ContentType.objects.get_for_model(Product)
    assert Notification.objects.count() == 0


def test_task_of_a_deleted_user_notifies_nobody(api, clock, alice):
    task = RunwayTask.objects.generate("a fox", content_object=alice)
    alice.delete()

    assert finish(task, clock).status == Status.SUCCEEDED
    assert Notification.objects.count() == 0


def test_notification_shows_in_header_and_json_until_read(alice_client, alice, api, clock):
    finish(RunwayTask.objects.generate("a fox", content_object=alice), clock)

    page = alice_client.get(reverse("videos:list")).content.decode()
    data = alice_client.get(reverse("videos:notifications")).json()
    alice_client.post(reverse("videos:notifications-read"))
    after = alice_client.get(reverse("videos:notifications")).json()

    assert 'data-role="notification-count">1</span>' in page
    assert "Your video “a fox” is ready." in page
    assert data["unread"] == 1
    assert [item["message"] for item in data["items"]] == ["Your video “a fox” is ready."]
    assert after == {"unread": 0, "items": []}


def test_notifications_json_only_lists_own(alice_client, bob, api, clock):
    finish(RunwayTask.objects.generate("bob's fox", content_object=bob), clock)

    assert alice_client.get(reverse("videos:notifications")).json() == {"unread": 0, "items": []}
    assert Notification.objects.filter(user=bob).count() == 1


def test_video_list_escapes_the_prompt(alice_client, alice, api):
    RunwayTask.objects.generate("<script>alert(1)</script>", content_object=alice)

    page = alice_client.get(reverse("videos:list")).content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- make serve's process supervisor -----------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# Starts a grandchild in the same process group and prints its pid.
PARENT_OF_SLEEPER = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n",
]


def process_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, limit: float = 30.0) -> bool:
    """Poll ``condition`` until true or ``limit`` seconds pass (a bound, not a measurement)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_supervisor_stop_ends_children_and_their_children():
    with Supervisor(log=lambda line: None) as supervisor:
        parent = supervisor.start("parent", PARENT_OF_SLEEPER, stdout=subprocess.PIPE)
        supervisor.start("sleeper", SLEEPER)
        grandchild = int(parent.stdout.readline())
        assert process_running(grandchild)

    assert all(child.process.returncode is not None for child in supervisor.children)
    assert not process_running(grandchild)
    assert not any(group_alive(child.process.pid) for child in supervisor.children)


def test_supervisor_wait_reports_a_child_that_exits():
    with Supervisor(log=lambda line: None) as supervisor:
        supervisor.start("sleeper", SLEEPER)
        supervisor.start("broken", [sys.executable, "-c", "raise SystemExit(3)"])

        outcome = supervisor.wait()
        dead = supervisor.exited()

    assert outcome == "exited"
    assert (dead.name, dead.process.returncode) == ("broken", 3)
    assert supervisor.children[0].process.returncode == -signal.SIGTERM


def test_supervisor_wait_returns_on_sigterm_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with Supervisor(log=lambda line: None) as supervisor:
        supervisor.start("sleeper", SLEEPER)
        # What `kill <pid>` (or Ctrl-C, with SIGINT) does to `make serve`.
        signaller = (
            "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(600)"
        )
        supervisor.start("signaller", [sys.executable, "-c", signaller])

        outcome = supervisor.wait()

    assert supervisor.stop_signal == signal.SIGTERM
    assert outcome == "signal"
    assert signal.getsignal(signal.SIGTERM) is before
    assert supervisor.children[0].process.returncode == -signal.SIGTERM


def test_supervisor_kills_a_child_that_ignores_sigterm():
    lines: list[str] = []
    stubborn = [
        sys.executable,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n",
    ]
    with Supervisor(log=lines.append, grace=0.5) as supervisor:
        child = supervisor.start("stubborn", stubborn, stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"

    assert child.returncode == -signal.SIGKILL
    assert lines == ["stubborn still busy after 0.5 s; killing it."]


def test_supervisor_children_stop_when_the_supervisor_is_killed():
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from example_project.videos.supervisor import Supervisor\n"
            "supervisor = Supervisor()\n"
            "child = supervisor.start('sleeper', [sys.executable, '-c', "
            "'import time; time.sleep(600)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    child = int(launcher.stdout.readline())
    assert process_running(child)

    launcher.kill()  # SIGKILL: no cleanup code runs in the launcher
    launcher.wait()

    assert wait_until(lambda: not process_running(child))


def test_unconfirmed_submission_is_explained_and_not_resent(alice_client, alice, api):
    api.inject(Fault(kind="status", status=500), route="create")

    response = post_new(alice_client)
    state = alice_client.get(reverse("videos:status", args=[RunwayTask.objects.get().pk])).json()

    assert [str(m) for m in response.wsgi_request._messages] == [UNCONFIRMED]
    assert state["status"] == "submitting"
    assert state["failure"] == UNCONFIRMED
    assert len(api.create_requests) == 1


def test_serve_demo_user_is_created_then_given_the_new_password(django_user_model):
    command = ServeCommand()

    command._demo_user("demo", "first-password")
    command._demo_user("demo", "second-password")

    user = django_user_model.objects.get(username="demo")
    assert user.check_password("second-password")
    assert not user.check_password("first-password")

"""docs/quickstart.md, executed as written, so the page cannot drift from what works.

A fresh ``startproject`` site in a fresh virtualenv. Then the page is followed in order: each
``python`` block whose first line names a file (``# videos/views.py``), and each ``html`` block
whose first line does (``{# videos/templates/videos/new.html #}``), becomes that file, or is
added to its end when the line says ``(at the end)``; each ``console`` line runs (``pip install
/path/to/django-runway-feed`` installs this checkout, ``export`` sets the environment of the
commands after it). ``qcluster``, ``runway_fakeapi`` and ``runserver`` keep running, so they start
after the rest, the fake server and the development server on free ports, the fake with short
tasks. A user then posts the page's form (with its CSRF token) and follows the video's page
until it plays; the receiver must store its notification and log its line, the video must land
in ``MEDIA_ROOT`` and the development server must serve it at ``output_file.url``.

Slow (a virtualenv, a build of the checkout and a real cluster, about 100 s): marked ``cluster``
and ``quickstart``. It runs once in CI, in the SQLite pass: the new site uses SQLite whatever
``DATABASE_URL`` says, so the PostgreSQL pass would only repeat it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.quickstart,
    # Its wheel is built in the checkout too: the packaging tests' worker builds it in turn.
    pytest.mark.xdist_group("build_in_checkout"),
    pytest.mark.skipif(
        bool(os.environ.get("DATABASE_URL")), reason="runs once, in the SQLite pass"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "quickstart.md"
FENCE = re.compile(r"^```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_MARKERS = {
    "python": re.compile(r"^# (?P<path>[\w./-]+\.py)(?P<append> \(at the end\))?$"),
    "html": re.compile(r"^\{# (?P<path>[\w./-]+\.html) #\}(?P<append>)$"),
}
FAKE_PORT_IN_PAGE = "8765"
CHECKOUT_IN_PAGE = "/path/to/django-runway-feed"
PLAIN_SENTENCE = "Videos cannot be made right now. Please try again later."

# Runs in the new site (manage.py shell): a user fills in the page's form, as a browser would
# (the CSRF token taken from the form), then follows the video's page until it plays.
USER_SCRIPT = """
import json, re, time
from django.conf import settings
from django.test import Client, override_settings
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.urls import reverse
from videos.models import Notification

user = get_user_model().objects.create_user("ada", password="quick-start")
client = Client(enforce_csrf_checks=True)
client.force_login(user)
form = client.get(reverse("videos:new"))
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode())
token = token.group(1) if token else ""
no_token = client.post(reverse("videos:new"), {"prompt": "a cat surfing a wave"})
empty = client.post(reverse("videos:new"), {"csrfmiddlewaretoken": token})
with override_settings(RUNWAY_FEED={**settings.RUNWAY_FEED, "API_KEY": None}):
    no_key = client.post(reverse("videos:new"), {"prompt": "x", "csrfmiddlewaretoken": token})
created = client.post(
    reverse("videos:new"), {"prompt": "a cat surfing a wave", "csrfmiddlewaretoken": token}
)
page_url = created.headers.get("Location", "")
deadline = time.monotonic() + 100
page = ""
while created.status_code == 302 and time.monotonic() < deadline:
    page = client.get(page_url).content.decode()
    if "/media/" in page and Notification.objects.filter(user=user).exists():
        break
    time.sleep(0.5)
pk = int(page_url.strip("/").rsplit("/", 1)[-1]) if page_url else None
from django_runway_feed.models import RunwayTask
task = RunwayTask.objects.get(pk=pk) if pk else None
video = re.search(r'<video src="([^"]+)"', page)
print(json.dumps({
    "form": [form.status_code, bool(token)],
    "no_token": no_token.status_code,
    "empty": [empty.status_code, empty.content.decode()],
    "no_key": [no_key.status_code, no_key.content.decode()],
    "created": [created.status_code, page_url, pk],
    "status": client.get(reverse("videos:status", args=[pk])).json() if pk else None,
    "notifications": list(Notification.objects.filter(user=user).values_list("message", flat=True)),
    "output_file": task.output_file.name if task and task.output_file else None,
    "output_url": task.output_file.url if task and task.output_file else None,
    "video_src": video.group(1) if video else None,
    "tasks": RunwayTask.objects.count(),
}))
"""


def page_blocks() -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE.finditer(PAGE.read_text())]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def apply_file_block(site: Path, lang: str, body: str) -> bool:
    first, _newline, rest = body.partition("\n")
    marker = FILE_MARKERS[lang].match(first)
    if marker is None:
        return False  # an illustration, not a file
    target = site / marker["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if marker["append"]:
        assert target.exists(), f"{marker['path']} must exist before it is added to"
        with target.open("a") as out:
            out.write("\n\n" + rest)
    else:
        target.write_text(body if lang == "html" else rest)
    return True


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, "", b""


def test_quickstart_page_runs_as_written(tmp_path):
    venv, site = tmp_path / "venv", tmp_path / "site"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=dict(os.environ))
    python = str(venv / "bin" / "python")
    # A clean environment: nothing of this checkout or its test settings leaks in.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "RUNWAY_", "COMETAPI_", "PYTHON"))
        and key not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    blocks = page_blocks()
    # Step 1 comes before the site exists: the page's install line, with this checkout's path.
    (install,) = [
        shlex.split(line)
        for lang, body in blocks
        if lang == "console"
        for line in body.splitlines()
        if line.startswith("pip install ")
    ]
    assert install == ["pip", "install", CHECKOUT_IN_PAGE]
    run([python, "-m", "pip", "install", str(ROOT)], cwd=tmp_path, env=env, timeout=600)
    site.mkdir()
    run(
        [str(venv / "bin" / "django-admin"), "startproject", "mysite", str(site)], cwd=site, env=env
    )

    port, web_port = free_port(), free_port()
    files, commands, long_running = 0, [], []
    for lang, body in blocks:
        if lang in FILE_MARKERS:
            files += apply_file_block(site, lang, body)
            continue
        if lang != "console":
            continue
        for line in body.splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if words[:2] == ["pip", "install"]:
                continue  # installed above
            if words[:1] == ["export"]:
                for assignment in words[1:]:
                    key, _eq, value = assignment.partition("=")
                    env[key] = value.replace(FAKE_PORT_IN_PAGE, str(port))
            elif words[:2] == ["python", "manage.py"]:
                if words[2] in ("qcluster", "runway_fakeapi", "runserver"):
                    long_running.append(words[2:])
                else:
                    run([python, "manage.py", *words[2:]], cwd=site, env=env)
                    commands.append(words[2])
    assert files >= 12
    assert commands == ["migrate", "startapp", "makemigrations", "migrate"]
    assert sorted(args[0] for args in long_running) == ["qcluster", "runserver", "runway_fakeapi"]

    log = tmp_path / "processes.log"
    processes = []
    try:
        with log.open("ab") as out:
            for args in sorted(long_running, key=lambda a: a[0] != "runway_fakeapi"):
                if args[0] == "runway_fakeapi":
                    args = [*args, "--port", str(port), "--run-seconds", "3"]
                if args[0] == "runserver":
                    args = [*args, f"127.0.0.1:{web_port}", "--noreload"]
                processes.append(
                    subprocess.Popen(
                        [python, "manage.py", *args],
                        cwd=site,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                if args[0] in ("runway_fakeapi", "runserver"):
                    wait_for_port(port if args[0] == "runway_fakeapi" else web_port)
        shell = subprocess.run(
            [python, "manage.py", "shell", "-c", USER_SCRIPT],
            cwd=site,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert shell.returncode == 0, f"{shell.stdout}\n{shell.stderr}"
        outcome = json.loads(shell.stdout.splitlines()[-1])
        played = (
            fetch(f"http://127.0.0.1:{web_port}{outcome['output_url']}")
            if outcome["output_url"]
            else None
        )
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    context = log.read_text()[-3000:]
    assert outcome["form"] == [200, True]
    assert outcome["no_token"] == 403  # CSRF protection is on, and the form carries the token
    assert outcome["empty"][0] == 400
    assert "Enter a prompt or an image URL." in outcome["empty"][1]
    # No key: the visitor reads a plain sentence, the operator's log has the details.
    assert outcome["no_key"][0] == 503
    assert PLAIN_SENTENCE in outcome["no_key"][1]
    assert "API_KEY" not in outcome["no_key"][1]
    assert "No video could be created" in shell.stderr
    assert "No CometAPI key configured: set RUNWAY_FEED['API_KEY']" in shell.stderr
    assert outcome["tasks"] == 1  # the refused posts saved nothing
    status, pk = outcome["created"][0], outcome["created"][2]
    assert status == 302, outcome
    assert outcome["created"][1] == f"/videos/{pk}/"
    assert outcome["notifications"] == ["Your video is ready."], context
    assert outcome["status"] == {"status": "succeeded", "progress": 100, "finished": True}
    # The receiver's logger.info line shows, thanks to the page's LOGGING.
    assert re.search(rf"Task {pk} succeeded: http://127\.0\.0\.1:{port}/", context), context
    assert outcome["output_file"], context
    stored = site / "media" / outcome["output_file"]
    assert stored.is_file()
    assert stored.stat().st_size > 0
    # The video plays: its page shows the stored copy, which the development server serves.
    assert outcome["output_url"] == f"/media/{outcome['output_file']}"
    assert outcome["video_src"] == outcome["output_url"]
    assert played is not None
    assert played[0] == 200
    assert played[1] == "video/mp4"
    assert played[2] == stored.read_bytes()

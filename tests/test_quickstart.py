"""docs/quickstart.md, executed as written, so the page cannot drift from what works.

A fresh ``startproject`` site in a fresh virtualenv gets the wheel built from this checkout.
Then the page is followed in order: each ``python`` block whose first line names a file
(``# videos/views.py``) becomes that file, or is added to its end when the line says
``(at the end)``; each ``console`` line runs (``pip install django-runway-feed`` is the wheel,
``export`` sets the environment of the commands after it). ``qcluster`` and ``runway_fakeapi``
keep running, so they start after the rest, the fake server on a free port and with short
tasks. A user then creates a task through the page's view; the page's receiver must store its
notification and the video must land in ``MEDIA_ROOT``.

Slow (a virtualenv, a wheel and a real cluster, about 100 s): marked ``cluster`` and
``quickstart``. It runs once in CI, in the SQLite pass: the new site uses SQLite whatever
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
FILE_MARKER = re.compile(r"^# (?P<path>[\w./-]+\.py)(?P<append> \(at the end\))?$")
FAKE_PORT_IN_PAGE = "8765"

# Runs in the new site (manage.py shell): a user posts to the page's view, then waits for the
# receiver's notification and the stored copy.
USER_SCRIPT = """
import json, time
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django_runway_feed.models import RunwayTask
from videos.models import Notification

user = get_user_model().objects.create_user("ada", password="quick-start")
client = Client()
client.force_login(user)
created = client.post(reverse("videos:new"), {"prompt": "a cat surfing a wave"})
empty = client.post(reverse("videos:new"), {})
pk = created.json().get("id")
deadline = time.monotonic() + 100
task = None
while pk and time.monotonic() < deadline:
    task = RunwayTask.objects.get(pk=pk)
    if task.output_file and Notification.objects.filter(user=user).exists():
        break
    time.sleep(0.5)
print(json.dumps({
    "created": [created.status_code, created.json()],
    "empty": [empty.status_code, empty.json()],
    "status": client.get(reverse("videos:status", args=[pk])).json() if pk else None,
    "notifications": list(Notification.objects.filter(user=user).values_list("message", flat=True)),
    "output_file": task.output_file.name if task else None,
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


def apply_file_block(site: Path, body: str) -> bool:
    first, _newline, rest = body.partition("\n")
    marker = FILE_MARKER.match(first)
    if marker is None:
        return False  # an illustration, not a file
    target = site / marker["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if marker["append"]:
        assert target.exists(), f"{marker['path']} must exist before it is added to"
        with target.open("a") as out:
            out.write("\n\n" + rest)
    else:
        target.write_text(rest)
    return True


def test_quickstart_page_runs_as_written(tmp_path):
    dist, venv, site = tmp_path / "dist", tmp_path / "venv", tmp_path / "site"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    run(
        [*pip_wheel, "-w", str(dist), str(ROOT)],
        cwd=tmp_path,
        env=dict(os.environ),
    )
    (wheel,) = dist.glob("django_runway_feed-*.whl")
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
    run([python, "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, env=env, timeout=300)
    site.mkdir()
    run(
        [str(venv / "bin" / "django-admin"), "startproject", "mysite", str(site)], cwd=site, env=env
    )

    port = free_port()
    files, commands, long_running = 0, [], []
    for lang, body in page_blocks():
        if lang == "python":
            files += apply_file_block(site, body)
            continue
        if lang != "console":
            continue
        for line in body.splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if words[:3] == ["pip", "install", "django-runway-feed"]:
                continue  # installed above, from the wheel of this checkout
            if words[:1] == ["export"]:
                for assignment in words[1:]:
                    key, _eq, value = assignment.partition("=")
                    env[key] = value.replace(FAKE_PORT_IN_PAGE, str(port))
            elif words[:2] == ["python", "manage.py"]:
                if words[2] in ("qcluster", "runway_fakeapi"):
                    long_running.append(words[2:])
                else:
                    run([python, "manage.py", *words[2:]], cwd=site, env=env)
                    commands.append(words[2])
    assert files >= 8
    assert commands == ["migrate", "startapp", "makemigrations", "migrate"]
    assert sorted(args[0] for args in long_running) == ["qcluster", "runway_fakeapi"]

    log = tmp_path / "processes.log"
    processes = []
    try:
        with log.open("ab") as out:
            for args in sorted(long_running, key=lambda a: a[0] != "runway_fakeapi"):
                if args[0] == "runway_fakeapi":
                    args = [*args, "--port", str(port), "--run-seconds", "3"]
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
                if args[0] == "runway_fakeapi":
                    wait_for_port(port)
        outcome = json.loads(
            run([python, "manage.py", "shell", "-c", USER_SCRIPT], cwd=site, env=env).splitlines()[
                -1
            ]
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
    assert outcome["created"][0] == 201, outcome
    assert outcome["created"][1]["status"] == "queued"
    assert outcome["empty"] == [400, {"errors": {"prompt": ["Enter a prompt or an image URL."]}}]
    assert outcome["notifications"] == ["Your video is ready."], context
    assert outcome["status"] == {"status": "succeeded", "progress": 100, "finished": True}
    assert outcome["output_file"], context
    stored = site / "media" / outcome["output_file"]
    assert stored.is_file()
    assert stored.stat().st_size > 0

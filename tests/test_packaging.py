"""The wheel ships the app (migrations, templates, py.typed), not the tests or the example."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("django_runway_feed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    assert "django_runway_feed/py.typed" in names
    assert "django_runway_feed/migrations/0001_initial.py" in names
    assert "django_runway_feed/testing/server.py" in names
    # Package data: every migration, the admin's templates and CSS, the fake server's clip.
    assert "django_runway_feed/migrations/0002_downloads_resubmit_budget.py" in names
    assert "django_runway_feed/static/django_runway_feed/admin.css" in names
    assert "django_runway_feed/testing/media/sample.mp4" in names
    templates = [n for n in names if n.startswith("django_runway_feed/templates/")]
    assert any(n.endswith("change_list.html") for n in templates)
    assert any(n.endswith("change_form.html") for n in templates)
    assert not [n for n in names if n.startswith(("tests/", "example_project/", "benchmarks/"))]
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert sorted(r.split(">")[0].split("=")[0] for r in requires) == [
        "django",
        "django-q2",
        "requests",
    ]

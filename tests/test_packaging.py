"""The distributions: the wheel ships the app only, the sdist everything its tests need.

Needs setuptools and wheel (the ``test`` extra), not ``build`` or ``twine``: the matrix's
``package`` session runs those.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Both builds write their metadata into the checkout: one pytest-xdist worker runs them in turn.
build_in_checkout = pytest.mark.xdist_group("build_in_checkout")


@build_in_checkout
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
    assert "django_runway_feed/locale/de/LC_MESSAGES/django.mo" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
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
    assert sorted(re.match(r"[\w.-]+", r)[0] for r in requires) == [
        "django",
        "django-q2",
        "requests",
        "urllib3",  # requests' own, declared for its floor
    ]


def build_sdist(tmp_path: Path) -> list[str]:
    code = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    name = result.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        return [member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile()]


@build_in_checkout
def test_sdist_is_complete(tmp_path):
    names = build_sdist(tmp_path)

    for needed in [
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "docs/installing.md",
        "docs/images/admin-changelist.png",
        "noxfile.py",
        "manage.py",
        # The test suite runs from the unpacked sdist: its conftest, settings and fixtures, the
        # example site and the benchmarks it imports.
        "tests/conftest.py",
        "tests/settings.py",
        "tests/processes.py",
        "tests/testapp/models.py",
        "tests/fixtures/feed/create-success.json",
        "tests/fixtures/tls/ca.pem",
        "example_project/environment.py",
        "example_project/videos/templates/videos/list.html",
        "benchmarks/common.py",
        "django_runway_feed/locale/de/LC_MESSAGES/django.po",
        "django_runway_feed/locale/de/LC_MESSAGES/django.mo",
    ]:
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".pyc", ".sqlite3")) or "/.venv/" in f"/{n}"]


def test_readme_links_are_absolute_for_pypi():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", readme) + re.findall(r"^\[[^\]]+\]: (\S+)", readme, re.M)

    assert targets
    assert [t for t in targets if not t.startswith(("https://", "http://", "#"))] == []

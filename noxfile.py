"""The test matrix: every supported Python with every supported Django.

    nox                      every pair on SQLite, and the declared minimum versions
    nox -s services          the oldest and the newest pair on PostgreSQL + Redis
                             (DATABASE_URL and REDIS_URL must be set), with the cluster, soak,
                             browser and slow tests on the newest
    nox -s package           build the sdist and the wheel, twine check, run the sdist's tests
    nox -l                   list the sessions; ``-s "tests(3.13-django6.1)"`` runs one

Arguments after ``--`` go to pytest. ``make matrix`` runs nox from the project's .venv. The
README's ``make test`` stays the check on the default interpreter (with ruff, mypy, the layers
contract and the migrations check).
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.11", "3.12", "3.13"]


def _add_pyenv_interpreters() -> None:
    # pyenv keeps interpreters that are not selected off PATH (its shims refuse them): put the
    # newest installed patch release of each supported Python on PATH for nox to find.
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for version in PYTHONS:
        releases = [
            path
            for path in root.glob(f"{version}.*/bin/python{version}")
            if re.fullmatch(r"\d+\.\d+\.\d+", path.parent.parent.name)
        ]
        found = sorted(releases, key=lambda p: [int(n) for n in p.parent.parent.name.split(".")])
        if found:
            os.environ["PATH"] = f"{found[-1].parent}{os.pathsep}{os.environ['PATH']}"


_add_pyenv_interpreters()
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "minimums"]

# Django 6.0 and later need Python 3.12 or later.
DJANGO_PYTHONS = {
    "5.2": PYTHONS,
    "6.0": ["3.12", "3.13"],
    "6.1": ["3.12", "3.13"],
}
COMBINATIONS = [
    (python, django) for django, pythons in DJANGO_PYTHONS.items() for python in pythons
]
OLDEST, NEWEST = ("3.11", "5.2"), ("3.13", "6.1")

# Tests that start a qcluster or a browser, or take a minute whatever the versions: once per
# matrix run is enough (the newest pair on PostgreSQL + Redis, and `make test`).
SLOW_MARKERS = "not (cluster or browser or slow)"
# What the package session runs from the unpacked sdist: enough to prove the suite runs there.
SDIST_TESTS = [
    "-m",
    SLOW_MARKERS,
    "tests/test_packaging.py",
    "tests/test_checks.py",
    "tests/test_admin.py",
    "tests/test_example_site.py",
]


def _parallel() -> list[str]:
    # loadgroup: tests marked xdist_group share one worker (the builds in test_packaging).
    return ["-n", os.environ.get("PYTEST_WORKERS", "auto"), "--dist", "loadgroup"]


def _check_migrations(session: nox.Session) -> None:
    # A new Django can see a change in a field the old one did not: no migration may appear.
    session.run(
        "python",
        "-m",
        "django",
        "makemigrations",
        "--check",
        "--dry-run",
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )


def _pytest(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "pytest", *_parallel(), *args, *session.posargs)


@nox.session
@nox.parametrize(
    ("python", "django"), COMBINATIONS, ids=[f"{p}-django{d}" for p, d in COMBINATIONS]
)
def tests(session: nox.Session, django: str) -> None:
    """One pair on SQLite and the ORM broker (without the cluster, browser and slow tests)."""
    session.install("-e", ".[test]", f"django~={django}.0")
    _check_migrations(session)
    _pytest(session, "-m", SLOW_MARKERS)


def minimum_requirements() -> list[str]:
    """The run-time dependencies pinned to the lowest version pyproject.toml allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)(?:\s*,.*)?", requirement)
        if match is None:
            raise ValueError(f"{requirement!r} has no lower bound (>=) to test")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


# Prints "name==floor" for each run-time requirement of requests (idna, charset-normalizer,
# certifi; urllib3 has a higher floor of ours): the rest of the HTTP path at its lowest too.
_REQUESTS_FLOORS = """
import re
from importlib.metadata import requires
for requirement in requires("requests") or []:
    if "extra ==" in requirement:
        continue
    match = re.match(r"([A-Za-z0-9_.-]+).*?>=\\s*([0-9][0-9.]*)", requirement)
    if match and match[1].lower().replace("_", "-") != "urllib3":
        print(f"{match[1]}=={match[2]}")
"""


@nox.session(python=OLDEST[0])
def minimums(session: nox.Session) -> None:
    """The oldest Python with the lowest version of every run-time dependency pyproject.toml
    declares (django, django-q2, requests and urllib3 under it)."""
    session.install("-e", ".[test]")
    session.install(*minimum_requirements())
    floors = session.run("python", "-c", _REQUESTS_FLOORS, silent=True)
    session.install(*str(floors).split())
    session.run("python", "-m", "pip", "check")
    _check_migrations(session)
    _pytest(session, "-m", SLOW_MARKERS)


@nox.session
@nox.parametrize(("python", "django"), [OLDEST, NEWEST], ids=["oldest", "newest"])
def services(session: nox.Session, django: str) -> None:
    """PostgreSQL and the Redis broker (DATABASE_URL, REDIS_URL); every test on the newest."""
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        session.error(f"set {' and '.join(missing)} (postgres://..., redis://...)")
    session.install("-e", ".[test]", f"django~={django}.0")
    _check_migrations(session)
    newest = (session.python, django) == NEWEST
    env = {"REQUIRE_SERVICES": "1"} if newest else {}
    args = [] if newest else ["-m", SLOW_MARKERS]
    session.run("python", "-m", "pytest", *_parallel(), *args, *session.posargs, env=env)


@nox.session(python=NEWEST[0])
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel, check them with twine, and run tests from the sdist."""
    session.install("build", "twine")
    tmp = Path(session.create_tmp())
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    session.run("python", "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir())))
    # The sdist is complete: its own test suite runs from the unpacked tree.
    (sdist,) = dist.glob("*.tar.gz")
    unpacked = tmp / "sdist"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    session.install(f"{source}[test]")
    session.chdir(source)
    session.run("python", "-m", "pytest", *_parallel(), *SDIST_TESTS, *session.posargs)

from __future__ import annotations

import json
import os
from pathlib import Path

from example_project.environment import database_from_env, q_cluster_from_env

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "django_runway_feed",
    "tests.testapp",
    # The example host site, tested under @pytest.mark.urls("example_project.urls").
    "example_project.videos",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# A file, not :memory:, so a qcluster subprocess can share it with the test.
DATABASES = {"default": database_from_env(BASE_DIR / "test.sqlite3")}
if "postgresql" in DATABASES["default"]["ENGINE"]:
    DATABASES["default"]["TEST"] = {"NAME": f"test_runway_feed_{os.getpid()}"}
else:
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-{os.getpid()}.sqlite3")}
# A qcluster started by a test connects straight to that test's database.
if os.environ.get("RUNWAY_TEST_DATABASE"):
    DATABASES["default"]["NAME"] = os.environ["RUNWAY_TEST_DATABASE"]

# A queue of its own per test process (pytest-xdist runs several on one Redis); a qcluster a
# test starts is handed the same name.
Q_CLUSTER = q_cluster_from_env(
    os.environ.get("RUNWAY_TEST_CLUSTER_NAME", f"runway-tests-{os.getpid()}"), poll=0.2
)
# A qcluster started by a test may run a single worker (the one-worker download test).
if os.environ.get("RUNWAY_TEST_WORKERS"):
    Q_CLUSTER["workers"] = int(os.environ["RUNWAY_TEST_WORKERS"])

RUNWAY_FEED = {
    "API_KEY": "test-key",
    "BASE_URL": "http://127.0.0.1:9",
    # A test that starts a qcluster hands it the fake server's address and short intervals.
    **json.loads(os.environ.get("RUNWAY_TEST_FEED_SETTINGS", "{}")),
}

STATIC_URL = "static/"
# Result downloads in a test's qcluster go to that test's temporary folder.
MEDIA_ROOT = os.environ.get("RUNWAY_TEST_MEDIA_ROOT", "")
MEDIA_URL = "/media/"  # stored results have a URL (check E022)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

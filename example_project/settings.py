"""Settings of the example host site. SQLite and the ORM broker unless DATABASE_URL/REDIS_URL."""

from __future__ import annotations

import os
from pathlib import Path

from example_project.environment import database_from_env, q_cluster_from_env

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "django_runway_feed",
    "example_project.videos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {"default": database_from_env(BASE_DIR / "example.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
MEDIA_ROOT = BASE_DIR / "media"
MEDIA_URL = "media/"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "videos:list"
LOGOUT_REDIRECT_URL = "login"

Q_CLUSTER = q_cluster_from_env(
    "runway-example", workers=int(os.environ.get("RUNWAY_Q_WORKERS", "2"))
)

RUNWAY_FEED = {
    # The demo points these at the fake CometAPI it starts; a real site reads its key from the
    # environment and leaves BASE_URL alone.
    "API_KEY": os.environ.get("COMETAPI_KEY"),
    "BASE_URL": os.environ.get("COMETAPI_BASE_URL", "https://api.cometapi.com"),
    "POLL_WINDOW": float(os.environ.get("RUNWAY_POLL_WINDOW", "50")),
}

if os.environ.get("RUNWAY_DOWNLOAD_FROM_FAKE") == "1":
    # make serve copies finished videos into MEDIA_ROOT, as a real site does before Runway's
    # URLs expire. The fake CometAPI is plain http on loopback, which downloads refuse unless
    # told otherwise; never allow either for the real API.
    RUNWAY_FEED |= {
        "DOWNLOAD_RESULTS": True,
        "DOWNLOAD_ALLOW_HTTP": True,
        "DOWNLOAD_ALLOWED_NETWORKS": ["127.0.0.1/32"],
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_runway_feed": {"handlers": ["console"], "level": "INFO"},
        "example_project": {"handlers": ["console"], "level": "INFO"},
    },
}

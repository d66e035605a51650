"""The system checks of the RUNWAY_FEED settings and their fit with the django-q2 cluster.

They read settings only, never the database. :mod:`django_runway_feed.checks` registers them
with Django, and :func:`django_runway_feed.health.evaluate` runs them with the state checks.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .client import request_seconds
from .conf import DEFAULTS, DURATION_KEYS, conf, q_cluster
from .site_checks import check_callback_origin, check_media_url

ID = "django_runway_feed"


def _is_duration(value: Any) -> bool:
    if isinstance(value, dt.timedelta):
        return value.total_seconds() > 0
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_timeout(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return len(value) == 2 and all(_is_duration(part) for part in value)
    return _is_duration(value)


def _is_optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


# What each key must hold, as (test, description) pairs: data, so adding a key is one line.
VALIDATORS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "API_KEY": (_is_optional_str, "a string"),
    "BASE_URL": (_is_url, "an http(s) URL"),
    "RUNWAY_VERSION": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "REQUEST_TIMEOUT": (_is_timeout, "a positive number of seconds or a (connect, read) pair"),
    "MAX_RESPONSE_BYTES": (_is_positive_int, "a positive integer"),
    "BATCH_SIZE": (_is_positive_int, "a positive integer"),
    "CONCURRENCY": (_is_positive_int, "a positive integer"),
    "MAX_REQUESTS_PER_SECOND": (
        lambda v: v is None or (_is_duration(v) and not isinstance(v, dt.timedelta)),
        "a positive number or None",
    ),
    "SCHEDULE_NAME": (lambda v: isinstance(v, str) and 0 < len(v) <= 100, "a short string"),
    "AUTO_SCHEDULE": (lambda v: isinstance(v, bool), "True or False"),
    "CALLBACK_BASE_URL": (lambda v: v is None or _is_url(v), "None or an http(s) URL"),
    "TRUST_CALLBACKS": (lambda v: isinstance(v, bool), "True or False"),
    "LEARN_RUN_TIMES": (lambda v: isinstance(v, bool), "True or False"),
    "PRUNE_AFTER_DAYS": (lambda v: v is None or _is_positive_int(v), "None or a positive integer"),
    "DOWNLOAD_RESULTS": (lambda v: isinstance(v, bool), "True or False"),
    "STORAGE": (lambda v: isinstance(v, str) and bool(v), "the alias of a STORAGES entry"),
    "MAX_DOWNLOAD_BYTES": (_is_positive_int, "a positive integer"),
    "ALLOWED_DOWNLOAD_HOSTS": (
        lambda v: v is None or (isinstance(v, list | tuple) and all(isinstance(h, str) for h in v)),
        "None or a list of host names",
    ),
    "DOWNLOAD_ALLOW_HTTP": (lambda v: isinstance(v, bool), "True or False"),
    "DOWNLOAD_ALLOWED_NETWORKS": (
        lambda v: isinstance(v, list | tuple) and all(isinstance(n, str) for n in v),
        "a list of networks such as '10.0.0.0/8'",
    ),
    "DOWNLOAD_MAX_ATTEMPTS": (_is_positive_int, "a positive integer"),
    "DOWNLOAD_TIMEOUT": (_is_timeout, "a positive number of seconds or a (connect, read) pair"),
    **{key: (_is_duration, "a positive number of seconds or a timedelta") for key in DURATION_KEYS},
}


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    raw = getattr(settings, "RUNWAY_FEED", {})
    if not isinstance(raw, dict):
        return [
            Error(
                "RUNWAY_FEED must be a dict.",
                hint="Set RUNWAY_FEED = {'API_KEY': ...} in your settings.",
                id=f"{ID}.E001",
            )
        ]
    messages: list[CheckMessage] = []
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = (
                f"Did you mean RUNWAY_FEED['{close[0]}']?"
                if close
                else ("Known keys: " + ", ".join(sorted(DEFAULTS)))
            )
            messages.append(
                Warning(f"RUNWAY_FEED has an unknown key {key!r}.", hint=hint, id=f"{ID}.W001")
            )
    bad = set()
    for key, (valid, description) in VALIDATORS.items():
        if key in raw and not valid(raw[key]):
            bad.add(key)
            messages.append(
                Error(
                    f"RUNWAY_FEED['{key}'] must be {description}.",
                    hint=f"Fix RUNWAY_FEED['{key}'] or remove it to use the default.",
                    id=f"{ID}.E002",
                )
            )
    if not raw.get("API_KEY"):
        messages.append(
            Warning(
                "No CometAPI key: tasks cannot be created or polled.",
                hint="Set RUNWAY_FEED['API_KEY'] (read it from the environment, not from code).",
                id=f"{ID}.W002",
            )
        )
    if bad:
        return messages  # the relations below would only repeat the type errors

    if conf.MAX_POLL_INTERVAL < conf.POLL_INTERVAL:
        messages.append(
            Error(
                "RUNWAY_FEED['MAX_POLL_INTERVAL'] is shorter than RUNWAY_FEED['POLL_INTERVAL'].",
                hint="Make RUNWAY_FEED['MAX_POLL_INTERVAL'] at least POLL_INTERVAL.",
                id=f"{ID}.E003",
            )
        )
    if conf.POLL_INTERVAL < 5:
        messages.append(
            Warning(
                "RUNWAY_FEED['POLL_INTERVAL'] is below 5 seconds; Runway asks clients not to "
                "poll a task more often.",
                hint="Set RUNWAY_FEED['POLL_INTERVAL'] to 5 or more.",
                id=f"{ID}.W003",
            )
        )
    if request_seconds() >= conf.LEASE_SECONDS:
        messages.append(
            Error(
                "RUNWAY_FEED['LEASE_SECONDS'] is not longer than one request's timeout: a lease "
                "could expire while its poll is in flight and another worker would poll again.",
                hint="Raise RUNWAY_FEED['LEASE_SECONDS'] above the sum of REQUEST_TIMEOUT.",
                id=f"{ID}.E004",
            )
        )
    messages.extend(_check_cluster())
    messages.extend(_check_downloads(raw))
    messages.extend(check_callback_origin())
    return messages


def _check_downloads(raw: dict[str, Any]) -> list[CheckMessage]:
    import ipaddress

    messages: list[CheckMessage] = []
    if conf.DOWNLOAD_RESULTS or "STORAGE" in raw:
        configured = getattr(settings, "STORAGES", None) or {}
        if conf.STORAGE not in configured:
            messages.append(
                Error(
                    f"RUNWAY_FEED['STORAGE'] is {conf.STORAGE!r}, which is not a key of STORAGES.",
                    hint="Name one of: " + ", ".join(repr(alias) for alias in configured)
                    if configured
                    else "Add the alias to STORAGES.",
                    id=f"{ID}.E020",
                )
            )
        elif conf.DOWNLOAD_RESULTS:
            messages.extend(check_media_url(configured[conf.STORAGE]))
    for network in conf.DOWNLOAD_ALLOWED_NETWORKS:
        try:
            parsed = ipaddress.ip_network(network, strict=False)
        except ValueError:
            messages.append(
                Error(
                    f"RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] has {network!r}, which is not an "
                    "IP network.",
                    hint="Write networks like '10.20.0.0/16' or single addresses like '10.0.0.5'.",
                    id=f"{ID}.E021",
                )
            )
            continue
        if parsed.prefixlen == 0:
            messages.append(
                Warning(
                    f"RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] has {network!r}, which allows "
                    "every address: result downloads could reach your internal services.",
                    hint="List only the networks of the storage hosts you trust.",
                    id=f"{ID}.W020",
                )
            )
    return messages


# The one hint of every django-q2 wiring error: the settings the quick start shows.
WIRING_HINT = (
    "Add 'django_q' to INSTALLED_APPS and set Q_CLUSTER = {'name': 'mysite', 'orm': 'default', "
    "'timeout': 120, 'retry': 180, 'catch_up': False} (docs/quickstart.md, step 2); a site "
    "that polls with runway_poll --loop instead sets RUNWAY_FEED['AUTO_SCHEDULE'] = False."
)

# django-q2 picks its broker from the first of these keys present, the Redis broker when none is;
# each needs a package that django-q2 itself does not install.
BROKER_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("disque_nodes", "redis", "redis"),
    ("iron_mq", "iron_mq", "iron-mq"),
    ("sqs", "boto3", "boto3"),
    ("orm", "", ""),
    ("mongo", "pymongo", "pymongo"),
)


def _broker_module(cluster: dict[str, Any]) -> tuple[str, str, str]:
    """(setting, module, pip name) of the broker django-q2 will load; module '' needs nothing."""
    if cluster.get("broker_class"):
        path = str(cluster["broker_class"])
        return "broker_class", path.rpartition(".")[0] or path, path
    for key, module, package in BROKER_PACKAGES:
        if cluster.get(key):
            return key, module, package
    return "redis", "redis", "redis"


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def wiring_errors() -> list[CheckMessage]:
    """E011 or E012: no django-q2 cluster could ever run the poller (empty when one can).

    Also what :meth:`RunwayTask.objects.generate` and the other create methods refuse to work
    without, since ``manage.py shell`` runs no checks.
    """
    from django.apps import apps

    if not conf.AUTO_SCHEDULE:
        return []  # the site polls some other way (runway_poll --loop); django-q2 is optional
    if not apps.is_installed("django_q"):
        return [
            Error(
                "'django_q' is not in INSTALLED_APPS: no schedule can be installed, so no task "
                "is ever polled, and manage.py qcluster does not exist.",
                hint=WIRING_HINT,
                id=f"{ID}.E011",
            )
        ]
    if q_cluster() is None:
        return [
            Error(
                "Q_CLUSTER is not set: django-q2 would fall back to a Redis broker on localhost "
                "and qcluster would fail to start or never run the poller. (django-q2's own "
                "warning 'Retry and timeout are misconfigured', printed as Django starts, comes "
                "from the same missing setting.)",
                hint=WIRING_HINT,
                id=f"{ID}.E012",
            )
        ]
    return []


def _check_cluster() -> list[CheckMessage]:
    wiring = wiring_errors()
    cluster = q_cluster()
    if wiring or not conf.AUTO_SCHEDULE or cluster is None:
        return wiring
    if cluster.get("sync"):
        return []
    messages: list[CheckMessage] = []
    key, module, package = _broker_module(cluster)
    if module and not _importable(module):
        messages.append(
            Error(
                f"The django-q2 broker chosen by Q_CLUSTER[{key!r}] needs the module "
                f"{module!r}, which cannot be imported: qcluster would not start.",
                hint=(
                    f"Install it (pip install {package})"
                    if key != "broker_class"
                    else f"Install the package that provides {package}"
                )
                + " or use the ORM broker: Q_CLUSTER['orm'] = 'default'.",
                id=f"{ID}.E013",
            )
        )
    messages.extend(_check_cluster_times(cluster))
    return messages


def _check_cluster_times(cluster: dict[str, Any]) -> list[CheckMessage]:
    timeout = cluster.get("timeout")
    retry = cluster.get("retry", 60)  # django-q2's default
    needed = math.ceil(conf.POLL_WINDOW + request_seconds())
    timed = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    timeout_seconds = float(timeout) if isinstance(timeout, int | float) else 0.0
    # The values both errors recommend: a timeout that fits a run, and a retry above that
    # timeout. Judging retry against the timeout the hint asks for (not a too-short one) keeps
    # E005 and E006 from contradicting each other.
    fit_timeout = max(math.ceil(timeout_seconds), needed)
    hint = (
        f"Set Q_CLUSTER['timeout'] to at least {fit_timeout} and Q_CLUSTER['retry'] above it "
        f"(for example {fit_timeout + 60}), or lower RUNWAY_FEED['POLL_WINDOW']."
    )
    messages: list[CheckMessage] = []
    if timed and timeout_seconds < needed:
        messages.append(
            Error(
                f"Q_CLUSTER['timeout'] ({timeout} s) is shorter than one poll run "
                f"(RUNWAY_FEED['POLL_WINDOW'] plus a request, {needed} s): django-q2 would "
                "kill the poller mid-run.",
                hint=hint,
                id=f"{ID}.E005",
            )
        )
    if isinstance(retry, int | float) and retry <= fit_timeout:
        messages.append(
            Error(
                f"Q_CLUSTER['retry'] ({retry} s) is not longer than a poll run may last "
                f"({fit_timeout} s): django-q2 would start the same job again while it still "
                "runs.",
                hint=hint,
                id=f"{ID}.E006",
            )
        )
    return messages

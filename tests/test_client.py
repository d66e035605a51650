from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from django_runway_feed import __version__
from django_runway_feed.client import CometAPIClient, parse_retry_after
from django_runway_feed.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidResponseError,
    RateLimitedError,
    RequestRejectedError,
    RunwayFeedError,
    TaskNotVisibleError,
    TransientAPIError,
)
from django_runway_feed.testing import FakeCometAPI, Fault, TaskScript

SECRET = "sk-very-secret-key-0123456789"


@pytest.fixture
def secret_api(clock):
    with FakeCometAPI(api_key=SECRET, clock=clock) as server:
        yield server


@pytest.fixture
def secret_client(secret_api):
    with CometAPIClient(api_key=SECRET, base_url=secret_api.url, timeout=(1, 2)) as client:
        yield client


def test_create_sends_documented_headers(secret_api, secret_client):
    secret_client.create("generate", {"prompt": "a cat", "callback_url": "https://x.invalid/"})

    request = secret_api.create_requests[-1]
    assert request.route == "generate"
    assert request.authorized
    assert request.headers["X-Runway-Version"] == "2024-11-06"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith(f"django-runway-feed/{__version__} ")


def test_create_returns_task_id(secret_api, secret_client):
    task_id = secret_client.create(
        "generate", {"prompt": "a cat", "callback_url": "https://x.invalid/"}
    )

    assert task_id == secret_api.create_requests[-1].task_id


def test_create_without_callback_is_rejected_with_provider_code(secret_client):
    with pytest.raises(RequestRejectedError) as info:
        secret_client.create("generate", {"prompt": "a cat"})

    assert info.value.code == "callback_url_empty"
    assert str(info.value) == "CometAPI refused the task: callback_url_empty"


def test_create_unknown_route_raises_before_http(secret_api, secret_client):
    with pytest.raises(ValueError, match="Unknown create route 'nope'"):
        secret_client.create("nope", {})

    assert secret_api.create_requests == []


def test_client_without_key_raises_configuration_error(settings):
    settings.RUNWAY_FEED = {"BASE_URL": "http://127.0.0.1:9"}

    with pytest.raises(ConfigurationError, match=r"RUNWAY_FEED\['API_KEY'\]"):
        CometAPIClient()


def test_feed_returns_decoded_body(secret_api, secret_client):
    task_id = secret_api.add_task(TaskScript())

    body = secret_client.feed(task_id)

    assert body["code"] == "success"
    assert body["data"]["task_id"] == task_id


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.unauthorized(), AuthenticationError),
        (Fault.quota(), ForbiddenError),
        (Fault.rate_limited(retry_after="7"), RateLimitedError),
        (Fault.server_error(500), TransientAPIError),
        (Fault.server_error(524), TransientAPIError),
        (Fault.html(), InvalidResponseError),
        (Fault.malformed_json(), InvalidResponseError),
        (Fault.redirect(), InvalidResponseError),
        (Fault.reset(), TransientAPIError),
        (Fault(kind="task_not_exist"), TaskNotVisibleError),
    ],
)
def test_feed_classifies_fault(secret_api, secret_client, fault, error):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(fault)

    with pytest.raises(error):
        secret_client.feed(task_id)


def test_feed_rate_limit_carries_retry_after(secret_api, secret_client):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(Fault.rate_limited(retry_after="7"))

    with pytest.raises(RateLimitedError) as info:
        secret_client.feed(task_id)

    assert info.value.retry_after == 7.0


def test_feed_quota_error_keeps_provider_code(secret_api, secret_client):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(Fault.quota())

    with pytest.raises(ForbiddenError) as info:
        secret_client.feed(task_id)

    assert info.value.code == "insufficient_user_quota"


def test_feed_redirect_is_not_followed(secret_api, secret_client):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(Fault.redirect())

    with pytest.raises(InvalidResponseError, match=r"redirects are not followed.*BASE_URL"):
        secret_client.feed(task_id)

    assert secret_api.call_count() == 1


def test_feed_huge_chunked_body_stops_at_cap(secret_api):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(Fault.huge(5_000_000))

    with (
        CometAPIClient(
            api_key=SECRET, base_url=secret_api.url, max_response_bytes=100_000
        ) as client,
        pytest.raises(InvalidResponseError, match="larger than 100000 bytes"),
    ):
        client.feed(task_id)


def test_feed_timeout_is_transient(secret_api):
    task_id = secret_api.add_task(TaskScript())
    secret_api.inject(Fault.slow(1.5))

    with (
        CometAPIClient(api_key=SECRET, base_url=secret_api.url, timeout=(1, 0.3)) as client,
        pytest.raises(TransientAPIError, match="timed out"),
    ):
        client.feed(task_id)


def test_feed_connection_refused_is_transient():
    with (
        CometAPIClient(api_key=SECRET, base_url="http://127.0.0.1:9", timeout=(0.5, 0.5)) as c,
        pytest.raises(TransientAPIError, match="could not be reached"),
    ):
        c.feed("abc")


def test_key_never_in_repr_messages_or_debug_logs(secret_api, secret_client, caplog):
    task_id = secret_api.add_task(TaskScript())
    texts = [repr(secret_client)]
    with caplog.at_level(logging.DEBUG):
        for fault in (Fault.unauthorized(), Fault.server_error(500), Fault.html(), Fault.reset()):
            secret_api.inject(fault)
            with pytest.raises(RunwayFeedError) as info:
                secret_client.feed(task_id)
            texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        secret_client.feed(task_id)

    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records
    assert not [text for text in texts if SECRET in text]


def test_parse_retry_after_seconds_and_http_date():
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_feed_error_envelope_message_is_kept(secret_api, secret_client):
    task_id = secret_api.add_task(TaskScript())
    envelope = {
        "error": {
            "message": "bad thing (request id: 1)",
            "type": "comet_api_error",
            "param": "",
            "code": "invalid_request",
        }
    }
    secret_api.inject(Fault(kind="status", status=400, body=json.dumps(envelope)))

    with pytest.raises(RequestRejectedError) as info:
        secret_client.feed(task_id)

    assert info.value.code == "invalid_request"
    assert "bad thing (request id: 1)" in str(info.value)

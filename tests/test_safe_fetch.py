"""The SSRF-safe downloader, against real servers on loopback that count every connection."""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from django_runway_feed import downloads
from django_runway_feed.exceptions import (
    DownloadError,
    DownloadExpired,
    DownloadRefused,
    DownloadTooLarge,
)
from django_runway_feed.models import DownloadStatus, EventKind, RunwayTask, TaskEvent
from django_runway_feed.safe_fetch import SafeDownloader, address_problem, ip_literal
from tests.system_checks import checks_without_databases

# A test CA and a certificate for ``videos.example`` signed by it (valid until 2126; made with
# openssl for these tests only).
TLS = Path(__file__).resolve().parent / "fixtures" / "tls"
VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40

# A response: (status, headers, body). The body is sent as is; Content-Length is added only
# when the headers do not say otherwise ("Content-Length": None means: close-delimited).
Response = tuple[int, dict[str, str | None], bytes]


class CountingServer:
    """A loopback HTTP server that counts accepted connections and records requests."""

    def __init__(self, host: str = "127.0.0.1", *, tls: bool = False) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.routes: dict[str, Response | Callable[[BaseHTTPRequestHandler], None]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = outer.routes.get(self.path.split("?")[0], (404, {}, b"not here"))
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                close_delimited = headers.get("Content-Length", "") is None
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                if close_delimited:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                elif "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                outer.connections += 1
                super().process_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Clients that give up (timeouts, refused certificates) reset connections on
                # purpose; the stdlib would print each traceback to stderr.
                return

        self.server = Server((host, 0), Handler)
        self.scheme = "http"
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/video.mp4", host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[CountingServer]:
    """A server that must never be reached by the refused requests of a test."""
    server = CountingServer()
    server.routes["/video.mp4"] = (200, {"Content-Type": "video/mp4"}, VIDEO)
    yield server
    server.close()


@pytest.fixture
def second() -> Iterator[CountingServer]:
    """Another loopback server, on 127.0.0.2: outside the 127.0.0.1/32 the tests allow."""
    server = CountingServer("127.0.0.2")
    server.routes["/video.mp4"] = (200, {"Content-Type": "video/mp4"}, VIDEO)
    yield server
    server.close()


def strict(**kwargs: Any) -> SafeDownloader:
    """The production rules (no private network allowed), http allowed for the test servers."""
    options: dict[str, Any] = {"allow_http": True, "allowed_networks": [], "allowed_hosts": None}
    return SafeDownloader(**{**options, **kwargs})


def trusting(**kwargs: Any) -> SafeDownloader:
    """127.0.0.1/32 allowed, as the test settings do for the fake CometAPI."""
    return strict(allowed_networks=["127.0.0.1/32"], **kwargs)


def fetch(downloader: SafeDownloader, url: str, prefix: str = "video/") -> bytes:
    buffer = io.BytesIO()
    downloader.fetch(url, buffer, content_type_prefix=prefix)
    return buffer.getvalue()


# -- addresses and URLs that are refused before any connection -----------------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is loopback;"),
        ("127.1", "127.0.0.1 is loopback (127.1 -> 127.0.0.1);"),
        ("2130706433", "127.0.0.1 is loopback (2130706433 -> 127.0.0.1);"),
        ("0x7f.1", "127.0.0.1 is loopback (0x7f.1 -> 127.0.0.1);"),
        ("0x7f000001", "127.0.0.1 is loopback (0x7f000001 -> 127.0.0.1);"),
        ("0177.0.0.1", "127.0.0.1 is loopback (0177.0.0.1 -> 127.0.0.1);"),
        ("localhost", "is loopback (localhost -> "),
        # Named by the IPv4 address they map to, however the Python prints them.
        ("[::ffff:127.0.0.1]", "127.0.0.1 is loopback (::ffff:127.0.0.1 -> 127.0.0.1);"),
        ("[::ffff:7f00:1]", "127.0.0.1 is loopback (::ffff:7f00:1 -> 127.0.0.1);"),
        ("[::1]", "::1 is loopback;"),
        ("[0:0:0:0:0:0:0:1]", "::1 is loopback (0:0:0:0:0:0:0:1 -> ::1);"),
    ],
)
def test_loopback_in_any_spelling_is_refused_without_connecting(target, host, reason):
    url = target.url(host=host)

    with pytest.raises(DownloadRefused) as refused:
        fetch(strict(), url)

    assert reason in str(refused.value)
    assert str(refused.value).startswith(f"Refused http://{host}:{target.port}/video.mp4: ")
    assert str(refused.value).endswith(
        "add its network to RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] only if it is trusted."
    )
    assert target.connections == 0


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["10.1.2.3"], "10.1.2.3 is private"),
        (["192.168.0.10"], "192.168.0.10 is private"),
        (["172.16.5.4"], "172.16.5.4 is private"),
        (["169.254.169.254"], "169.254.169.254 is link-local"),
        (["0.0.0.0"], "0.0.0.0 is unspecified"),
        (["224.0.0.1"], "224.0.0.1 is multicast"),
        (["240.0.0.1"], "240.0.0.1 is reserved"),
        (["100.64.0.1"], "100.64.0.1 is not globally routable"),
        (["::1"], "::1 is loopback"),
        (["fd12:3456::1"], "fd12:3456::1 is private"),
        (["fe80::1"], "fe80::1 is link-local"),
        (["::127.0.0.1"], "::7f00:1 is reserved"),  # IPv4-compatible
        (["64:ff9b::127.0.0.1"], "64:ff9b::7f00:1 is reserved"),  # NAT64
        (["2002:7f00:1::1"], "2002:7f00:1::1 is a 6to4 address (127.0.0.1 is loopback)"),
        (
            ["2002:a9fe:a9fe::"],
            "2002:a9fe:a9fe:: is a 6to4 address (169.254.169.254 is link-local)",
        ),
        # One bad address among good ones is enough: the resolver could hand out either.
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1 is loopback"),
    ],
)
def test_hosts_resolving_to_internal_addresses_are_refused(target, addresses, reason):
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return addresses

    with pytest.raises(DownloadRefused) as refused:
        fetch(strict(resolver=resolver), f"http://cdn.example:{target.port}/video.mp4")

    assert f": {reason} (cdn.example -> " in str(refused.value)
    assert asked == [("cdn.example", target.port)]
    assert target.connections == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://good.example@127.0.0.1:{port}/video.mp4",
            "Refused http://127.0.0.1:{port}/video.mp4: URLs with a user name are not followed.",
        ),
        (
            "http://user:secret@127.0.0.1:{port}/video.mp4",
            "Refused http://127.0.0.1:{port}/video.mp4: URLs with a user name are not followed.",
        ),
        ("ftp://127.0.0.1:{port}/video.mp4", "only https URLs are downloaded."),
        ("file:///etc/passwd", "Refused file:///etc/passwd: only https URLs are downloaded."),
        ("http:///video.mp4", "the URL has no host."),
        ("http://127.0.0.1:99999/video.mp4", "not a valid URL"),
    ],
)
def test_malformed_and_tricky_urls_are_refused(target, url, message):
    url = url.format(port=target.port)

    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(), url)

    assert message.format(port=target.port) in str(refused.value)
    assert "secret" not in str(refused.value)
    assert target.connections == 0


def test_plain_http_is_refused_by_default(target):
    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(allow_http=False), target.url())

    assert str(refused.value) == (
        f"Refused {target.url()}: plain http is off "
        "(RUNWAY_FEED['DOWNLOAD_ALLOW_HTTP'] = True allows it)."
    )
    assert target.connections == 0


def test_hosts_outside_the_allow_list_are_refused_before_resolving(target):
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("must not resolve a host that is not allowed")

    downloader = trusting(allowed_hosts=["cdn.example", ".runwayml.com"], resolver=resolver)

    with pytest.raises(DownloadRefused) as refused:
        fetch(downloader, f"http://evil.example:{target.port}/video.mp4")

    assert "evil.example is not in RUNWAY_FEED['ALLOWED_DOWNLOAD_HOSTS']" in str(refused.value)
    assert downloader._host_allowed("dnznrvs05pmza.cloudfront.net") is False
    assert downloader._host_allowed("videos.runwayml.com") is True
    assert downloader._host_allowed("runwayml.com") is True
    assert downloader._host_allowed("evilrunwayml.com") is False
    assert target.connections == 0


def test_a_6to4_address_is_refused_on_every_python_unless_the_ipv4_inside_is_allowed():
    public = ipaddress.ip_address("2002:5db8:d70e::1")  # 93.184.215.14 inside
    private = ipaddress.ip_address("2002:a00:1::1")  # 10.0.0.1 inside

    # Python 3.13 counts all of 2002::/16 as private, older builds may not: the rule is ours.
    assert address_problem(public, []) == (
        "2002:5db8:d70e::1 is a 6to4 address (relayed to 93.184.215.14; not globally reachable)"
    )
    assert address_problem(private, []) == "2002:a00:1::1 is a 6to4 address (10.0.0.1 is private)"
    assert address_problem(private, [ipaddress.ip_network("10.0.0.0/8")]) == ""
    assert address_problem(public, [ipaddress.ip_network("93.184.215.0/24")]) == ""


def test_ip_literal_catches_every_inet_aton_form():
    assert {str(ip_literal(h)) for h in ("2130706433", "0x7f.1", "0177.0.0.1", "127.1")} == {
        "127.0.0.1"
    }
    assert ip_literal("1e100.net") is None
    assert ip_literal("cdn.example") is None


# -- what an allowed request does -----------------------------------------------------------------


def test_allowed_download_streams_the_bytes_and_hash(target):
    buffer = io.BytesIO()

    result = trusting().fetch(target.url(), buffer, content_type_prefix="video/")

    assert buffer.getvalue() == VIDEO
    assert result.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert result.size == len(VIDEO)
    assert result.content_type == "video/mp4"
    assert target.connections == 1  # the counter the refusal tests rely on does count


def test_no_credentials_reach_the_download_host(target, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "sk-very-secret"}

    fetch(trusting(), target.url())

    (_path, headers), *_ = target.requests
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert "sk-very-secret" not in repr(headers)


def test_connects_to_the_checked_address_without_a_second_lookup(target):
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    # ``videos.example`` resolves nowhere in real DNS: the request can only arrive if the
    # connection went to the address the resolver gave and was checked.
    body = fetch(trusting(resolver=resolver), f"http://videos.example:{target.port}/video.mp4")

    assert body == VIDEO
    assert asked == ["videos.example"]
    assert target.requests[0][1]["host"] == f"videos.example:{target.port}"


@pytest.fixture
def tls_target() -> Iterator[CountingServer]:
    server = CountingServer(tls=True)
    server.routes["/video.mp4"] = (200, {"Content-Type": "video/mp4"}, VIDEO)
    yield server
    server.close()


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(tls_target):
    downloader = trusting(
        allow_http=False, resolver=lambda host, port: ["127.0.0.1"], verify=str(TLS / "ca.pem")
    )

    body = fetch(downloader, f"https://videos.example:{tls_target.port}/video.mp4")

    # The certificate is for videos.example only: the handshake used the name (SNI and the
    # certificate check), while the connection went to the pinned 127.0.0.1.
    assert body == VIDEO
    assert tls_target.requests[0][1]["host"] == f"videos.example:{tls_target.port}"


def test_https_certificate_for_another_name_is_refused(tls_target):
    downloader = trusting(
        allow_http=False, resolver=lambda host, port: ["127.0.0.1"], verify=str(TLS / "ca.pem")
    )

    with pytest.raises(DownloadError) as error:
        fetch(downloader, f"https://other.example:{tls_target.port}/video.mp4")

    assert str(error.value) == (
        f"Could not fetch https://other.example:{tls_target.port}/video.mp4: SSLError"
    )
    assert tls_target.requests == []


def test_redirects_are_followed_by_hand_and_checked_again(target):
    target.routes["/old.mp4"] = (302, {"Location": "/video.mp4"}, b"")

    assert fetch(trusting(), target.url("/old.mp4")) == VIDEO
    assert [path for path, _ in target.requests] == ["/old.mp4", "/video.mp4"]


def test_redirect_to_a_refused_address_makes_no_connection_there(target, second):
    target.routes["/old.mp4"] = (302, {"Location": second.url()}, b"")

    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(), target.url("/old.mp4"))

    assert f"Refused {second.url()}: 127.0.0.2 is loopback;" in str(refused.value)
    assert second.connections == 0


def test_each_redirect_hop_is_resolved_and_checked_again(target, second):
    # DNS rebinding across hops: the name answers 127.0.0.1 (allowed) for the first request
    # and 127.0.0.2 (not allowed) for the redirect's.
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    target.routes["/old.mp4"] = (302, {"Location": f"http://cdn.example:{second.port}/"}, b"")

    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(resolver=resolver), f"http://cdn.example:{target.port}/old.mp4")

    assert "127.0.0.2 is loopback (cdn.example -> 127.0.0.2)" in str(refused.value)
    assert asked == ["cdn.example", "cdn.example"]
    assert [path for path, _ in target.requests] == ["/old.mp4"]
    assert second.connections == 0


def test_redirects_stop_once_the_download_time_is_used_up(target):
    def slow_redirect(handler: BaseHTTPRequestHandler) -> None:
        threading.Event().wait(0.3)
        handler.send_response(302)
        handler.send_header("Location", "/video.mp4")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    target.routes["/slow.mp4"] = slow_redirect

    with pytest.raises(DownloadError) as error:
        fetch(trusting(max_duration=0.1), target.url("/slow.mp4"))

    # Cut off while the slow hop still waits to answer: the redirect is never followed.
    assert str(error.value) == (
        f"{target.url('/slow.mp4')} took longer than RUNWAY_FEED['DOWNLOAD_MAX_DURATION'] (0.1 s)."
    )
    assert [path for path, _ in target.requests] == ["/slow.mp4"]


def test_redirect_loops_stop_at_the_hop_limit(target):
    target.routes["/loop.mp4"] = (307, {"Location": "/loop.mp4"}, b"")

    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(), target.url("/loop.mp4"))

    assert str(refused.value) == "Refused: more than 5 redirects."
    assert len(target.requests) == 6


# -- the response ---------------------------------------------------------------------------------


def test_declared_size_over_the_cap_is_refused(target):
    with pytest.raises(DownloadTooLarge) as refused:
        fetch(trusting(max_bytes=1000), target.url())

    assert str(refused.value) == (
        f"Refused {target.url()}: {len(VIDEO)} bytes is more than "
        "RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] (1000)."
    )


def test_undeclared_size_over_the_cap_is_refused_while_streaming(target):
    target.routes["/video.mp4"] = (
        200,
        {"Content-Type": "video/mp4", "Content-Length": None},
        VIDEO,
    )
    buffer = io.BytesIO()

    with pytest.raises(DownloadTooLarge) as refused:
        trusting(max_bytes=1000).fetch(target.url(), buffer, content_type_prefix="video/")

    assert "the body went past RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] (1000 bytes)" in str(refused.value)
    assert len(buffer.getvalue()) <= 1000


def test_undeclared_size_under_the_cap_downloads(target):
    target.routes["/video.mp4"] = (
        200,
        {"Content-Type": "video/mp4", "Content-Length": None},
        VIDEO,
    )

    assert fetch(trusting(), target.url()) == VIDEO


def test_a_compressed_body_is_refused_before_it_is_inflated(target):
    # 10 MB of zeros in 10 kB: inflated, it would be far past the cap before the cap is checked.
    bomb = gzip.compress(bytes(10 * 1024 * 1024))
    target.routes["/video.mp4"] = (
        200,
        {"Content-Type": "video/mp4", "Content-Encoding": "gzip"},
        bomb,
    )
    buffer = io.BytesIO()

    with pytest.raises(DownloadRefused) as refused:
        trusting(max_bytes=1000).fetch(target.url(), buffer, content_type_prefix="video/")

    assert str(refused.value) == (
        f"Refused {target.url()}: it came gzip-encoded, which was not asked for."
    )
    assert buffer.getvalue() == b""
    assert target.requests[0][1]["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("content_type", "prefix"),
    [("text/html", "video/"), ("", "video/"), ("video/mp4", "image/"), ("image/png", "video/")],
)
def test_content_type_outside_the_allow_list_is_refused(target, content_type, prefix):
    headers: dict[str, str | None] = {"Content-Type": content_type} if content_type else {}
    target.routes["/video.mp4"] = (200, headers, VIDEO)

    with pytest.raises(DownloadRefused) as refused:
        fetch(trusting(), target.url(), prefix)

    assert f"content type {content_type or 'none'!r} is not {prefix}*." in str(refused.value)


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_answers_are_told_apart_and_hide_the_signature(target, status):
    target.routes["/gone.mp4"] = (status, {"Content-Type": "text/plain"}, b"expired")

    with pytest.raises(DownloadExpired) as expired:
        fetch(trusting(), target.url("/gone.mp4?Signature=abc123&Expires=1"))

    assert expired.value.status_code == status
    assert str(expired.value) == (
        f"{target.url('/gone.mp4')}?... answered HTTP {status} (the URL has probably expired)."
    )


def test_server_error_is_retryable(target):
    target.routes["/video.mp4"] = (503, {"Content-Type": "text/html"}, b"busy")

    with pytest.raises(DownloadError) as error:
        fetch(trusting(), target.url())

    assert error.value.retryable
    assert not isinstance(error.value, DownloadRefused)
    assert str(error.value) == f"{target.url()} answered HTTP 503."


def test_body_cut_short_is_an_error(target):
    def truncated(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(VIDEO)))
        handler.end_headers()
        handler.wfile.write(VIDEO[:1000])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True

    target.routes["/video.mp4"] = truncated

    with pytest.raises(DownloadError) as error:
        fetch(trusting(), target.url())

    assert str(error.value) == (
        f"Download of {target.url()} broke off after 0 bytes: ChunkedEncodingError"
    )
    assert error.value.retryable


def test_a_stalled_server_times_out(target):
    release = threading.Event()

    def stalled(handler: BaseHTTPRequestHandler) -> None:
        release.wait(10)

    target.routes["/video.mp4"] = stalled
    try:
        with pytest.raises(DownloadError) as error:
            fetch(trusting(timeout=(1, 0.3)), target.url())
    finally:
        release.set()

    assert str(error.value) == f"Could not fetch {target.url()}: ReadTimeout"


# -- a partial download leaves nothing in storage -------------------------------------------------


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """Downloads on, into a tmp FileSystemStorage alias, with the test server's address allowed."""
    media = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "runway": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
    }
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "DOWNLOAD_RESULTS": True,
        "STORAGE": "runway",
        "DOWNLOAD_ALLOW_HTTP": True,
        "DOWNLOAD_ALLOWED_NETWORKS": ["127.0.0.1/32"],
    }
    return media


@pytest.mark.django_db
def test_a_failing_poster_leaves_no_file_in_storage(target, media):
    target.routes["/poster.png"] = (200, {"Content-Type": "text/html"}, b"<html>")
    task = RunwayTask.objects.create(
        task_id="t-partial",
        route="tracked",
        status="succeeded",
        result_url=target.url(),
        outputs=[
            {"kind": "video", "url": target.url()},
            {"kind": "poster", "url": target.url("/poster.png")},
        ],
        download_status=DownloadStatus.PENDING,
    )

    outcome = downloads.download_result(task.pk)

    task.refresh_from_db()
    assert outcome.outcome == "failed"
    assert [path for path, _ in target.requests] == ["/video.mp4", "/poster.png"]
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
    assert task.output_file.name == ""
    assert task.download_status == DownloadStatus.FAILED
    assert task.status == "succeeded"
    assert "content type 'text/html' is not image/*" in task.download_error
    assert TaskEvent.objects.filter(task=task, kind=EventKind.DOWNLOAD_FAILED).count() == 1


@pytest.mark.django_db
def test_stored_names_take_their_extension_from_a_fixed_list(target, media):
    # A hostile server: script in an SVG "poster", a made-up video type at a URL ending .html.
    script = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    target.routes["/page.html"] = (200, {"Content-Type": "video/x-evil"}, VIDEO)
    target.routes["/poster.svg"] = (200, {"Content-Type": "image/svg+xml"}, script)
    target.routes["/last.png"] = (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n")
    task = RunwayTask.objects.create(
        task_id="t-names",
        route="tracked",
        status="succeeded",
        outputs=[
            {"kind": "video", "url": target.url("/page.html")},
            {"kind": "poster", "url": target.url("/poster.svg")},
            {"kind": "last_frame", "url": target.url("/last.png")},
        ],
        download_status=DownloadStatus.PENDING,
    )

    assert downloads.download_result(task.pk).outcome == "stored"

    task.refresh_from_db()
    names = [Path(entry["name"]).name for entry in task.stored_files]
    assert names == ["t-names.bin", "t-names-poster.bin", "t-names-last-frame.png"]
    assert sorted(p.suffix for p in media.rglob("*") if p.is_file()) == [".bin", ".bin", ".png"]
    assert task.output_content_type == "video/x-evil"


# -- system checks for the download settings ------------------------------------------------------


def download_check_messages() -> list[Any]:
    return [
        m
        for m in checks_without_databases()
        if m.id and m.id.startswith("django_runway_feed.") and m.id[-2] == "2"
    ]


def test_check_unknown_storage_alias(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "DOWNLOAD_RESULTS": True, "STORAGE": "videos"}

    (message,) = download_check_messages()

    assert message.id == "django_runway_feed.E020"
    assert message.msg == "RUNWAY_FEED['STORAGE'] is 'videos', which is not a key of STORAGES."
    assert message.hint.startswith("Name one of: 'default'")


def test_check_bad_and_too_wide_networks(settings):
    settings.RUNWAY_FEED = {
        "API_KEY": "k",
        "DOWNLOAD_ALLOWED_NETWORKS": ["10.0.0.0/8", "not-a-network", "0.0.0.0/0"],
    }

    messages = download_check_messages()

    assert [m.id for m in messages] == ["django_runway_feed.E021", "django_runway_feed.W020"]
    assert "'not-a-network', which is not an IP network" in messages[0].msg
    assert "'0.0.0.0/0', which allows every address" in messages[1].msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DOWNLOAD_ALLOW_HTTP", "yes"),
        ("DOWNLOAD_ALLOWED_NETWORKS", "10.0.0.0/8"),
        ("DOWNLOAD_MAX_ATTEMPTS", 0),
        ("DOWNLOAD_TIMEOUT", (5,)),
        ("DOWNLOAD_RETRY_DELAY", -1),
    ],
)
def test_check_download_setting_types(settings, key, value):
    settings.RUNWAY_FEED = {"API_KEY": "k", key: value}

    messages = [m for m in checks_without_databases() if m.id == "django_runway_feed.E002"]
    assert [m.msg.split(" must ")[0] for m in messages] == [f"RUNWAY_FEED['{key}']"]


def test_valid_download_settings_pass_the_checks(settings):
    settings.RUNWAY_FEED = {
        "API_KEY": "k",
        "DOWNLOAD_RESULTS": True,
        "STORAGE": "default",
        "DOWNLOAD_ALLOWED_NETWORKS": ["10.20.0.0/16"],
    }

    assert download_check_messages() == []

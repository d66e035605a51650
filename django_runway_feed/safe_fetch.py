"""Fetch an untrusted URL into a file without letting it reach inside the network (SSRF).

:class:`SafeDownloader` refuses userinfo, non-https schemes (unless allowed), hosts outside
``ALLOWED_DOWNLOAD_HOSTS``, and any host that names or resolves to a loopback, private,
link-local, multicast, reserved or otherwise non-global address (unless its network is in
``DOWNLOAD_ALLOWED_NETWORKS``). It connects to the exact address it checked, follows redirects
itself (each hop checked again), caps the body size and checks its content type. It knows
nothing of tasks or rows: :mod:`django_runway_feed.downloads` uses it for task outputs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests

from .client import user_agent
from .conf import conf
from .deadlines import Deadline, DeadlineAdapter, deadline
from .exceptions import (
    DownloadError,
    DownloadExpired,
    DownloadRefused,
    DownloadTooLarge,
)

MAX_REDIRECTS = 5
CHUNK_SIZE = 64 * 1024
EXPIRED_STATUSES = frozenset({403, 404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup; the caller connects to one of these)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise DownloadError(f"Could not resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` names by itself, in any form a resolver would accept, or None.

    Catches the forms ``inet_aton`` accepts besides dotted quads: ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``, ``127.1``.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(part for part in host.split(".")) and host.replace(".", "").isalnum():
        first = host.split(".")[0].lower()
        if first[:1].isdigit() or first.startswith("0x"):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
    return None


def spelled(address: IPAddress) -> str:
    """How messages name ``address``: an IPv4-mapped one as the IPv4 address it maps to.

    Python 3.13 prints ``::ffff:7f00:1`` as ``::ffff:127.0.0.1``; this spelling is the same on
    every Python.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def address_problem(address: IPAddress, allowed_networks: list[Any]) -> str:
    """Why connecting to ``address`` is refused, or ``""`` when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed_networks):
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        # A 6to4 address is carried to the IPv4 address inside it, through whatever relay the
        # network has. Refused unless that IPv4 address is itself allowed: Python 3.13 (and
        # some patched older builds) count all of 2002::/16 as private, older ones judge only
        # the prefix; our rule is the same on every Python.
        inner = address.sixtofour
        problem = address_problem(inner, allowed_networks)
        if problem:
            return f"{address} is a 6to4 address ({problem})"
        if any(inner in network for network in allowed_networks):
            return ""
        return f"{address} is a 6to4 address (relayed to {inner}; not globally reachable)"
    for label, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", getattr(address, "is_site_local", False)),
        ("not globally routable", not address.is_global),
    ):
        if flag:
            return f"{address} is {label}"
    return ""


@dataclass
class FetchResult:
    url: str
    size: int
    sha256: str
    content_type: str


class _PinnedAdapter(DeadlineAdapter):
    """Connects to one checked address while the request keeps its hostname.

    Its connections obey the fetch's :func:`~django_runway_feed.deadlines.deadline`.

    The Host header and, for https, the TLS SNI and certificate check use the hostname; the
    TCP connection goes to ``address``, so no second DNS lookup can swap the target. The hook
    it overrides exists since requests 2.32.2 (hence the package's minimum).
    """

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        hostname = host_params["host"]
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


class SafeDownloader:
    """Fetches untrusted URLs into a file, refusing anything that could reach inside.

    Every argument defaults to the ``RUNWAY_FEED`` settings. ``resolver(host, port)`` returns
    the host's addresses (tests pass their own; the default asks the system once per hop).
    ``verify`` is requests' ``verify``: True (the default CA bundle) or a CA bundle path.
    Sends no credentials: a fresh session, no Authorization header, no cookies kept, no proxy
    from the environment (a proxy would do its own lookup).
    """

    def __init__(
        self,
        *,
        allow_http: bool | None = None,
        allowed_hosts: list[str] | None = None,
        allowed_networks: list[str] | None = None,
        max_bytes: int | None = None,
        timeout: float | tuple[float, float] | None = None,
        max_duration: float | None = None,
        resolver: Resolver | None = None,
        verify: bool | str = True,
    ) -> None:
        self.allow_http = conf.DOWNLOAD_ALLOW_HTTP if allow_http is None else allow_http
        hosts = conf.ALLOWED_DOWNLOAD_HOSTS if allowed_hosts is None else allowed_hosts
        self.allowed_hosts = [h.lower().rstrip(".") for h in hosts] if hosts is not None else None
        networks = conf.DOWNLOAD_ALLOWED_NETWORKS if allowed_networks is None else allowed_networks
        self.allowed_networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.max_bytes = max_bytes or conf.MAX_DOWNLOAD_BYTES
        self.timeout = timeout if timeout is not None else conf.DOWNLOAD_TIMEOUT
        self.max_duration = max_duration or conf.DOWNLOAD_MAX_DURATION
        self.resolver = resolver or system_resolver
        self.verify = verify

    # Checks ------------------------------------------------------------------------------------

    def _host_allowed(self, host: str) -> bool:
        if self.allowed_hosts is None:
            return True
        for pattern in self.allowed_hosts:
            if pattern.startswith("."):
                if host.endswith(pattern) or host == pattern[1:]:
                    return True
            elif host == pattern:
                return True
        return False

    def check_url(self, url: str) -> tuple[str, str, int, str]:
        """``(scheme, host, port, address)`` to connect to, or :class:`DownloadRefused`."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DownloadRefused(f"Refused {_safe(url)}: not a valid URL ({exc}).") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise DownloadRefused(f"Refused {_safe(url)}: only https URLs are downloaded.")
        if scheme == "http" and not self.allow_http:
            raise DownloadRefused(
                f"Refused {_safe(url)}: plain http is off "
                "(RUNWAY_FEED['DOWNLOAD_ALLOW_HTTP'] = True allows it)."
            )
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            raise DownloadRefused(f"Refused {_safe(url)}: URLs with a user name are not followed.")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise DownloadRefused(f"Refused {_safe(url)}: the URL has no host.")
        if not self._host_allowed(host):
            raise DownloadRefused(
                f"Refused {_safe(url)}: {host} is not in RUNWAY_FEED['ALLOWED_DOWNLOAD_HOSTS']."
            )
        port = port or (443 if scheme == "https" else 80)
        literal = ip_literal(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = self.resolver(host, port)
            if not addresses:
                raise DownloadError(f"{host} resolved to no address.")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise DownloadRefused(f"Refused {_safe(url)}: bad address {text!r}.") from None
            problem = address_problem(address, self.allowed_networks)
            if problem:
                shown = spelled(address)
                via = "" if literal is not None and host == shown else f" ({host} -> {shown})"
                raise DownloadRefused(
                    f"Refused {_safe(url)}: {problem}{via}; add its network to "
                    "RUNWAY_FEED['DOWNLOAD_ALLOWED_NETWORKS'] only if it is trusted."
                )
        return scheme, host, port, addresses[0].split("%", 1)[0]

    # Fetching ----------------------------------------------------------------------------------

    @contextmanager
    def _open(self, url: str, bound: Deadline) -> Iterator[requests.Response]:
        """GET ``url`` (checked), following redirects by hand; yields the final response."""
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_deadline(url, bound)
            scheme, host, port, address = self.check_url(url)
            session = requests.Session()
            session.trust_env = False  # no proxies, no .netrc credentials from the environment
            # Both prefixes: no request of this session may fall back to requests' own
            # adapters, which would look the name up again.
            pinned = _PinnedAdapter(address)
            session.mount("https://", pinned)
            session.mount("http://", pinned)
            default_port = 443 if scheme == "https" else 80
            netloc = f"[{host}]" if ":" in host else host
            headers = {
                "Host": netloc if port == default_port else f"{netloc}:{port}",
                "User-Agent": user_agent(),
                "Accept": "video/*, image/*;q=0.9",
                "Accept-Encoding": "identity",
            }
            try:
                response = session.get(
                    url,
                    headers=headers,
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                session.close()
                self._check_deadline(url, bound)
                raise DownloadError(f"Could not fetch {_safe(url)}: {type(exc).__name__}") from None
            try:
                # A connection cut at the deadline can leave a half answer that parses.
                self._check_deadline(url, bound)
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("Location", "")
                    if not location:
                        raise DownloadError(f"{_safe(url)} redirected without a Location.")
                    url = urljoin(url, location)
                    continue
                yield response
                return
            finally:
                response.close()
                session.close()
        raise DownloadRefused(f"Refused: more than {MAX_REDIRECTS} redirects.")

    def _check_deadline(self, url: str, bound: Deadline) -> None:
        if bound.passed():
            raise DownloadError(
                f"{_safe(url)} took longer than RUNWAY_FEED['DOWNLOAD_MAX_DURATION'] "
                f"({self.max_duration:g} s)."
            )

    def fetch(self, url: str, target: IO[bytes], *, content_type_prefix: str) -> FetchResult:
        """Stream ``url`` into ``target`` (hashing it); refuse wrong types and oversize bodies.

        On any error ``target`` may hold part of the body; the caller discards it.
        """
        # The watchdog cuts the connection off at the deadline, even inside one trickled read
        # of the headers or the body; whatever the cut leaves is then reported as too slow.
        with deadline(self.max_duration) as bound:
            return self._fetch_within(url, target, content_type_prefix, bound)

    def _fetch_within(
        self, url: str, target: IO[bytes], content_type_prefix: str, bound: Deadline
    ) -> FetchResult:
        with self._open(url, bound) as response:
            status = response.status_code
            where = _safe(response.url or url)
            if status in EXPIRED_STATUSES:
                raise DownloadExpired(
                    f"{where} answered HTTP {status} (the URL has probably expired).",
                    status_code=status,
                )
            if status != 200:
                raise DownloadError(f"{where} answered HTTP {status}.", status_code=status)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not content_type.startswith(content_type_prefix):
                raise DownloadRefused(
                    f"Refused {where}: content type {content_type or 'none'!r} is not "
                    f"{content_type_prefix}*.",
                    status_code=status,
                )
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                # Asked for identity; a compressed body could inflate far past the byte cap
                # within one chunk before the cap is checked.
                raise DownloadRefused(
                    f"Refused {where}: it came {encoding}-encoded, which was not asked for.",
                    status_code=status,
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise DownloadTooLarge(
                    f"Refused {where}: {declared} bytes is more than "
                    f"RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] ({self.max_bytes}).",
                    status_code=status,
                )
            digest = hashlib.sha256()
            size = 0
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise DownloadTooLarge(
                            f"Refused {where}: the body went past "
                            f"RUNWAY_FEED['MAX_DOWNLOAD_BYTES'] ({self.max_bytes} bytes).",
                            status_code=status,
                        )
                    self._check_deadline(where, bound)
                    digest.update(chunk)
                    target.write(chunk)
            except requests.RequestException as exc:
                self._check_deadline(where, bound)
                raise DownloadError(
                    f"Download of {where} broke off after {size} bytes: {type(exc).__name__}"
                ) from None
            # A cut connection ends the body early: without a declared length that looks
            # like the end of the file.
            self._check_deadline(where, bound)
            if declared.isdigit() and size != int(declared):
                raise DownloadError(f"{where} sent {size} of {declared} bytes.")
            target.flush()
            return FetchResult(where, size, digest.hexdigest(), content_type)


def _safe(url: str) -> str:
    """The URL without its query string (signed CDN URLs carry credentials there), shortened."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL"
    # Never echo userinfo: it may hold a password.
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    if parts.query:
        shown += "?..."
    return shown if len(shown) <= 200 else shown[:197] + "..."

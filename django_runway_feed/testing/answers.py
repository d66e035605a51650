"""How the fake CometAPI writes its answers: JSON, nginx-like HTML pages, error envelopes, and
the broken answers of faults (a reset connection, a huge body, a redirect...).

:class:`Answers` is the base of the request handler in
:mod:`~django_runway_feed.testing.handler`, which decides what to answer.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .scripts import (
    PROXY_ERROR_STATUSES,
    Fault,
    default_error_message,
    error_envelope,
    proxy_error_page,
)
from .tasks import TASK_NOT_EXIST_BODY

_RESET_BODY = json.dumps(
    {
        "code": "success",
        "message": "",
        "data": {
            "task_id": "",
            "action": "IMAGE_TO_VIDEO",
            "status": "IN_PROGRESS",
            "progress": "50%",
        },
    }
).encode()
_CHUNK_SIZE = 64 * 1024


def shut_down(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class Answers(BaseHTTPRequestHandler):
    """Writing answers; ``send_response`` also records the status of the request once."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeCometAPI"
    sys_version = ""
    # Headers and body go out in two writes; Nagle would hold the second back on keep-alive.
    disable_nagle_algorithm = True

    head_only = False
    _record_status: Callable[[int], None] | None = None

    def _request_id(self) -> str:
        """The ``request_id`` of error envelopes (the handler asks the server)."""
        raise NotImplementedError

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib prints every request to stderr; tests and benchmarks do thousands.
        return

    def send_response(self, code: int, message: str | None = None) -> None:
        record, self._record_status = self._record_status, None
        if record is not None:
            record(code)
        super().send_response(code, message)

    # Faults -----------------------------------------------------------------------------------

    def _send_fault(self, fault: Fault) -> bool:
        """Answer with ``fault``; False when the request should then be answered normally."""
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        if fault.kind == "status":
            body = fault.body if fault.body is not None else self._default_error_body(fault.status)
            self._send_text(fault.status, body, fault.headers)
        elif fault.kind == "body":
            self._send_text(200, fault.body or "", fault.headers)
        elif fault.kind == "redirect":
            status = fault.status if 300 <= fault.status < 400 else 301
            headers = {"Location": "https://example.invalid/elsewhere", **fault.headers}
            self._send_html(status, f"{status} Moved Permanently", headers)
        elif fault.kind == "reset":
            self._send_reset()
        elif fault.kind == "huge":
            self._send_huge(fault.size)
        else:
            status = 200 if fault.status == 200 else 400
            self._send_json(status, dict(TASK_NOT_EXIST_BODY), fault.headers)
        return True

    def _default_error_body(self, status: int) -> str:
        if status in PROXY_ERROR_STATUSES:
            return proxy_error_page(status)
        message, code = default_error_message(status)
        return error_envelope(message, code=code, request_id=self._request_id())

    def _send_reset(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_RESET_BODY)))
        self.end_headers()
        self.wfile.write(_RESET_BODY[: len(_RESET_BODY) // 2])
        self.close_connection = True
        shut_down(self.connection)

    def _send_huge(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # Looks like the start of a feed answer, so only a size limit can save the client.
        prefix = b'{"code": "success", "message": "", "data": {"padding": "'
        suffix = b'"}}'
        try:
            if size < len(prefix) + len(suffix):
                self._write_chunk((prefix + suffix)[:size])
            else:
                self._write_chunk(prefix)
                remaining = size - len(prefix) - len(suffix)
                filler = b"x" * _CHUNK_SIZE
                while remaining > 0:
                    self._write_chunk(filler[: min(remaining, _CHUNK_SIZE)])
                    remaining -= _CHUNK_SIZE
                self._write_chunk(suffix)
            self.wfile.write(b"0\r\n\r\n")
        except ConnectionError:
            # A client that stops reading is what this fault is for.
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    # Plain answers ----------------------------------------------------------------------------

    def _send_unauthorized(self) -> None:
        # The envelope never echoes the key that was sent.
        self._send_error(401, "Invalid token", code="")

    def _send_error(self, status: int, message: str, *, code: str) -> None:
        body = error_envelope(message, code=code, request_id=self._request_id())
        self._send(status, body.encode(), "application/json")

    def _send_method_not_allowed(self, *, allow: str = "POST") -> None:
        self._send_html(405, "405 Not Allowed", {"Allow": allow})

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_html(self, status: int, title: str, headers: dict[str, str] | None = None) -> None:
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        self._send(status, page.encode(), "text/html", headers)

    def _send_text(self, status: int, text: str, headers: dict[str, str]) -> None:
        is_html = text.lstrip().startswith("<")
        # surrogatepass: a lone surrogate in a scripted body goes out as its (invalid) UTF-8
        # bytes, as a broken server would send it.
        body = text.encode("utf-8", errors="surrogatepass")
        self._send(status, body, "text/html" if is_html else "application/json", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        overridden = {name.lower() for name in extra}
        self.send_response(status)
        if "content-type" not in overridden:
            self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            # The framing is ours: a wrong length would desynchronise the keep-alive connection.
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

"""The emulator's HTTP server and request handler: admin and S3 requests are handed on, API
requests go through faults, rate limiting, the bearer token and JSON framing."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, urlsplit

from aiaas_infra.testing._linode._model import (
    JSON,
    Fault,
    RequestRecord,
    _ApiError,
)
from aiaas_infra.testing._linode._s3 import S3Response

__all__: list[str] = []


class _Backend(Protocol):
    """What the handler needs of :class:`LinodeEmulator`."""

    token: str | None

    def handle_admin(self, method: str, path: str, body: Any) -> tuple[int, Any]: ...

    def handle_s3(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> S3Response: ...

    def dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: Any,
    ) -> tuple[int, Any, dict[str, str]]: ...

    def rate_headers(self) -> tuple[bool, dict[str, str]]: ...

    def _take_fault(self, method: str, path: str) -> list[Fault]: ...

    def _record(self, record: RequestRecord) -> None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: _Backend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server
    error_content_type = "application/json"
    _allowed_methods: ClassVar[tuple[str, ...]] = ("GET", "POST", "PUT", "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        """Linode API v4 has no PATCH: 405 on an emulated path, 501 "not emulated" elsewhere."""
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        """HEAD is an S3 request (HeadBucket, HeadObject); the Linode API has none."""
        split = urlsplit(self.path)
        if split.path.startswith(("/v4/", "/_emulator/")) or split.path == "/v4":
            self._read_body()
            self.send_response(405)
            self.send_header("Allow", "GET, POST, PUT, DELETE")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._handle("HEAD")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: Mapping[str, str],
        ctype: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _send_s3(self, method: str, response: S3Response) -> None:
        self.send_response(response.status)
        headers = {k.lower(): (k, v) for k, v in response.headers.items()}
        if "content-length" not in headers:
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in headers.values():
            self.send_header(name, value)
        self.end_headers()
        if response.body and method != "HEAD":
            self.wfile.write(response.body)

    def _handle(self, method: str) -> None:
        em = self.server.emulator
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if split.path.startswith("/_emulator/"):
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            status, out = em.handle_admin(method, split.path[len("/_emulator") :], body)
            self._send(status, json.dumps(out).encode(), {})
            return
        if not split.path.startswith("/v4/") and split.path != "/v4":
            self._send_s3(method, em.handle_s3(method, split.path, split.query, headers, raw))
            return
        path = split.path[len("/v4") :] or "/"
        faults = em._take_fault(method, path)
        for fault in faults:
            if fault.kind == "latency":
                time.sleep(fault.delay)
        over, rate = em.rate_headers()
        status_fault = next((f for f in faults if f.kind == "status"), None)
        if over:
            em._record(RequestRecord(method, path, 429, "rate-limit"))
            self._error(429, "Too many requests", None, rate)
            return
        if status_fault is not None:
            extra = dict(rate)
            if status_fault.retry_after is not None:
                extra["Retry-After"] = str(max(0, math.ceil(status_fault.retry_after)))
            em._record(RequestRecord(method, path, status_fault.status, "status"))
            reason = status_fault.reason or {
                429: "Too many requests",
                500: "Internal server error",
                502: "Bad gateway",
                503: "Service unavailable",
                504: "Gateway timeout",
            }.get(status_fault.status, "Injected fault")
            self._error(status_fault.status, reason, None, extra)
            return
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not token or (em.token is not None and token != em.token):
            em._record(RequestRecord(method, path, 401))
            self._error(401, "Invalid Token", None, rate)
            return
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            em._record(RequestRecord(method, path, 400))
            self._error(400, "Request body is not valid JSON", None, rate)
            return
        try:
            status, out, extra = em.dispatch(method, path, query, headers, body)
        except _ApiError as exc:
            em._record(RequestRecord(method, path, exc.status))
            self._error(exc.status, exc.reason, exc.field, {**rate, **exc.headers})
            return
        drop = next((f for f in faults if f.kind == "drop"), None)
        if drop is not None:
            em._record(RequestRecord(method, path, 0, "drop"))
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        timeout = next((f for f in faults if f.kind == "timeout"), None)
        if timeout is not None:
            em._record(RequestRecord(method, path, 0, "timeout"))
            time.sleep(timeout.delay)
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client gave up long ago
                self._send(status, json.dumps(out).encode(), {**rate, **extra})
            return
        em._record(RequestRecord(method, path, status))
        self._send(status, json.dumps(out).encode(), {**rate, **extra})

    def _error(
        self, status: int, reason: str, field: str | None, headers: Mapping[str, str]
    ) -> None:
        err: JSON = {"reason": reason}
        if field:
            err["field"] = field
        self._send(status, json.dumps({"errors": [err]}).encode(), headers)

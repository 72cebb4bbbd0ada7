"""The fake Kubernetes API server's transport: the threaded HTTP(S) server, its TLS material
and request-body framing (``Content-Length`` or chunked, with limits)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from aiaas_infra.testing._kube._model import (
    _MAX_CHUNK_LINE,
    MAX_REQUEST_BODY,
    _ApiError,
    _now,
)

__all__: list[str] = []


class _Responder(Protocol):
    """What the request handler needs of :class:`FakeKubeApiServer`."""

    def _respond(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, str]: ...


# -- TLS ------------------------------------------------------------------------------------


def _tls_material(host: str) -> tuple[bytes, ssl.SSLContext]:
    """A fresh self-signed CA (PEM) and a server context whose certificate it signed, valid
    for ``127.0.0.1``, ``::1``, ``localhost`` and ``host``; the keys never touch the disk
    beyond a private temporary file read back at once."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiaas-fake-kube-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if host and extra not in names:
        names.append(extra)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # no HTTP/2: kubectl falls back to HTTP/1.1
    with tempfile.TemporaryDirectory(prefix="aiaas-fake-kube-") as tmp:
        chain = Path(tmp) / "server.pem"
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                + cert.public_bytes(pem)
            )
        context.load_cert_chain(chain)
    return ca.public_bytes(pem), context


class _HttpServer(ThreadingHTTPServer):
    """The threaded HTTP server, over TLS when given a context: the handshake runs in the
    connection's own thread (a client that never completes it holds up nobody), and a
    connection a client breaks or abandons is not an error."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is None:
            return sock, addr
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys  # noqa: PLC0415

        if isinstance(sys.exc_info()[1], OSError):  # ssl.SSLError, resets, timeouts
            return
        super().handle_error(request, client_address)  # pragma: no cover - a fake's own bug


class _FramingError(Exception):
    """A request whose body cannot be read: answered with ``status`` and the connection
    closed (what follows on it cannot be trusted to start a new request)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.error = _ApiError(status, reason, message)


class _TruncatedError(Exception):
    """The client closed the connection before the whole body arrived."""


def _read_exact(rfile: Any, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) < size:
        raise _TruncatedError
    return bytes(data)


def _read_chunked(rfile: Any, limit: int) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (RFC 9112 section 7.1): chunks, then trailers up
    to the blank line, which are read and dropped."""
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise _TruncatedError
        if len(line) > _MAX_CHUNK_LINE or not line.endswith(b"\n"):
            raise _FramingError(400, "BadRequest", "a chunk-size line is too long")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise _FramingError(
                400, "BadRequest", f"invalid chunk size {size_text[:32]!r} in a chunked body"
            )
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _FramingError(
                413,
                "RequestEntityTooLarge",
                f"the request body is larger than the limit of {limit} bytes",
            )
        body += _read_exact(rfile, size)
        if rfile.readline(3).rstrip(b"\r\n") != b"":
            raise _FramingError(400, "BadRequest", "a chunk is longer than its chunk size says")
    for _ in range(100):  # trailer fields, then the empty line
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise _TruncatedError
        if line in (b"\r\n", b"\n"):
            return bytes(body)
    raise _FramingError(400, "BadRequest", "too many trailer fields after a chunked body")


def _read_body(headers: Any, rfile: Any, limit: int = MAX_REQUEST_BODY) -> bytes:
    """The request body, framed by ``Transfer-Encoding: chunked`` or ``Content-Length``."""
    codings = [
        c.strip().lower()
        for value in headers.get_all("Transfer-Encoding") or []
        for c in value.split(",")
        if c.strip()
    ]
    lengths = headers.get_all("Content-Length") or []
    if codings:
        if lengths:  # RFC 9112 section 6.3: a request smuggling attempt, refused
            raise _FramingError(
                400,
                "BadRequest",
                "a request may not carry both Transfer-Encoding and Content-Length",
            )
        if codings != ["chunked"]:
            raise _FramingError(
                501,
                "NotImplemented",
                f"transfer coding {', '.join(codings)!r} is not supported; send the body "
                "with Content-Length or Transfer-Encoding: chunked",
            )
        return _read_chunked(rfile, limit)
    if not lengths:
        return b""
    values = {v.strip() for v in lengths}
    text = values.pop()
    if values or not text.isdigit() or not text.isascii():
        raise _FramingError(400, "BadRequest", "invalid Content-Length header")
    size = int(text)
    if size > limit:
        raise _FramingError(
            413,
            "RequestEntityTooLarge",
            f"the request body is larger than the limit of {limit} bytes",
        )
    return _read_exact(rfile, size) if size else b""


def _make_handler(server: _Responder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # an idle keep-alive connection (or a stalled handshake) is dropped

        def setup(self) -> None:
            super().setup()
            # one response is headers + body: do not let Nagle hold the body for an ACK
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests read server.calls instead

        def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            try:
                raw = _read_body(self.headers, self.rfile)
            except _TruncatedError:
                self.close_connection = True
                return
            except _FramingError as exc:
                self.close_connection = True
                self._send(exc.error.code, json.dumps(exc.error.body()).encode())
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, content_type = server._respond(self.command, self.path, headers, raw)
            self._send(status, body, content_type)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    return Handler

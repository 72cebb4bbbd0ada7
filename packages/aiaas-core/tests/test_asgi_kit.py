"""The ASGI service kit: read_body, the 405 and 504 errors, API-key entries and serve()."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from aiaas_core import (
    AiaasError,
    ASGIApp,
    GatewayTimeoutError,
    HashKey,
    KeyedHasher,
    Message,
    MethodNotAllowedError,
    PayloadTooLargeError,
    Receive,
    Scope,
    Send,
    ServiceUnavailableError,
    error_response,
    generate_api_key,
    parse_api_key_entries,
    parse_api_key_entry,
    read_body,
    run_lifespan,
    send_json,
    serve,
)

# --------------------------------------------------------------------------------------------
# read_body


def _receiver(*messages: Message) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


def _scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}


async def test_read_body_joins_chunks_up_to_the_limit() -> None:
    receive = _receiver(
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"de"},
    )
    assert await read_body(_scope(), receive, limit=5) == b"abcde"
    empty = _receiver({"type": "http.request"})
    assert await read_body(_scope(), empty, limit=0) == b""


async def test_read_body_refuses_a_declared_length_over_the_limit_before_reading() -> None:
    read: list[int] = []

    async def receive() -> Message:
        read.append(1)
        return {"type": "http.request", "body": b"x"}

    with pytest.raises(PayloadTooLargeError, match="larger than 10 bytes") as info:
        await read_body(_scope((b"Content-Length", b"11")), receive, limit=10)
    assert info.value.status == 413
    assert info.value.code == "REQUEST_TOO_LARGE"
    assert read == []


@pytest.mark.parametrize(
    "declared", [b"abc", b"-1", b"", b"1e3", b"9" * 100, b"\xff\xfe", b" 3 ", b"0x10"]
)
async def test_read_body_counts_bytes_whatever_content_length_claims(declared: bytes) -> None:
    small = _receiver({"type": "http.request", "body": b"tiny"})
    assert await read_body(_scope((b"content-length", declared)), small, limit=8) == b"tiny"
    large = _receiver(
        {"type": "http.request", "body": b"x" * 6, "more_body": True},
        {"type": "http.request", "body": b"x" * 6, "more_body": True},
        {"type": "http.request", "body": b"never read"},
    )
    with pytest.raises(PayloadTooLargeError):
        await read_body(_scope((b"content-length", declared)), large, limit=8)


async def test_read_body_returns_none_when_the_client_leaves() -> None:
    receive = _receiver({"type": "http.request", "body": b"par", "more_body": True})
    assert await read_body(_scope(), receive, limit=100) is None


@pytest.mark.parametrize("limit", [-1, 1.5, "10", None, True])
async def test_read_body_checks_its_limit(limit: Any) -> None:
    with pytest.raises(ValueError, match="whole number of bytes"):
        await read_body(_scope(), _receiver(), limit=limit)


# --------------------------------------------------------------------------------------------
# 405 and 504


def test_method_not_allowed_carries_allow() -> None:
    err = MethodNotAllowedError("/x answers GET and HEAD", allow=("GET", "HEAD", "GET"))
    assert (err.status, err.code) == (405, "METHOD_NOT_ALLOWED")
    assert err.headers == {"Allow": "GET, HEAD"}
    assert err.allow == ("GET", "HEAD")
    assert isinstance(err, AiaasError)
    status, headers, body = error_response(err)
    assert status == 405
    assert (b"allow", b"GET, HEAD") in headers
    assert json.loads(body)["code"] == "METHOD_NOT_ALLOWED"
    legacy = MethodNotAllowedError("use POST", headers={"Allow": "POST"})
    assert legacy.allow == ("POST",)
    assert MethodNotAllowedError(allow="PATCH").headers["Allow"] == "PATCH"


@pytest.mark.parametrize(
    "allow", [(), ("get",), ("GET\r\nX-Evil: 1",), ("GET, POST",), (1,), ("",), ("G" * 40,)]
)
def test_method_not_allowed_refuses_bad_methods(allow: Any) -> None:
    with pytest.raises(ValueError, match="allow must name"):
        MethodNotAllowedError(allow=allow)


def test_method_not_allowed_needs_allow() -> None:
    with pytest.raises(ValueError, match="pass allow="):
        MethodNotAllowedError("no")


def test_gateway_timeout_is_in_the_tree() -> None:
    err = GatewayTimeoutError("the model did not answer within 30 s")
    assert (err.status, err.code, err.title) == (504, "GATEWAY_TIMEOUT", "Gateway timeout")
    status, _, body = error_response(err)
    assert status == 504
    assert json.loads(body)["error"] == "the model did not answer within 30 s"


# --------------------------------------------------------------------------------------------
# API-key entries


def _entry(subject: str = "ada", roles: str = "admin") -> tuple[str, str]:
    hasher = KeyedHasher([HashKey.from_text("v1", "raw:" + "k" * 40)], "v1")
    key = generate_api_key()
    return key.key_id, f"{subject}:{key.key_id}:{roles}:{hasher.digest(key.secret)}"


def test_an_entry_becomes_a_record() -> None:
    key_id, entry = _entry(roles="admin+reader")
    when = datetime(2026, 1, 2, tzinfo=UTC)
    record = parse_api_key_entry(f"  {entry}\n", created_at=when)
    assert (record.key_id, record.subject, record.roles) == (key_id, "ada", ("admin", "reader"))
    assert record.created_at == when
    assert record.digest.startswith("hmac-sha256$v1$")
    assert parse_api_key_entry(entry).created_at.tzinfo is not None


def test_entries_split_on_commas_and_whitespace() -> None:
    ids_entries = [_entry(subject=f"s{i}") for i in range(3)]
    text = f" {ids_entries[0][1]},{ids_entries[1][1]}\n\t{ids_entries[2][1]} ,"
    records = parse_api_key_entries(text)
    assert [r.key_id for r in records] == [key_id for key_id, _ in ids_entries]
    listed = parse_api_key_entries([e for _, e in ids_entries])
    assert [r.key_id for r in listed] == [r.key_id for r in records]
    assert parse_api_key_entries("") == []
    assert parse_api_key_entries(" ,\n ") == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: e.replace("hmac-sha256$", "sha1$"),  # not a keyed digest
        lambda e: e.replace(":admin:", "::"),  # no role
        lambda e: e.replace(":admin:", ":admin++x:"),  # an empty role
        lambda e: e.replace(":admin:", ":ad min:"),  # whitespace inside
        lambda e: e.split(":", 1)[1],  # no subject
        lambda e: "ada:short:admin:" + e.rsplit(":", 1)[1],  # key id of the wrong length
        lambda e: e + ":extra",  # digest then more fields is still one digest: wrong shape
        lambda e: e.replace("$v1$", "$v1$\x00"),
        lambda e: e + "x" * 2000,
        lambda _e: "",
        lambda _e: "💥:💥:💥:💥",
    ],
)
def test_bad_entries_are_refused_without_echoing_them(mangle: Callable[[str], str]) -> None:
    _, entry = _entry()
    bad = mangle(entry)
    with pytest.raises(ValueError, match="entry 2: an API key entry is subject:key_id") as info:
        parse_api_key_entries([_entry(subject="ok")[1], bad])
    assert entry.rsplit("$", 1)[1] not in str(info.value)


def test_a_key_listed_twice_is_refused() -> None:
    _, entry = _entry()
    with pytest.raises(ValueError, match=r"entry 2: key id \w+ is listed twice"):
        parse_api_key_entries(f"{entry},{entry}")


def test_an_entry_must_be_text() -> None:
    with pytest.raises(ValueError, match="not bytes"):
        parse_api_key_entry(b"ada:x:y:z")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# serve(): a real uvicorn in this process (signals need the main thread)


def _kit_app(events: list[str]) -> ASGIApp:
    async def startup() -> None:
        events.append("startup")

    async def shutdown() -> None:
        events.append("shutdown")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send, startup=startup, shutdown=shutdown)
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)
        body = await read_body(scope, receive, limit=16)
        await send_json(send, 200, {"path": scope["path"], "size": len(body or b"")})

    return app


def _signal_self_after(action: Callable[[int], None]) -> Callable[[int], None]:
    """An on_ready that runs ``action(port)`` in a thread, then sends this process SIGTERM."""

    def on_ready(port: int) -> None:
        def run() -> None:
            try:
                action(port)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=run, daemon=True).start()

    return on_ready


@pytest.fixture
def keep_handlers() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.usefixtures("keep_handlers")
def test_serve_answers_then_stops_gracefully_on_sigterm() -> None:
    events: list[str] = []
    answers: dict[str, httpx.Response] = {}
    ports: list[int] = []
    slow_done = threading.Event()

    def slow_request(base: str) -> None:
        try:
            answers["slow"] = httpx.get(f"{base}/slow", timeout=10)
        finally:
            slow_done.set()

    def exercise(port: int) -> None:
        ports.append(port)
        base = f"http://127.0.0.1:{port}"
        answers["get"] = httpx.get(f"{base}/hello", timeout=10)
        answers["big"] = httpx.post(f"{base}/hello", content=b"x" * 17, timeout=10)
        threading.Thread(target=slow_request, args=(base,), daemon=True).start()
        time.sleep(0.15)  # the slow request is in flight when SIGTERM arrives

    started = time.monotonic()
    stopped_by = serve(
        _kit_app(events),
        port=0,
        graceful_timeout=timedelta(seconds=5),
        on_ready=_signal_self_after(exercise),
    )
    assert stopped_by is signal.SIGTERM
    assert time.monotonic() - started < 10
    assert ports[0] > 0  # the bound port, not the 0 asked for
    assert answers["get"].status_code == 200
    assert answers["get"].json() == {"path": "/hello", "size": 0}
    assert "server" not in answers["get"].headers  # no uvicorn Server header
    assert answers["big"].status_code == 500  # the bare app lets the 413 error escape
    assert slow_done.wait(10)
    assert answers["slow"].status_code == 200  # in flight at SIGTERM: drained, not cut
    assert events == ["startup", "shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports[0]}/hello", timeout=2)


@pytest.mark.usefixtures("keep_handlers")
def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}") as info:
            serve(_kit_app([]), port=port)
    assert info.value.code == "SERVER_START_FAILED"


@pytest.mark.usefixtures("keep_handlers")
def test_serve_refuses_to_run_an_app_whose_startup_fails() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def startup() -> None:
            raise RuntimeError("no database")

        await run_lifespan(receive, send, startup=startup)

    with pytest.raises(ServiceUnavailableError, match="startup failed") as info:
        serve(app, port=0)
    assert info.value.code == "SERVER_START_FAILED"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"port": 70000}, "port must be between"),
        ({"port": -1}, "port must be between"),
        ({"graceful_timeout": 0}, "graceful_timeout must be positive"),
        ({"graceful_timeout": timedelta(seconds=-1)}, "graceful_timeout must be positive"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout must be positive"),
    ],
)
def test_serve_checks_its_arguments(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        serve(_kit_app([]), **kwargs)


def test_serve_without_uvicorn_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "import aiaas_core\n"
        "try:\n"
        "    aiaas_core.serve(None)\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, '|', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.startswith("uvicorn | ")
    assert "aiaas-core[serve]" in out.stdout

"""send_json, run_lifespan and signals_end_normally: the pieces pure-ASGI services share."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest

from aiaas_core import (
    ErrorRenderer,
    ErrorRenderers,
    run_lifespan,
    send_json,
    signals_end_normally,
)


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def test_send_json_sets_length_type_and_no_store() -> None:
    sink = Sink()
    await send_json(sink, 201, {"ok": True, "name": "zoë"}, headers=[(b"x-extra", b"1")])
    start, body = sink.messages
    assert start["status"] == 201
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-extra"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"ok": True, "name": "zoë"}
    head = Sink()
    await send_json(head, 200, [1, 2], head=True, content_type=b"application/problem+json")
    assert head.messages[1]["body"] == b""
    assert dict(head.messages[0]["headers"])[b"content-length"] == b"5"
    assert dict(head.messages[0]["headers"])[b"content-type"] == b"application/problem+json"


def feed(*types: str) -> Any:
    queue = [{"type": t} for t in types]

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


async def test_lifespan_runs_hooks_in_order() -> None:
    calls: list[str] = []

    async def startup() -> None:
        calls.append("startup")

    async def shutdown() -> None:
        calls.append("shutdown")

    sink = Sink()
    await run_lifespan(
        feed("lifespan.startup", "lifespan.shutdown"), sink, startup=startup, shutdown=shutdown
    )
    assert calls == ["startup", "shutdown"]
    assert [m["type"] for m in sink.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    bare = Sink()
    await run_lifespan(feed("lifespan.startup", "lifespan.shutdown"), bare)
    assert len(bare.messages) == 2


async def test_a_failing_startup_is_reported_and_a_failing_shutdown_still_completes() -> None:
    async def broken() -> None:
        raise RuntimeError("model missing")

    sink = Sink()
    await run_lifespan(feed("lifespan.startup"), sink, startup=broken)
    (failed,) = sink.messages
    assert failed == {"type": "lifespan.startup.failed", "message": "RuntimeError: model missing"}
    down = Sink()
    with pytest.raises(RuntimeError, match="model missing"):
        await run_lifespan(feed("lifespan.startup", "lifespan.shutdown"), down, shutdown=broken)
    assert [m["type"] for m in down.messages][-1] == "lifespan.shutdown.complete"


def test_signals_are_recorded_and_handlers_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with signals_end_normally() as received:
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run without the context
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt
    assert received == [signal.SIGTERM, signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_outside_the_main_thread_are_left_alone() -> None:
    seen: list[list[int]] = []

    def worker() -> None:
        with signals_end_normally() as received:
            seen.append(received)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [[]]
    assert signal.getsignal(signal.SIGTERM) is before


def test_error_renderers_pick_the_longest_prefix_and_check_their_input() -> None:
    def renderer(name: str) -> ErrorRenderer:
        return lambda exc: (exc.status, [], name.encode())

    api, envs = renderer("api"), renderer("envs")
    table = ErrorRenderers({"/v1/": api, "/v1/environments/": envs})
    assert table.for_path("/v1/environments/dev") is envs
    assert table.for_path("/v1/models") is api
    assert table.for_path("/health") is None
    assert table.for_path("/v1") is None  # a prefix, not a word: "/v1" is outside "/v1/"
    assert ErrorRenderers(table).for_path("/v1/x") is api  # an existing table is taken as it is
    assert table
    assert not ErrorRenderers()
    assert not ErrorRenderers({})
    assert "/v1/environments/" in repr(table)
    with pytest.raises(TypeError, match="map path prefixes"):
        ErrorRenderers([("/v1/", api)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="starting with '/'"):
        ErrorRenderers({"v1/": api})
    with pytest.raises(TypeError, match="not callable"):
        ErrorRenderers({"/v1/": "openai"})  # type: ignore[dict-item]

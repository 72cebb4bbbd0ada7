"""With a real Starlette app under uvicorn: router templates, exception handlers, concurrency."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aiaas_core import AiaasError, NotFoundError, get_request_id, get_trace_id
from aiaas_telemetry import error_handler, parse_json


async def item(request: Request) -> JSONResponse:
    await asyncio.sleep(0.01)  # let concurrent requests interleave
    logging.getLogger("starlette.demo").info("item %s", request.path_params["id"])
    return JSONResponse(
        {
            "id": request.path_params["id"],
            "request_id": get_request_id(),
            "trace_id": get_trace_id(),
        }
    )


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("starlette kaboom")


async def missing(request: Request) -> JSONResponse:
    raise NotFoundError("No such thing")


async def echo(request: Request) -> JSONResponse:
    body = parse_json(await request.body(), request.headers.get("content-type"))
    return JSONResponse({"echo": body})


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{id:int}", item),
            Route("/boom", boom),
            Route("/missing", missing),
            Route("/echo", echo, methods=["POST"]),
            Mount("/api", routes=[Route("/v2/items/{id}", item)]),
        ],
        exception_handlers={Exception: error_handler, AiaasError: error_handler},
    )


@pytest.mark.parametrize("resolver", ["router", "scope"])
def test_starlette_app(
    *,
    resolver: str,
    make_telemetry: Any,
    memory_exporter: Any,
    server: Any,
    log_stream: Any,
    error_validator: Any,
) -> None:
    tel = make_telemetry(span_exporter=memory_exporter)
    app = starlette_app()
    wrapped = tel.middleware(app, routes=app if resolver == "router" else None)
    with server(wrapped) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/items/5").json()["id"] == 5
        assert client.get("/api/v2/items/x").status_code == 200
        boom = client.get("/boom")
        missing = client.get("/missing")
        bad_json = client.post("/echo", content=b"{", headers={"content-type": "application/json"})
        wrong_method = client.get("/echo")
    for res, status, code in (
        (boom, 500, "INTERNAL_ERROR"),
        (missing, 404, "NOT_FOUND"),
        (bad_json, 400, "REQUEST_JSON_INVALID"),
    ):
        assert res.status_code == status
        error_validator(res.json())
        assert res.json()["code"] == code
        assert res.json()["request_id"] == res.headers["x-request-id"]
    assert "kaboom" not in boom.text
    assert wrong_method.status_code == 405
    tel.tracer_provider.force_flush()
    names = sorted(s.name for s in memory_exporter.get_finished_spans())
    prefix = "/api" if resolver == "router" else ""
    assert names == sorted(
        [
            "GET /items/{id:int}",
            f"GET {prefix}/v2/items/{{id}}",
            "GET /boom",
            "GET /missing",
            "POST /echo",
            "GET /echo",
        ]
    )
    errors = log_stream.by_logger("aiaas.http")
    assert len(errors) == 1  # the traceback of /boom, logged once, server-side
    assert errors[0]["message"] == "unhandled exception in GET /boom"
    assert "starlette kaboom" in errors[0]["exception.stacktrace"]
    count = tel.registry.get_sample_value(
        "http_server_errors_total", {"method": "GET", "route": "/boom", "code": "INTERNAL_ERROR"}
    )
    assert count == 1


async def test_concurrent_requests_keep_their_own_ids(
    make_telemetry: Any, memory_exporter: Any, server: Any, log_stream: Any
) -> None:
    tel = make_telemetry(span_exporter=memory_exporter)
    app = starlette_app()
    wrapped = tel.middleware(app, routes=app)
    traces = [os.urandom(16).hex() for _ in range(24)]
    with server(wrapped) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.get(
                        f"/items/{i}",
                        headers={"traceparent": f"00-{trace}-{'1' * 16}-01"},
                    )
                    for i, trace in enumerate(traces)
                )
            )
    for i, (trace, res) in enumerate(zip(traces, responses, strict=True)):
        body = res.json()
        assert body["id"] == i
        assert body["trace_id"] == trace
        assert body["request_id"] == res.headers["x-request-id"]
    by_request = {r["request_id"]: r for r in log_stream.by_logger("starlette.demo")}
    for res, trace in zip(responses, traces, strict=True):
        line = by_request[res.headers["x-request-id"]]
        assert line["trace_id"] == trace
        assert line["message"] == f"item {res.json()['id']}"

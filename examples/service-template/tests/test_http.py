"""The service over real HTTP: uvicorn on a free port, httpx against it."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiaas_core import CheckResult


def get(base_url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{base_url}{path}", timeout=10, **kwargs)


def test_greeting(base_url: str) -> None:
    res = get(base_url, "/v1/greeting", params={"name": "  ada   lovelace"})
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"greeting": "Hello, Ada Lovelace!"}
    assert len(res.headers["x-request-id"]) == 32
    accented = get(base_url, "/v1/greeting?name=%C3%A9lodie-marie")
    assert accented.json() == {"greeting": "Hello, Élodie-Marie!"}
    head = httpx.head(f"{base_url}/v1/greeting?name=ada", timeout=10)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("name=R2D2", 422, "VALIDATION_FAILED"),
        ("name=" + "a" * 65, 422, "VALIDATION_FAILED"),
        ("name=", 422, "VALIDATION_FAILED"),
        ("", 422, "VALIDATION_FAILED"),
        ("name=ada&name=bob", 422, "VALIDATION_FAILED"),
        ("name=%3Cscript%3E", 422, "VALIDATION_FAILED"),
        ("name=%FF", 400, "REQUEST_INVALID"),  # not UTF-8
        ("&".join(["x=1"] * 40), 400, "REQUEST_INVALID"),
    ],
)
def test_bad_greeting_requests_get_the_error_body(
    base_url: str, error_validator: Callable[[Any], None], query: str, status: int, code: str
) -> None:
    res = get(base_url, f"/v1/greeting?{query}", headers={"X-Request-ID": "bad-request-0001"})
    assert res.status_code == status
    body = res.json()
    error_validator(body)
    assert body["code"] == code
    assert body["request_id"] == "bad-request-0001"
    assert res.headers["x-request-id"] == "bad-request-0001"
    assert "<script>" not in res.text


def test_unknown_routes_and_methods(base_url: str, error_validator: Callable[[Any], None]) -> None:
    missing = get(base_url, "/v1/nowhere")
    assert missing.status_code == 404
    error_validator(missing.json())
    assert missing.json()["code"] == "NOT_FOUND"
    post = httpx.post(f"{base_url}/v1/greeting?name=ada", timeout=10)
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    error_validator(post.json())
    assert post.json()["code"] == "METHOD_NOT_ALLOWED"


def test_probes(base_url: str) -> None:
    health = get(base_url, "/health")
    ready = get(base_url, "/ready")
    assert health.status_code == 200
    assert health.json()["kind"] == "liveness"
    assert health.json()["checks"]["event-loop"]["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json()["kind"] == "readiness"
    assert ready.json()["status"] == "ok"
    telemetry_check = ready.json()["checks"]["telemetry"]
    assert telemetry_check["critical"] is False
    assert telemetry_check["details"]["queued_spans"] >= 0
    # The installed aiaas packages fit the ranges this service and they declare.
    skew = ready.json()["checks"]["version-skew"]
    assert skew["status"] == "ok"
    assert skew["critical"] is False
    assert {"aiaas-core", "aiaas-telemetry"} <= set(skew["details"]["distributions"])


def test_a_failing_critical_dependency_makes_ready_503(
    service: ModuleType, telemetry: Any, serve: Callable[[Any], Any]
) -> None:
    health = service.build_health(telemetry)

    @health.register(name="database")  # what a developer adds for each dependency
    async def database() -> CheckResult:
        return CheckResult.failing("connection refused")

    with serve(service.create_app(telemetry, health)) as url:
        ready = get(url, "/ready")
        alive = get(url, "/health")
    assert ready.status_code == 503
    assert ready.json()["status"] == "failing"
    assert ready.json()["checks"]["database"]["reason"] == "connection refused"
    assert alive.status_code == 200  # liveness never looks at dependencies


def test_metrics_count_requests_by_route_template(base_url: str) -> None:
    for name in ("ada", "bob", "R2D2"):
        get(base_url, "/v1/greeting", params={"name": name})
    get(base_url, "/health")
    get(base_url, "/no/such/route")
    res = get(base_url, "/metrics")
    assert res.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(res.text)}
    counts: dict[tuple[str, str], float] = {}
    for s in families["http_server_request_duration_seconds"].samples:
        if s.name.endswith("_count"):
            key = (s.labels["route"], s.labels["status_class"])
            counts[key] = counts.get(key, 0) + s.value  # summed over the methods
    assert counts[("/v1/greeting", "2xx")] >= 2
    assert counts[("/v1/greeting", "4xx")] >= 1
    assert counts[("<unmatched>", "4xx")] >= 1
    assert not any(route in ("/health", "/ready") for route, _ in counts)  # probes excluded
    assert not any("no/such" in route for route, _ in counts)  # never a raw path as a label
    assert "aiaas_service_info" in families
    assert "process_cpu_seconds" in families


def test_requests_are_traced_and_logged_as_json(
    base_url: str, spans: Any, log_stream: Any, service: ModuleType
) -> None:
    res = get(base_url, "/v1/greeting?name=grace", headers={"X-Request-ID": "trace-test-0001"})
    assert res.status_code == 200
    access: list[dict[str, Any]] = []
    for _ in range(200):  # the access line is written once the response has been sent
        access = [
            r
            for r in log_stream.records()
            if r["logger"] == "aiaas.access" and r.get("request_id") == "trace-test-0001"
        ]
        if access:
            break
        time.sleep(0.01)
    assert len(access) == 1
    assert access[0]["service"] == service.SERVICE_NAME
    trace_id = access[0]["trace_id"]
    assert len(trace_id) == 32
    found = []
    for _ in range(200):  # the batch processor exports every 10 ms
        found = [
            s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id
        ]
        if found:
            break
        time.sleep(0.02)
    (span,) = found
    assert span.name == "GET /v1/greeting"
    assert span.attributes["aiaas.request_id"] == "trace-test-0001"


# --------------------------------------------------------------------------- in-process


async def test_span_queue_backlog_degrades_readiness(service: ModuleType) -> None:
    from aiaas_telemetry import load_profile, setup

    tel = setup(
        load_profile({"service_name": service.SERVICE_NAME}, environ={}),
        tracing=False,
        configure_logs=False,
    )
    try:
        health = service.build_health(tel)
        assert (await health.run("readiness")).to_dict()["status"] == "ok"
        tel.metrics.span_queue_size.set(2000)  # the collector is not keeping up
        report = await health.run("readiness", use_cache=False)
    finally:
        tel.shutdown(timeout_s=1)
    assert report.http_status == 200  # degraded still serves
    assert report.to_dict()["status"] == "degraded"
    assert "span queue" in report.to_dict()["checks"]["telemetry"]["reason"]


async def test_app_answers_lifespan_and_refuses_other_scopes(
    service: ModuleType, telemetry: Any
) -> None:
    from aiaas_core import NotFoundError

    app = service.ServiceApp(service.build_health(telemetry))
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(NotFoundError):
        await app({"type": "websocket", "path": "/v1/greeting"}, receive, send)

"""End to end: a real uvicorn server, an httpx client and a real OTLP/HTTP receiver."""

from __future__ import annotations

import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aiaas_telemetry import load_profile

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_spans_logs_and_metrics_agree(
    *,
    make_telemetry: Any,
    otlp_receiver: Any,
    server: Any,
    demo: Any,
    log_stream: Any,
    error_validator: Any,
) -> None:
    profile = load_profile(
        {
            "service_name": "e2e-service",
            "otel_exporter": {
                "endpoint": otlp_receiver.endpoint,
                "headers": {"authorization": "Bearer collector-secret"},
                "timeout_ms": 1000,
            },
            "metrics": {
                "histograms": [
                    {
                        "name": "http_server_request_duration_seconds",
                        "buckets": [0.001, 0.01, 0.1, 1],
                    }
                ],
                "resource_attributes": {"deployment.environment": "test"},
            },
        },
        environ={},
    )
    tel = make_telemetry(profile, schedule_delay_ms=50, service_version="1.2.3")
    app = tel.middleware(demo, routes=["/v1/items/{id}", "/boom"], metrics_path="/metrics")
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        res = client.get(
            "/v1/items/42",
            headers={
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "X-Request-ID": "e2e-request-0001",
                "Authorization": "Bearer client-secret",
            },
        )
        assert res.status_code == 200
        assert res.headers["x-request-id"] == "e2e-request-0001"
        assert res.headers["x-app"] == "demo"
        boom = client.get("/boom")
        assert boom.status_code == 500
        error_validator(boom.json())
        assert boom.headers["content-type"] == "application/json"
        assert "kaboom" not in boom.text
        unknown = client.get("/nowhere/123")
        assert unknown.status_code == 404

        spans = otlp_receiver.wait_for(lambda s: len(s) >= 3)
        metrics_text = client.get("/metrics").text

    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"GET /v1/items/{id}", "GET /boom", "GET <unmatched>"}
    item = by_name["GET /v1/items/{id}"]
    assert item["trace_id"] == TRACE_ID
    assert item["parent_span_id"] == PARENT_ID
    assert item["kind"] == 2  # SPAN_KIND_SERVER
    assert item["attributes"]["http.route"] == "/v1/items/{id}"
    assert item["attributes"]["http.response.status_code"] == 200
    assert item["attributes"]["aiaas.request_id"] == "e2e-request-0001"
    assert item["resource"]["service.name"] == "e2e-service"
    assert item["resource"]["service.version"] == "1.2.3"
    assert item["resource"]["deployment.environment"] == "test"
    assert by_name["GET /boom"]["status_code"] == 2  # STATUS_CODE_ERROR
    assert by_name["GET /boom"]["events"] == ["exception"]
    assert all(len(s["trace_id"]) == 32 for s in spans)
    assert otlp_receiver.headers[0]["authorization"] == "Bearer collector-secret"

    # The same ids appear in the log lines of that request.
    lines = log_stream.records()
    app_line = next(r for r in lines if r["logger"] == "demo.app")
    assert app_line["trace_id"] == TRACE_ID
    assert app_line["span_id"] == item["span_id"]
    assert app_line["request_id"] == "e2e-request-0001"
    access = [r for r in lines if r["logger"] == "aiaas.access"]
    assert {a["http.route"] for a in access} == {"/v1/items/{id}", "/boom", "<unmatched>"}
    item_access = next(a for a in access if a["http.route"] == "/v1/items/{id}")
    assert item_access["trace_id"] == TRACE_ID
    assert item_access["span_id"] == item["span_id"]
    for line in lines:
        for key in ("time", "level", "service", "message"):
            assert key in line, (key, line)
        assert line["service"] == "e2e-service"
    log_text = log_stream.getvalue()
    for secret in ("demo-secret-token", "demo-db-password", "client-secret", "collector-secret"):
        assert secret not in log_text

    # Metrics exposition parses and carries the route-template labels.
    fams = families(metrics_text)
    hist = fams["http_server_request_duration_seconds"]
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status_class"]): s.value
        for s in hist.samples
        if s.name.endswith("_count")
    }
    assert counts[("GET", "/v1/items/{id}", "2xx")] == 1
    assert counts[("GET", "/boom", "5xx")] == 1
    assert counts[("GET", "<unmatched>", "4xx")] == 1
    bounds = sorted({s.labels["le"] for s in hist.samples if s.name.endswith("_bucket")}, key=float)
    assert bounds == ["0.001", "0.01", "0.1", "1.0", "+Inf"]
    assert not any("/nowhere" in json.dumps(s.labels) for s in hist.samples)
    errors = {s.labels["code"]: s.value for s in fams["http_server_errors"].samples}
    assert errors == {"INTERNAL_ERROR": 1.0}
    info = fams["aiaas_service_info"].samples[0].labels
    assert info["service_name"] == "e2e-service"
    assert info["service_version"] == "1.2.3"
    assert "collector-secret" not in json.dumps(info)
    assert "process_cpu_seconds" in fams or "process_cpu_seconds_total" in fams
    assert "python_info" in fams
    assert tel.shutdown(timeout_s=3) is True
    assert tel.registry.get_sample_value("aiaas_telemetry_spans_exported_total") == 3

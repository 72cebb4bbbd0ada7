"""Metrics on the service's own registry, and the /metrics ASGI app."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiaas_telemetry import TelemetryMetrics, load_profile, metrics_app


@pytest.fixture
def metrics() -> TelemetryMetrics:
    profile = load_profile(
        {
            "service_name": "metrics-svc",
            "metrics": {
                "histograms": [
                    {"name": "http_server_request_duration_seconds", "buckets": [0.1, 0.5, 1]},
                    {"name": "inference_seconds", "buckets": [0.05, 0.1, 0.3, 1]},
                ]
            },
        },
        environ={},
    )
    return TelemetryMetrics(
        profile, CollectorRegistry(), info={"config.db-pool": "5", "2nd": "x", "__r": "y"}
    )


def names(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def test_registry_is_the_services_own(metrics: TelemetryMetrics) -> None:
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("aiaas_telemetry_span_export_failures_total") is None
    second = TelemetryMetrics(metrics._profile, CollectorRegistry(), process_metrics=False)
    assert second.registry.get_sample_value("process_cpu_seconds_total") is None


def test_histograms_take_the_profiles_buckets(metrics: TelemetryMetrics) -> None:
    inference = metrics.histogram("inference_seconds", "Model time.", ["model"])
    inference.labels("minilm").observe(0.2)
    other = metrics.histogram("queue_wait_seconds", "Wait.")
    other.observe(0.2)
    reg = metrics.registry
    assert reg.get_sample_value("inference_seconds_bucket", {"model": "minilm", "le": "0.3"}) == 1
    assert reg.get_sample_value("inference_seconds_bucket", {"model": "minilm", "le": "0.1"}) == 0
    assert reg.get_sample_value("queue_wait_seconds_bucket", {"le": "0.25"}) == 1  # defaults
    metrics.request_duration.labels("GET", "/x", "2xx").observe(0.3)
    assert (
        reg.get_sample_value(
            "http_server_request_duration_seconds_bucket",
            {"method": "GET", "route": "/x", "status_class": "2xx", "le": "0.5"},
        )
        == 1
    )


def test_info_metric_labels_are_sanitised(metrics: TelemetryMetrics) -> None:
    labels = next(
        s.labels
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "aiaas_service_info"
    )
    assert labels["service_name"] == "metrics-svc"
    assert labels["config_db_pool"] == "5"
    assert labels["_2nd"] == "x"
    assert labels["r"] == "y"
    assert labels["sampler"] == "always_on"


def test_drop_reasons_exist_at_zero(metrics: TelemetryMetrics) -> None:
    for reason in ("queue_full", "export_failed", "shutdown"):
        assert (
            metrics.registry.get_sample_value(
                "aiaas_telemetry_spans_dropped_total", {"reason": reason}
            )
            == 0
        )


async def test_metrics_app_formats_and_methods(metrics: TelemetryMetrics, asgi: Any) -> None:
    app = metrics.app()
    plain = await asgi.call(app, asgi.scope("GET", "/metrics"))
    assert plain.status == 200
    assert plain.headers[b"content-type"].startswith(b"text/plain")
    assert {"aiaas_service_info", "http_server_errors", "python_info"} <= names(plain.body.decode())
    assert int(plain.headers[b"content-length"]) == len(plain.body)

    om = await asgi.call(
        app, asgi.scope("GET", "/metrics", [(b"accept", b"application/openmetrics-text")])
    )
    assert om.headers[b"content-type"].startswith(b"application/openmetrics-text")
    assert om.body.rstrip().endswith(b"# EOF")

    gz = await asgi.call(
        app, asgi.scope("GET", "/metrics", [(b"accept-encoding", b"br, gzip;q=0.5")])
    )
    assert gz.headers[b"content-encoding"] == b"gzip"
    assert b"aiaas_service_info" in gzip.decompress(gz.body)

    filtered_scope = asgi.scope("GET", "/metrics")
    filtered_scope["query_string"] = b"name[]=aiaas_service_info"
    filtered = await asgi.call(app, filtered_scope)
    assert names(filtered.body.decode()) == {"aiaas_service_info"}

    head = await asgi.call(app, asgi.scope("HEAD", "/metrics"))
    assert head.status == 200
    assert head.body == b""

    post = await asgi.call(app, asgi.scope("POST", "/metrics"))
    assert post.status == 405
    assert post.headers[b"allow"] == b"GET, HEAD"
    assert post.json()["code"] == "METHOD_NOT_ALLOWED"


async def test_metrics_app_speaks_lifespan_and_ignores_websockets(asgi: Any) -> None:
    app = metrics_app(CollectorRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await app({"type": "websocket"}, receive, send)
    assert len(sent) == 2

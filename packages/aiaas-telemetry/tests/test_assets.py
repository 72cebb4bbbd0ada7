"""The shipped dashboard and alert rules parse and use metric names we really export."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiaas_telemetry import load_asset, load_grafana_dashboard, load_prometheus_rules

PROMQL_FUNCTIONS = {
    "sum",
    "rate",
    "histogram_quantile",
    "by",
    "and",
    "or",
    "without",
    "on",
    "ignoring",
    "label_values",
    "max",
    "min",
    "avg",
    "count",
    "irate",
    "increase",
    "le",
}
METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[])")
LABEL = re.compile(r"(?:by|without)\s*\(([^)]*)\)|([a-zA-Z_]+)\s*(?:=~|!=|=)\s*\"")


@pytest.fixture
async def exported(make_telemetry: Any, asgi: Any) -> dict[str, set[str]]:
    """Metric sample names and their label names, from a real exposition after traffic."""
    tel = make_telemetry(tracing=False)

    async def fail(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("x")

    await asgi.call(tel.middleware(fail, routes=["/x"]), asgi.scope("GET", "/x"))
    text = (await asgi.call(tel.metrics_app(), asgi.scope("GET", "/metrics"))).body.decode()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def _check_expr(expr: str, exported: dict[str, set[str]]) -> None:
    names = {m for m in METRIC.findall(expr) if m not in PROMQL_FUNCTIONS}
    assert names, expr
    for name in names:
        assert name in exported, f"{name} is not exported (in {expr!r})"
    labels = set()
    for by, matcher in LABEL.findall(expr):
        labels.update(x.strip() for x in by.split(",") if x.strip())
        if matcher:
            labels.add(matcher)
    known = set().union(*(exported[n] for n in names)) | {"job", "instance", "le"}
    assert labels <= known, (labels - known, expr)


def test_dashboard_parses_and_uses_exported_metrics(exported: dict[str, set[str]]) -> None:
    dashboard = load_grafana_dashboard()
    assert dashboard["uid"] == "aiaas-service"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("request rate", "error rate", "p95", "dropped"):
        assert topic in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace('=~"$job"', '=~".*"')
            _check_expr(expr, exported)


def test_alert_rules_parse_and_use_exported_metrics(exported: dict[str, set[str]]) -> None:
    rules = load_prometheus_rules()
    alerts = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            expr = rule["expr"]
            _check_expr(re.sub(r"\bjob:[a-z0-9_:]+", "", expr), exported)
            if "alert" in rule:
                alerts[rule["alert"]] = rule
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert rule["annotations"]["summary"]
    assert {
        "AiaasServiceNoTraffic",
        "AiaasServiceHighErrorRate",
        "AiaasServiceHighLatencyP95",
        "AiaasTelemetrySpansDropped",
        "AiaasTelemetryExportFailing",
    } == set(alerts)


def test_load_asset() -> None:
    assert load_asset("prometheus-rules.yaml").startswith("#")
    with pytest.raises(ValueError, match="unknown asset"):
        load_asset("../pyproject.toml")

"""``service_stack``: telemetry -> auth -> app in one order, the request id made once.

Real uvicorn, real httpx: every response carries exactly one ``X-Request-ID``, and it is the id
in the access log, the audit trail, the application's log lines and the error bodies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiaas_core import (
    Actor,
    AiaasError,
    AuthenticationError,
    NotFoundError,
    Policy,
    PolicyRule,
    RouteRule,
    accept_request_id,
    get_request_id,
)
from aiaas_telemetry import ServiceAuth, TelemetryMiddleware, service_stack

TOKENS = {"reader-token": Actor("alice", ["reader"]), "nobody-token": Actor("bob", ["guest"])}
POLICY = Policy(
    [PolicyRule(id="readers", effect="allow", roles=["reader"], permissions=["items:read"])]
)
RULES = [
    RouteRule("GET", "/v1/items/{id}", "items:read"),
    RouteRule("GET", "/v1/missing", "items:read"),
]


async def authenticate(credential: str) -> Actor:
    actor = TOKENS.get(credential)
    if actor is None:
        raise AuthenticationError("Authentication failed: unknown token", code="TOKEN_UNKNOWN")
    return actor


async def items_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers like an OpenAI endpoint does: with the context's request id, and only when there
    is none (no middleware in front) with one of its own in an ``X-Request-ID`` header -- the
    second header this stack must never let happen."""
    await receive()
    if scope["path"] == "/v1/missing":
        raise NotFoundError("no such item")
    request_id = get_request_id()
    headers = [(b"content-type", b"application/json")]
    if request_id is None:
        request_id = accept_request_id(None)
        headers.append((b"x-request-id", request_id.encode()))
    logging.getLogger("items.app").info("item served")
    body = json.dumps({"request_id": request_id}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def teapot_renderer(err: AiaasError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"teapot": {"code": err.code, "request_id": get_request_id()}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return err.status, headers, body


def request_ids(response: httpx.Response) -> list[str]:
    return response.headers.get_list("x-request-id")


def by_request(records: list[dict[str, Any]], logger: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("logger") == logger:
            out.setdefault(record["request_id"], []).append(record)
    return out


def test_one_request_id_per_response_and_everywhere_the_same(
    make_telemetry: Any, server: Any, log_stream: Any, error_validator: Any
) -> None:
    telemetry = make_telemetry(tracing=False)
    app = service_stack(
        items_app,
        telemetry=telemetry,
        auth=ServiceAuth(authenticate=authenticate, policy=POLICY, rules=RULES),
        routes=["/v1/items/{id}", "/v1/missing"],
    )
    assert isinstance(app, TelemetryMiddleware)
    reader = {"Authorization": "Bearer reader-token"}
    cases = [
        # (path, headers, expected status, the client's id kept?)
        ("/v1/items/1", reader, 200, None),
        (
            "/v1/items/2",
            {**reader, "X-Request-ID": "client-chosen-0001"},
            200,
            "client-chosen-0001",
        ),
        ("/v1/items/3", {**reader, "X-Request-ID": "has spaces and ; semicolons"}, 200, None),
        ("/v1/items/4", {**reader, "X-Request-ID": "x" * 500}, 200, None),
        ("/v1/items/5", {}, 401, None),
        ("/v1/items/6", {"Authorization": "Bearer wrong-token"}, 401, None),
        ("/v1/items/7", {"Authorization": "Bearer nobody-token"}, 403, None),
        (
            "/v1/missing",
            {**reader, "X-Request-ID": "client-chosen-0002"},
            404,
            "client-chosen-0002",
        ),
        ("/v1/unmapped", reader, 403, None),
        ("/health", {"X-Request-ID": "probe-0001"}, 200, "probe-0001"),  # public
    ]
    seen: dict[str, tuple[str, int]] = {}
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for path, headers, status, kept in cases:
            response = client.get(path, headers=headers)
            assert response.status_code == status, (path, response.text)
            ids = request_ids(response)
            assert len(ids) == 1, (path, ids)
            (rid,) = ids
            if kept is not None:
                assert rid == kept
            else:
                assert rid not in (headers.get("X-Request-ID"), None)
                assert len(rid) == 32  # a fresh one: 128 random bits in hex
            body = response.json()
            if status == 200:
                assert body == {"request_id": rid}
            else:
                error_validator(body)
                assert body["request_id"] == rid
            seen[path] = (rid, status)
        # a client sending the header twice still gets one back
        twice = client.get(
            "/v1/items/8",
            headers=[
                ("X-Request-ID", "first-id-0001"),
                ("X-Request-ID", "2nd-0002"),
                *reader.items(),
            ],
        )
        assert len(request_ids(twice)) == 1
        assert twice.json() == {"request_id": request_ids(twice)[0]}

    records = log_stream.records()
    access = by_request(records, "aiaas.access")
    audit = by_request(records, "aiaas.audit")
    served = by_request(records, "items.app")
    for path, (rid, status) in seen.items():
        if path == "/health":  # a probe: the request id, but no access-log line or audit event
            assert rid not in access
            assert rid not in audit
            continue
        (line,) = access[rid]
        assert (line["url.path"], line["http.status_code"]) == (path, status)
        (event,) = audit[rid]  # one decision per request, under the same id
        assert event["audit"]["type"] in {"authentication", "authorization"}
        assert event["audit"]["request_id"] == rid
        assert (rid in served) == (status == 200)


def test_auth_is_inside_telemetry_and_errors_have_one_shape(
    make_telemetry: Any, server: Any, log_stream: Any
) -> None:
    telemetry = make_telemetry(tracing=False)
    app = service_stack(
        items_app,
        telemetry=telemetry,
        auth=ServiceAuth(authenticate=authenticate, policy=POLICY, rules=RULES),
        routes=["/v1/items/{id}", "/v1/missing"],
        error_renderers={"/v1/": teapot_renderer},
    )
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        refused = client.get("/v1/items/1")  # the auth layer's 401
        missing = client.get("/v1/missing", headers={"Authorization": "Bearer reader-token"})
        metrics = client.get("/metrics")  # the default metrics path, no credential needed
    assert refused.status_code == 401
    assert refused.json() == {
        "teapot": {"code": "AUTH_UNAUTHENTICATED", "request_id": request_ids(refused)[0]}
    }
    assert missing.status_code == 404
    assert missing.json() == {
        "teapot": {"code": "NOT_FOUND", "request_id": request_ids(missing)[0]}
    }
    assert metrics.status_code == 200
    assert request_ids(metrics) == []  # answered before the request context, like before
    # the telemetry layer saw the auth layer's refusal: counted and logged
    counted = {
        (s.labels["route"], s.labels["status_class"]): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert counted[("/v1/items/{id}", "4xx")] == 1
    assert counted[("/v1/missing", "4xx")] == 1


def test_problem_details_reach_both_layers(make_telemetry: Any, server: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    app = service_stack(
        items_app,
        telemetry=telemetry,
        auth=ServiceAuth(
            authenticate=authenticate,
            policy=POLICY,
            rules=RULES,
            audit=False,
            public_paths=["/health"],  # /metrics is not served here: an unmapped route
        ),
        problem_details=True,
        metrics_path=None,
    )
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        refused = client.get("/v1/items/1")
        missing = client.get("/v1/missing", headers={"Authorization": "Bearer reader-token"})
        metrics = client.get("/metrics", headers={"Authorization": "Bearer reader-token"})
    for response, status in ((refused, 401), (missing, 404), (metrics, 403)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == request_ids(response)[0]


def test_without_auth_and_audit_off(make_telemetry: Any, server: Any, log_stream: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    open_app = service_stack(items_app, telemetry=telemetry, access_log=False)
    quiet = service_stack(
        items_app,
        telemetry=telemetry,
        auth=ServiceAuth(authenticate=authenticate, policy=POLICY, rules=RULES, audit=False),
    )
    with server(open_app) as base, httpx.Client(base_url=base, timeout=10) as client:
        response = client.get("/v1/items/1")
    assert response.status_code == 200
    assert response.json() == {"request_id": request_ids(response)[0]}
    with server(quiet) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/v1/items/1").status_code == 401
    records = log_stream.records()
    assert not [r for r in records if r.get("logger") == "aiaas.audit"]
    (line,) = [r for r in records if r.get("logger") == "aiaas.access"]  # only the quiet one's
    assert line["http.status_code"] == 401


def test_bad_arguments_are_refused(make_telemetry: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    with pytest.raises(TypeError, match="auth must be a ServiceAuth"):
        service_stack(items_app, telemetry=telemetry, auth={"authenticate": authenticate})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_body_bytes must be >= 0"):
        service_stack(items_app, telemetry=telemetry, max_body_bytes=-1)
    with pytest.raises(TypeError, match="RouteRule"):
        service_stack(
            items_app,
            telemetry=telemetry,
            auth=ServiceAuth(authenticate=authenticate, policy=POLICY, rules=["GET /"]),  # type: ignore[list-item]
        )

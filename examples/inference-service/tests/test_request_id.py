"""One request id per request, end to end: real uvicorn, httpx, PostgreSQL and MiniLM.

An embeddings response once carried two different ``X-Request-ID`` headers (the telemetry
middleware's and the OpenAI endpoint's own). ``create_app`` now assembles its middleware with
``aiaas_telemetry.service_stack``: the id is made once, in the outermost layer, and every
response carries exactly one ``X-Request-ID`` -- the id in the access log, the audit trail, the
usage row and the error body of that request.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from conftest import Platform, make_service, serve

MODEL = "all-MiniLM-L6-v2"


def the_request_id(response: httpx.Response) -> str:
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1, f"{response.request.url.path}: X-Request-ID headers {ids}"
    return ids[0]


def usage_status(platform: Platform, request_id: str) -> list[str]:
    with psycopg.connect(platform.url) as conn:
        rows = conn.execute(
            "SELECT status FROM usage_events WHERE request_id = %s", (request_id,)
        ).fetchall()
    return [row[0] for row in rows]


async def test_every_response_carries_one_request_id_the_one_in_logs_audit_and_usage(
    platform: Platform, telemetry: Any, minilm: Any, log_stream: Any, error_validator: Any
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    auth = {"Authorization": f"Bearer {platform.token}"}
    embed = {"model": MODEL, "input": ["one request, one id"]}
    seen: dict[str, tuple[str, int]] = {}
    async with serve(service) as client:
        # no id from the client: the service makes one
        fresh = await client.post("/v1/embeddings", json=embed, headers=auth)
        assert fresh.status_code == 200, fresh.text
        seen["fresh"] = (the_request_id(fresh), 200)
        assert len(seen["fresh"][0]) == 32
        # a well-formed client id is kept
        kept = await client.post(
            "/v1/embeddings", json=embed, headers={**auth, "X-Request-ID": "inference-rid-0001"}
        )
        assert kept.status_code == 200, kept.text
        assert the_request_id(kept) == "inference-rid-0001"
        seen["kept"] = ("inference-rid-0001", 200)
        # hostile ids are replaced, never echoed
        for name, hostile in (
            ("spaces", "not an id; rm -rf /"),
            ("long", "a" * 300),
            ("newline-ish", "abc%0d%0aSet-Cookie:x"),
        ):
            response = await client.post(
                "/v1/embeddings", json=embed, headers={**auth, "X-Request-ID": hostile}
            )
            assert response.status_code == 200, response.text
            rid = the_request_id(response)
            assert rid != hostile
            seen[name] = (rid, 200)
        # errors: the endpoint's (OpenAI shape), the auth layer's (OpenAI shape on /v1/), and a
        # shared error body outside /v1/ that names the id
        unknown_model = await client.post(
            "/v1/embeddings", json={"model": "nope", "input": ["x"]}, headers=auth
        )
        assert unknown_model.status_code == 404
        assert unknown_model.json()["error"]["code"] == "model_not_found"
        seen["unknown-model"] = (the_request_id(unknown_model), 404)
        anonymous = await client.post("/v1/embeddings", json=embed)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "auth_unauthenticated"
        seen["anonymous"] = (the_request_id(anonymous), 401)
        unmapped = await client.get(
            "/admin", headers={**auth, "X-Request-ID": "inference-rid-0002"}
        )
        assert unmapped.status_code == 403
        error_validator(unmapped.json())
        assert unmapped.json()["request_id"] == the_request_id(unmapped) == "inference-rid-0002"
        seen["unmapped"] = ("inference-rid-0002", 403)
        # the probes and the model list: one id each too
        for path in ("/health", "/ready", "/v1/models"):
            probe = await client.get(path, headers=auth)
            assert probe.status_code == 200, (path, probe.text)
            the_request_id(probe)
        assert await service.usage.flush(10)

    records = log_stream.records()
    for name, (rid, status) in seen.items():
        access = [
            r for r in records if r.get("logger") == "aiaas.access" and r.get("request_id") == rid
        ]
        assert [r["http.status_code"] for r in access] == [status], name
        audit = [
            r for r in records if r.get("logger") == "aiaas.audit" and r.get("request_id") == rid
        ]
        assert len(audit) == 1, name
        assert audit[0]["audit"]["request_id"] == rid
    # billed requests: the usage row is filed under the same id
    for name in ("fresh", "kept", "spaces", "long", "newline-ish"):
        assert usage_status(platform, seen[name][0]) == ["success"], name
    assert usage_status(platform, seen["unknown-model"][0]) == ["error"]
    assert usage_status(platform, seen["anonymous"][0]) == []  # never authenticated: not billed

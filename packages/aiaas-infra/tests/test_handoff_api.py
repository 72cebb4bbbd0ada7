"""The handoff API for real: uvicorn + httpx, every body validated against the shared contract."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from handoff_support import Contract, Keys, LogCapture, handoff_server
from prometheus_client.parser import text_string_to_metric_families

from aiaas_infra import (
    EnvironmentRecord,
    LocalStateBackend,
    PlatformSpec,
    StateStore,
    handoff_openapi,
    spec_from_dict,
    spec_to_dict,
)

LIST = "/v1/environments"
HANDOFF = "/v1/environments/{environment}/handoff"


@pytest.fixture(scope="module")
def contract(handoff_contract_path: Path) -> Contract:
    return Contract(handoff_contract_path)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def locked_spec(spec: PlatformSpec) -> PlatformSpec:
    data = spec_to_dict(spec)
    data["environments"]["staging"]["maintenance"] = {
        "locked": True,
        "reason": "node pool upgrade until 20:00 UTC",
    }
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateStore:
    store = StateStore(LocalStateBackend(tmp_path_factory.mktemp("state")))
    store.write_environments(
        {
            "development": EnvironmentRecord(status="ready", since="2026-01-02T03:04:05Z"),
            "production": EnvironmentRecord(status="degraded", since="2026-01-03T00:00:00Z"),
            "system": EnvironmentRecord(status="retired", since="2026-01-04T00:00:00Z"),
        }
    )
    return store


@pytest.fixture(scope="module")
def logs() -> LogCapture:
    return LogCapture()


@pytest.fixture(scope="module")
def base(
    locked_spec: PlatformSpec, keys: Keys, logs: LogCapture, state: StateStore
) -> Iterator[str]:
    with handoff_server(locked_spec, keys, logs, store=state) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as c:
        yield c


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def test_list_environments(client: httpx.Client, keys: Keys, contract: Contract) -> None:
    for role in ("platform-engineer", "app-team", "read-only"):
        response = client.get(LIST, headers=keys.headers(role))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        contract.validate_response(LIST, 200, body)
        for item in body["data"]:
            contract.validate(item, "EnvironmentSummary")
    by_name = {e["name"]: e for e in body["data"]}
    assert list(by_name) == ["development", "staging", "production", "system"]
    assert by_name["development"]["status"] == "ready"
    assert by_name["development"]["lastUpdatedAt"] == "2026-01-02T03:04:05Z"
    assert by_name["production"]["status"] == "degraded"
    assert by_name["staging"]["status"] == "provisioning"  # no record yet
    assert by_name["staging"]["ingressBaseDomain"] == "staging.apps.example.net"
    # Pools: production pool autoscales 3..9; system has the GPU pool.
    assert by_name["production"]["nodePools"] == [
        {"type": "g6-dedicated-4", "count": 3, "maxCount": 9, "gpu": False}
    ]
    gpu = [p for p in by_name["system"]["nodePools"] if p["gpu"]]
    assert gpu == [{"type": "g2-gpu-rtx4000a1-s", "count": 1, "maxCount": 1, "gpu": True}]


@pytest.mark.parametrize(
    ("caller", "env", "role", "hours"),
    [
        ("app-team", "development", None, 24),
        ("app-team", "production", "app-team", 8),
        ("read-only", "development", "read-only", 24),
        ("app-team", "production", "read-only", 8),
        ("platform-engineer", "production", "platform-engineer", 8),
        ("platform-engineer", "development", "platform-engineer", 24),
    ],
)
def test_handoff_package(  # noqa: PLR0917 -- fixtures and parameters
    client: httpx.Client,
    keys: Keys,
    contract: Contract,
    caller: str,
    env: str,
    role: str | None,
    hours: int,
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    params = {"role": role} if role else {}
    response = client.get(
        f"/v1/environments/{env}/handoff", params=params, headers=keys.headers(caller)
    )
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    body = response.json()
    contract.validate_response(HANDOFF, 200, body)
    expected_role = role or "app-team"
    assert body["environment"] == env
    assert body["role"] == expected_role
    expires = datetime.fromisoformat(body["expiresAt"])
    assert before + timedelta(hours=hours) <= expires <= after + timedelta(hours=hours)
    base = f"https://packages.example.net/handoff/{env}/{expected_role}"
    assert body["kubeconfigUrl"] == f"{base}/kubeconfig"
    assert body["rbacUrl"] == f"{base}/rbac.json"
    assert {link["type"] for link in body["observabilityLinks"]} == {
        "grafana-dashboard",
        "prometheus",
        "alertmanager",
    }
    assert all(f"env-{env}" in link["url"] for link in body["observabilityLinks"])
    steps = body["deploymentGuide"]["steps"]
    assert [s["order"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(
        f"--namespace env-{env}" in s["command"] for s in steps[1:] if "kubectl" in s["command"]
    )
    deploys = [s for s in steps if s["name"] == "Deploy through GitOps"]
    assert (not deploys) == (expected_role == "read-only")
    if deploys and env == "production":
        assert "manual ArgoCD sync" in deploys[0]["notes"]


def test_head_answers_without_a_body(client: httpx.Client, keys: Keys) -> None:
    response = client.head("/v1/environments/development/handoff", headers=keys.headers("app-team"))
    assert response.status_code == 200
    assert response.content == b""


def test_unauthenticated(client: httpx.Client, contract: Contract, logs: LogCapture) -> None:
    for path, template in ((LIST, LIST), ("/v1/environments/production/handoff", HANDOFF)):
        response = client.get(path)
        body = _problem(response, 401, "AUTH_UNAUTHENTICATED")
        contract.validate_response(template, 401, body)
        assert response.headers["www-authenticate"] == 'Bearer realm="aiaas"'
    wrong = client.get(LIST, headers={"Authorization": "Bearer aiaas_notakey"})
    contract.validate_response(LIST, 401, _problem(wrong, 401, wrong.json()["code"]))
    audits = [r["audit"] for r in logs.records() if "audit" in r]
    assert any(a["type"] == "authentication" and a["outcome"] == "deny" for a in audits)
    assert "aiaas_notakey" not in logs.getvalue()


def test_unknown_and_retired_environments(
    client: httpx.Client, keys: Keys, contract: Contract
) -> None:
    for env in ("qa", "system"):  # qa: not in the spec; system: retired in state
        response = client.get(
            f"/v1/environments/{env}/handoff", headers=keys.headers("platform-engineer")
        )
        body = _problem(response, 404, "ENVIRONMENT_NOT_FOUND")
        contract.validate_response(HANDOFF, 404, body)
        assert env in body["detail"]


def test_locked_environment(client: httpx.Client, keys: Keys, contract: Contract) -> None:
    response = client.get("/v1/environments/staging/handoff", headers=keys.headers("app-team"))
    body = _problem(response, 423, "ENVIRONMENT_LOCKED")
    contract.validate_response(HANDOFF, 423, body)
    assert "node pool upgrade until 20:00 UTC" in body["detail"]
    # The list still shows it.
    listed = client.get(LIST, headers=keys.headers("app-team")).json()["data"]
    assert "staging" in [e["name"] for e in listed]


@pytest.mark.parametrize(
    "query",
    ["role=break-glass", "role=admin", "role=", "role=app-team&role=read-only"],
)
def test_bad_role(client: httpx.Client, keys: Keys, contract: Contract, query: str) -> None:
    response = client.get(
        f"/v1/environments/development/handoff?{query}", headers=keys.headers("platform-engineer")
    )
    body = _problem(response, 400, "HANDOFF_ROLE_INVALID")
    contract.validate(body, "Error")
    if "break-glass" in query:
        assert "--incident" in body["detail"]


@pytest.mark.parametrize(
    ("caller", "role"),
    [
        ("read-only", "app-team"),
        ("read-only", "platform-engineer"),
        ("app-team", "platform-engineer"),
    ],
)
def test_role_escalation_is_denied(
    client: httpx.Client, keys: Keys, contract: Contract, caller: str, role: str
) -> None:
    response = client.get(
        "/v1/environments/development/handoff", params={"role": role}, headers=keys.headers(caller)
    )
    body = _problem(response, 403, "AUTH_ROLE_DENIED")
    contract.validate(body, "Error")
    assert f"handoff-role:{role}" in body["detail"]


def test_unmapped_and_bad_paths(client: httpx.Client, keys: Keys) -> None:
    pe = keys.headers("platform-engineer")
    _problem(client.post(LIST, headers=pe), 403, "AUTH_ROUTE_UNMAPPED")
    _problem(client.get("/v1/nothing", headers=pe), 403, "AUTH_ROUTE_UNMAPPED")
    # Public paths answer GET only.
    response = client.post("/openapi.json")
    _problem(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, HEAD"


def test_health_ready_metrics(client: httpx.Client, keys: Keys) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ok"}
    client.get("/v1/environments/production/handoff", headers=keys.headers("app-team"))
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    routes = {
        s.labels.get("route") for s in families["http_server_request_duration_seconds"].samples
    }
    assert HANDOFF in routes


def test_openapi_is_served(client: httpx.Client, locked_spec: PlatformSpec) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc == handoff_openapi(locked_spec)
    (env_param,) = [
        p for p in doc["paths"][HANDOFF]["get"]["parameters"] if p["name"] == "environment"
    ]
    assert env_param["schema"]["enum"] == list(locked_spec.environments)


# --------------------------------------------------------------------------------------------
# The served document is the contract plus the documented deviations, and nothing else.

DEVIATIONS = {
    "security-schemes",
    "problem-json-errors",
    "bad-request-and-forbidden-responses",
    "environments-from-spec",
}


def _resolve_response(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        return doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return response


def test_served_document_is_the_contract_with_documented_deviations(
    contract: Contract,
) -> None:
    original = contract.doc
    served = handoff_openapi()
    assert set(served["info"]["x-aiaas-deviations"]) == DEVIATIONS
    # Untouched: title, version, servers, every schema.
    assert served["info"]["title"] == original["info"]["title"]
    assert served["info"]["version"] == original["info"]["version"]
    assert served["servers"] == original["servers"]
    assert served["components"]["schemas"] == original["components"]["schemas"]
    # security-schemes: declared, bearer and API key.
    assert "security" not in original
    assert served["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert served["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert set(served["paths"]) == set(original["paths"])
    for path, item in original["paths"].items():
        op, ours = item["get"], served["paths"][path]["get"]
        assert ours["operationId"] == op["operationId"]
        assert ours.get("parameters") == op.get("parameters")
        added = set(ours["responses"]) - set(op["responses"])
        assert added <= {"400", "403"}  # bad-request-and-forbidden-responses
        for status, response in op["responses"].items():
            theirs = _resolve_response(original, response)
            mine = _resolve_response(served, ours["responses"][status])
            assert theirs["description"] == mine["description"]
            if status.startswith("2"):
                assert mine["content"] == theirs["content"]
            else:  # problem-json-errors: same schema, RFC 7807 media type
                assert set(theirs["content"]) == {"application/json"}
                assert set(mine["content"]) == {"application/problem+json"}
                assert (
                    mine["content"]["application/problem+json"]["schema"]
                    == theirs["content"]["application/json"]["schema"]
                )


def test_environments_from_spec(spec: PlatformSpec) -> None:
    data = copy.deepcopy(spec_to_dict(spec))
    data["environments"]["qa"] = data["environments"]["staging"]
    data["environments"]["qa"]["database"] = None
    doc = handoff_openapi(spec_from_dict(data))
    (env_param,) = [
        p for p in doc["paths"][HANDOFF]["get"]["parameters"] if p["name"] == "environment"
    ]
    assert env_param["schema"]["enum"] == ["development", "staging", "production", "system", "qa"]
    assert handoff_openapi()["paths"][HANDOFF]["get"]["parameters"][0]["schema"]["enum"] == [
        "development",
        "staging",
        "production",
        "system",
    ]


def test_dashboard_link_names_the_rendered_dashboard(spec: PlatformSpec) -> None:
    from aiaas_infra import observability_links, render_platform
    from aiaas_infra.access._handoff import DASHBOARD_UID

    uids = {
        json.loads(text).get("uid")
        for obj in render_platform(spec).objects
        if obj["kind"] == "ConfigMap"
        for name, text in obj.get("data", {}).items()
        if name.endswith(".json")
    }
    assert DASHBOARD_UID in uids
    (grafana,) = [
        link for link in observability_links(spec, "staging") if link["type"] == "grafana-dashboard"
    ]
    assert (
        grafana["url"] == f"https://grafana.example.net/d/{DASHBOARD_UID}?var-namespace=env-staging"
    )


def test_links_need_observability_urls(spec: PlatformSpec) -> None:
    from aiaas_infra import observability_links

    data = spec_to_dict(spec)
    data["observability"] = {"retention_days": 30}
    assert observability_links(spec_from_dict(data), "staging") == []


async def test_app_answers_lifespan_and_refuses_other_scopes(
    locked_spec: PlatformSpec, keys: Keys
) -> None:
    from handoff_support import telemetry_for_tests

    from aiaas_infra import create_handoff_app

    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    with telemetry_for_tests(LogCapture()) as tel:
        app = create_handoff_app(
            locked_spec,
            telemetry=tel,
            authenticate=keys.verifier.verify,
            package_base_url="https://x.example",
        )
        await app({"type": "lifespan"}, receive, send)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        with pytest.raises(ValueError, match="scope type"):
            await app({"type": "unknown"}, receive, send)


def test_document_rejects_unknown_environments_and_naive_times(spec: PlatformSpec) -> None:
    from aiaas_infra import EnvironmentNotFoundError, handoff_document

    with pytest.raises(EnvironmentNotFoundError):
        handoff_document(
            spec, "qa", "app-team", expires_at=datetime.now(UTC), kubeconfig_url="x", rbac_url="y"
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        handoff_document(
            spec,
            "staging",
            "app-team",
            expires_at=datetime(2026, 1, 1),  # noqa: DTZ001 -- the point of the test
            kubeconfig_url="x",
            rbac_url="y",
        )

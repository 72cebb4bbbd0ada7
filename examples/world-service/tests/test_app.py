"""world-service in-process: routes, health, metrics, the guarded admin route and settings."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from world_service import Settings, create_app, load, main, parse_key_entry, utc_timestamp

from aiaas_core import ConfigError


def client_for(settings: Settings, telemetry: Any) -> httpx.AsyncClient:
    app = create_app(settings, telemetry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_world(telemetry: Any) -> None:
    async with client_for(load({}, {}), telemetry) as client:
        res = await client.get("/world")
        head = await client.head("/world")
    assert res.status_code == 200
    body = res.json()
    assert body["message"] == "Hello, world-service!"
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert body["timestamp"].endswith("Z")
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert len(res.headers["x-request-id"]) == 32
    assert head.status_code == 200
    assert head.content == b""


def test_utc_timestamp() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=UTC)
    assert utc_timestamp(moment) == "2024-05-01T14:00:00.123Z"


async def test_health_ready_and_metrics(telemetry: Any, keys: Any) -> None:
    async with client_for(load({}, {}), telemetry) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
        await client.get("/world")
        metrics = await client.get("/metrics")
    assert health.status_code == 200
    assert health.json()["kind"] == "liveness"
    assert health.json()["checks"]["event-loop"]["status"] == "ok"
    assert ready.status_code == 200  # degraded still serves
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["api-keys"]["status"] == "degraded"
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    counts = {
        (s.labels["route"], s.labels["status_class"]): s.value
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {("/world", "2xx"): 1.0}  # probes are excluded from request metrics
    async with client_for(load(keys.env(), {}), telemetry) as client:
        ready = await client.get("/ready")
    assert ready.json()["checks"]["api-keys"] == {
        "status": "ok",
        "critical": False,
        "latency_ms": ready.json()["checks"]["api-keys"]["latency_ms"],
        "reason": None,
        "details": {"keys": 2},
    }


async def test_admin_route_is_guarded_and_audited(
    telemetry: Any, keys: Any, log_stream: Any, error_validator: Any
) -> None:
    async with client_for(load(keys.env(), {}), telemetry) as client:
        anonymous = await client.get("/admin/config")
        last = "y" if keys.admin.endswith("x") else "x"  # always a different key
        wrong_key = await client.get(
            "/admin/config", headers={"Authorization": f"Bearer {keys.admin[:-1]}{last}"}
        )
        reader = await client.get("/admin/config", headers={"X-API-Key": keys.reader})
        admin = await client.get("/admin/config", headers={"Authorization": f"Bearer {keys.admin}"})
        unmapped = await client.get("/nowhere", headers={"Authorization": f"Bearer {keys.admin}"})
    assert anonymous.status_code == 401
    assert wrong_key.status_code == 401
    assert reader.status_code == 403
    for res in (anonymous, wrong_key, reader, unmapped):
        error_validator(res.json())
    assert unmapped.status_code == 403
    assert admin.status_code == 200
    config = admin.json()
    assert config["service"]["api_key_hash_key"] == "<redacted>"
    assert config["telemetry"]["service_name"] == "world-service"
    audit = [r["audit"] for r in log_stream.records() if r["logger"] == "aiaas.audit"]
    assert [(a["type"], a["outcome"]) for a in audit] == [
        ("authentication", "deny"),
        ("authentication", "deny"),
        ("authorization", "deny"),
        ("authorization", "allow"),
        ("authorization", "deny"),
    ]
    assert audit[2]["actor"]["subject"] == "dashboards"
    assert audit[3]["actor"]["subject"] == "ops"
    assert audit[3]["request_id"] == admin.headers["x-request-id"]
    text = log_stream.getvalue()
    assert keys.admin not in text
    assert keys.reader not in text
    assert keys.hash_key not in text


async def test_no_keys_configured_refuses_everyone(telemetry: Any, keys: Any) -> None:
    async with client_for(load({}, {}), telemetry) as client:
        res = await client.get("/admin/config", headers={"Authorization": f"Bearer {keys.admin}"})
    assert res.status_code == 401
    assert res.json()["code"] == "API_KEY_INVALID"


async def test_methods_and_unknown_routes(telemetry: Any, error_validator: Any) -> None:
    async with client_for(load({}, {}), telemetry) as client:
        post = await client.post("/world")
        websocket_like = await client.get("/world/extra")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    error_validator(post.json())
    assert websocket_like.status_code == 401  # authentication comes before route lookup


async def test_app_answers_lifespan_and_refuses_other_scopes(telemetry: Any) -> None:
    from world_service import WorldApp

    from aiaas_core import HealthRegistry, NotFoundError

    app = WorldApp(load({}, {}), telemetry, HealthRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(NotFoundError):
        await app({"type": "websocket", "path": "/world"}, receive, send)


# --------------------------------------------------------------------------- settings


def test_settings_from_environment_and_flags(keys: Any) -> None:
    settings = load(
        {**keys.env(), "WORLD_SERVICE_PORT": "9000", "WORLD_SERVICE_GRACEFUL_TIMEOUT": "3s"},
        {"host": "0.0.0.0"},  # noqa: S104
    )
    assert settings.port == 9000
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.graceful_timeout == timedelta(seconds=3)
    assert settings.gil_switch_interval == timedelta(milliseconds=1)  # the service's default
    assert load({"WORLD_SERVICE_GIL_SWITCH_INTERVAL": "0"}, {}).gil_switch_interval == timedelta(0)
    assert load({"WORLD_SERVICE_GIL_SWITCH_INTERVAL": "500us"}, {}).gil_switch_interval == (
        timedelta(microseconds=500)
    )
    assert [r.subject for r in settings.key_records()] == ["ops", "dashboards"]
    assert keys.hash_key not in repr(settings)


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"WORLD_SERVICE_PORT": "http"}, "port"),
        ({"WORLD_SERVICE_PORT": "70000"}, "port"),
        ({"WORLD_SERVICE_API_KEYS": "ops:abc:admin:not-a-digest"}, "api_keys"),
        ({"WORLD_SERVICE_API_KEYS": "ops:abc:admin:hmac-sha256$v1$x"}, "api_keys"),
        ({"WORLD_SERVICE_API_KEY_HASH_KEY": "short"}, "api_key_hash_key"),
        ({"WORLD_SERVICE_GRACEFUL_TIMEOUT": "soon"}, "graceful_timeout"),
        ({"WORLD_SERVICE_GIL_SWITCH_INTERVAL": "2s"}, "gil_switch_interval"),
        ({"WORLD_SERVICE_GIL_SWITCH_INTERVAL": "-1ms"}, "gil_switch_interval"),
    ],
)
def test_bad_settings(env: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(env, {})
    assert path in {p.path for p in exc.value.problems}
    assert "short" not in str(exc.value) or path != "api_key_hash_key"


def test_keys_need_the_hash_key(keys: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        load({"WORLD_SERVICE_API_KEYS": keys.entries[0]}, {})
    (problem,) = exc.value.problems
    assert problem.path == "api_key_hash_key"
    assert "WORLD_SERVICE_API_KEY_HASH_KEY" in problem.hint


def test_parse_key_entry_rejects_plain_secrets() -> None:
    with pytest.raises(ValueError, match="subject:key_id"):
        parse_key_entry("just-a-secret")


# --------------------------------------------------------------------------- main(), in-process


def test_main_issue_key(keys: Any, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"WORLD_SERVICE_API_KEY_HASH_KEY": keys.hash_key}
    assert main(["--issue-key", "admin,reader", "--subject", "ci"], environ=env) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    entry = out[1].rsplit(" ", 1)[1]
    record = parse_key_entry(entry)
    assert record.subject == "ci"
    assert record.roles == ("admin", "reader")
    assert token.startswith(f"aiaas_{record.key_id}_")
    assert token not in entry
    assert main(["--issue-key", "admin"], environ={}) == 2
    assert "WORLD_SERVICE_API_KEY_HASH_KEY" in capsys.readouterr().err


def test_main_configuration_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={"WORLD_SERVICE_PORT": "eighty"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("world-service: 1 configuration problem(s):")
    assert "WORLD_SERVICE_PORT" in err
    assert main([], environ={"OTEL_TRACES_SAMPLER": "sometimes"}) == 2
    assert "OTEL_TRACES_SAMPLER" in capsys.readouterr().err
    switch_interval = sys.getswitchinterval()
    assert main([], environ={"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}) == 2
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in capsys.readouterr().err
    assert sys.getswitchinterval() == switch_interval  # nothing was set up
    with pytest.raises(SystemExit) as exc:
        main(["--port", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "/admin/config" in capsys.readouterr().out


def test_json_rendering_of_config_is_safe(telemetry: Any, keys: Any) -> None:
    settings = load(keys.env(), {})
    assert keys.hash_key not in json.dumps(telemetry.profile.summary())
    assert keys.hash_key not in repr(settings)


async def test_ready_reports_the_version_skew_check(
    telemetry: Any, keys: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, log_stream: Any
) -> None:
    async with client_for(load(keys.env(), {}), telemetry) as client:
        ready = await client.get("/ready")
        metrics = await client.get("/metrics")
    check = ready.json()["checks"]["version-skew"]
    assert check["status"] == "ok"
    assert check["critical"] is False
    assert set(check["details"]["distributions"]) == {
        "aiaas-core",
        "aiaas-telemetry",
        "world-service",
    }
    assert "aiaas_version_skew_problems 0.0" in metrics.text

    # aiaas-core 0.9.0's metadata first on sys.path, as a pip install of it leaves it: the
    # service still starts and serves, says so in its log, its metric and a degraded /ready.
    info = tmp_path / "aiaas_core-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiaas-core\nVersion: 0.9.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    async with client_for(load(keys.env(), {}), telemetry) as client:
        ready = await client.get("/ready")
        world = await client.get("/world")
        metrics = await client.get("/metrics")
    assert world.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    check = ready.json()["checks"]["version-skew"]
    assert check["status"] == "degraded"
    problems = {p["distribution"]: p["installed"] for p in check["details"]["problems"]}
    assert problems == {"aiaas-telemetry": "0.9.0", "world-service": "0.9.0"}
    assert "aiaas_version_skew_problems 2.0" in metrics.text
    warnings = [r for r in log_stream.records() if "aiaas version skew" in r["message"]]
    assert len(warnings) == 2
    assert all(r["level"] == "warn" for r in warnings)

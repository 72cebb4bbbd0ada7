"""Helpers for the schema management API tests: keys, the contract, a live uvicorn server."""

from __future__ import annotations

import io
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import uvicorn
import yaml

from aiaas_core import (
    ApiKeyVerifier,
    HashKey,
    InMemoryApiKeyStore,
    KeyedHasher,
    error_response_schema,
    parse_api_key_entries,
)
from aiaas_db.server._api import SchemaApi
from aiaas_db.server._app import create_schema_app
from aiaas_telemetry import Telemetry, load_profile, setup

#: Statuses the implementation answers beyond what the contract declares, per operation (each
#: documented as a contract deviation): auth (401/403 everywhere), malformed bodies (400/413/
#: 415), 404/422 where the contract forgot them, 503 when the database or rollups are away.
EXTRA_STATUSES: Mapping[tuple[str, str], frozenset[int]] = {
    ("get", "/v1/schema/entities"): frozenset({401, 403, 422}),
    ("post", "/v1/schema/migrations/apply"): frozenset({400, 401, 403, 413, 415, 503}),
    ("post", "/v1/schema/migrations/rollback"): frozenset({400, 401, 403, 413, 415, 503}),
    ("get", "/v1/schema/migrations/status/{runId}"): frozenset({401, 403}),
    ("post", "/v1/analytics/rollups/run"): frozenset({400, 401, 403, 409, 413, 415, 503}),
}


class Keys:
    """An HMAC key and API keys for a platform engineer, an app team and a billing user."""

    def __init__(self) -> None:
        self.hash_key = secrets.token_hex(32)
        self.hasher = KeyedHasher([HashKey.from_text("v1", self.hash_key)], "v1")
        issuer = ApiKeyVerifier(InMemoryApiKeyStore(), self.hasher)
        self.tokens: dict[str, str] = {}
        self.entries: list[str] = []
        for subject, role in (
            ("pe", "platform-engineer"),
            ("team", "app-team"),
            ("billing", "billing"),
        ):
            key, record = issuer.issue(subject=subject, roles=[role])
            self.tokens[subject] = key.token
            self.entries.append(f"{subject}:{record.key_id}:{role}:{record.digest}")

    def verifier(self) -> ApiKeyVerifier:
        store = InMemoryApiKeyStore(parse_api_key_entries(self.entries))
        return ApiKeyVerifier(store, self.hasher, touch_interval=None)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def env(self) -> dict[str, str]:
        return {
            "AIAAS_DB_API_KEY_HASH_KEY": self.hash_key,
            "AIAAS_DB_API_KEYS": ",".join(self.entries),
        }


class Contract:
    """``schema-management.yaml`` and the error body (from aiaas-core), as validators."""

    def __init__(self, contracts_dir: Path) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(
            (contracts_dir / "schema-management.yaml").read_text()
        )
        self.error = jsonschema.Draft7Validator(
            error_response_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
        )

    def component(self, name: str) -> jsonschema.Draft202012Validator:
        schema = {"$ref": f"#/components/schemas/{name}", "components": self.doc["components"]}
        return jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )

    def response_schema(self, method: str, template: str, status: int) -> dict[str, Any] | None:
        responses = self.doc["paths"][template][method]["responses"]
        declared = responses.get(str(status))
        if declared is None:
            return None
        content = declared.get("content") or {}
        media = content.get("application/json") or {}
        schema = media.get("schema")
        if schema is None:
            return None
        return {**schema, "components": self.doc["components"]}

    def check(
        self, response: httpx.Response, method: str, template: str, expect: int
    ) -> dict[str, Any]:
        """Assert the status, then validate the body against the contract (or error schema)."""
        method = method.lower()
        assert response.status_code == expect, (response.status_code, response.text)
        declared = {int(s) for s in self.doc["paths"][template][method]["responses"]}
        allowed = declared | EXTRA_STATUSES.get((method, template), frozenset())
        assert expect in allowed, f"{expect} is neither in the contract nor a documented deviation"
        body: dict[str, Any] = response.json()
        assert response.headers["content-type"].startswith("application/json")
        if expect >= 400:
            self.error.validate(body)
            datetime.fromisoformat(body["timestamp"])
        schema = self.response_schema(method, template, expect)
        if schema is not None:
            jsonschema.Draft202012Validator(
                schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            ).validate(body)
        return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_telemetry(stream: io.StringIO | None = None) -> Telemetry:
    return setup(
        load_profile({"service_name": "aiaas-db"}, environ={}),
        tracing=False,
        log_stream=stream or io.StringIO(),
        process_metrics=False,
    )


@contextmanager
def live_server(api: SchemaApi, keys: Keys, telemetry: Telemetry) -> Iterator[str]:
    """Serve ``api`` (the full middleware stack) under uvicorn on a free port; yield its URL."""
    app = create_schema_app(api, telemetry=telemetry, authenticate=keys.verifier().verify)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(
    client: httpx.Client,
    url: str,
    headers: Mapping[str, str],
    done: Any,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll ``url`` until ``done(body)`` holds; return that body."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url, headers=dict(headers)).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last: {body}")
        time.sleep(0.02)

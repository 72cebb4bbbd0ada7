"""Helpers the handoff tests share: API keys per role, the contract's schemas, and the handoff
API under a real uvicorn server in a background thread."""

from __future__ import annotations

import io
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aiaas_core import ApiKeyVerifier, HashKey, InMemoryApiKeyStore, KeyedHasher
from aiaas_infra import PlatformSpec, StateStore, create_handoff_app

ROLES = ("platform-engineer", "app-team", "read-only")


class Keys:
    """One API key per role (``keys.token["app-team"]``) and the verifier that accepts them."""

    def __init__(self) -> None:
        hasher = KeyedHasher([HashKey.from_text("v1", secrets.token_hex(32))], "v1")
        issuer = ApiKeyVerifier(InMemoryApiKeyStore(), hasher)
        self.token: dict[str, str] = {}
        records = []
        for role in ROLES:
            key, record = issuer.issue(subject=f"{role}-user", roles=[role])
            self.token[role] = key.token
            records.append(record)
        self.verifier = ApiKeyVerifier(InMemoryApiKeyStore(records), hasher, touch_interval=None)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token[role]}"}


class Contract:
    """The shared handoff contract, with validators for its schemas and responses."""

    def __init__(self, path: Path) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(path.read_text())

    def validator(self, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
        # OpenAPI 3.0 schemas are JSON Schema with extra keywords (example) that validators
        # ignore; '#/components/...' references resolve against the whole document.
        root = {**schema, "components": self.doc["components"]}
        cls = jsonschema.Draft202012Validator
        return cls(root, format_checker=cls.FORMAT_CHECKER)

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def validate(self, instance: Any, name: str) -> None:
        self.validator(self.schema(name)).validate(instance)

    def response_schema(self, path: str, status: int) -> dict[str, Any]:
        """The schema the contract gives ``GET path``'s ``status`` response (any media type)."""
        response = self.doc["paths"][path]["get"]["responses"][str(status)]
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        (media,) = response["content"].values()
        schema: dict[str, Any] = media["schema"]
        return schema

    def validate_response(self, path: str, status: int, instance: Any) -> None:
        self.validator(self.response_schema(path, status)).validate(instance)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogCapture(io.StringIO):
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@contextmanager
def telemetry_for_tests(log_stream: io.StringIO) -> Iterator[Any]:
    from aiaas_telemetry import load_profile, setup

    tel = setup(
        load_profile({"service_name": "aiaas-handoff"}, environ={}),
        tracing=False,
        log_stream=log_stream,
        process_metrics=False,
    )
    try:
        yield tel
    finally:
        tel.shutdown(timeout_s=1)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port; yields the base URL."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def handoff_server(
    spec: PlatformSpec,
    keys: Keys,
    log_stream: io.StringIO,
    *,
    store: StateStore | None = None,
    base_url: str = "https://packages.example.net/handoff",
) -> Iterator[str]:
    with telemetry_for_tests(log_stream) as tel:
        app = create_handoff_app(
            spec,
            telemetry=tel,
            authenticate=keys.verifier.verify,
            package_base_url=base_url,
            ingress_domain="apps.example.net",
            store=store,
        )
        with serve(app) as base:
            yield base

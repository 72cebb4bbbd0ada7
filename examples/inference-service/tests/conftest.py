"""Fixtures: a real PostgreSQL with the platform schema and the local-dev seed, the real model,
in-process telemetry, and the service under a real uvicorn server."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, settings
from inference_service import Service, create_app, load
from inference_service._database import Database, prepare_platform

from aiaas_core import KeyedHasher, error_response_schema
from aiaas_db import LocalPostgres, local_dev_api_key, seed_api_key_hasher, seed_uuid

SEED_SECRET = "inference-service-tests-seed-secret"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=20
)
settings.load_profile("default")


@pytest.fixture(scope="session")
def error_validator() -> Callable[[Any], None]:
    import jsonschema

    return jsonschema.Draft7Validator(error_response_schema()).validate


@attrs.frozen
class Platform:
    """A database with the platform schema and the local-dev seed."""

    url: str
    token: str
    hasher: KeyedHasher
    hash_key: str
    organization_id: Any
    cluster: LocalPostgres

    def database(self) -> Database:
        return Database(self.url, self.hasher)


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres.temporary() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def platform(pg: LocalPostgres) -> Platform:
    from aiaas_db import seed_api_key_hash_key

    url = pg.create_database("platform")
    prepare_platform(url, seed_secret=SEED_SECRET)
    return Platform(
        url=url,
        token=local_dev_api_key(SEED_SECRET),
        hasher=seed_api_key_hasher(SEED_SECRET),
        hash_key=seed_api_key_hash_key(SEED_SECRET),
        organization_id=seed_uuid("organizations", "acme-pro"),
        cluster=pg,
    )


@pytest.fixture(scope="session")
def minilm() -> Any:
    from aiaas_serving import SentenceEmbeddingAdapter

    return SentenceEmbeddingAdapter.minilm()


@pytest.fixture(scope="session")
def smollm2() -> Any:
    """SmolLM2-135M-Instruct, loaded once by the service's own default loader (the chat model
    it serves by default)."""
    from inference_service._app import _load_chat_model

    return _load_chat_model("auto")


class LogCapture(io.StringIO):
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture
def log_stream() -> LogCapture:
    return LogCapture()


@pytest.fixture
def telemetry(log_stream: LogCapture) -> Iterator[Any]:
    from aiaas_telemetry import load_profile, setup

    tel = setup(
        load_profile({"service_name": "inference-service"}, environ={}),
        tracing=False,
        log_stream=log_stream,
    )
    try:
        yield tel
    finally:
        tel.shutdown()


def make_service(
    platform_db: Database, telemetry: Any, minilm: Any, *, chat: Any = None, **env: str
) -> Service:
    """The service on ``minilm``; with ``chat`` (a loaded generation model) also serving it as
    the chat model (else chat is off: most tests need embeddings only)."""
    values = {
        "INFERENCE_SERVICE_DEVICE": "cpu",
        "INFERENCE_SERVICE_CHAT": "false" if chat is None else "true",
        **env,
    }
    return Service(
        load(values, {}),
        telemetry,
        connect=platform_db.connect,
        key_store=platform_db.key_store(),
        hasher=platform_db.hasher,
        adapter_factory=lambda: minilm,
        generation_factory=None if chat is None else (lambda: chat),
    )


@asynccontextmanager
async def serve(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The full app under uvicorn on a free port (lifespan on), and an httpx client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(service),
        log_config=None,
        lifespan="on",
        http="h11",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()

"""The API key cache against aiaas-db's real ``PostgresApiKeyStore``: when a busy key's entry
expires, the requests waiting for it share one read (the fault campaign saw each of them open its
own connection, hundreds at once, with ``/health`` held up to 260 ms behind them); a read that
fails is not retried at once, and one that hangs is bounded."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from conftest import Platform
from inference_service import CachedKeyStore

from aiaas_core import ApiKeyRecord, ServiceUnavailableError, parse_api_key
from aiaas_db import PostgresApiKeyStore

WAITERS = 50


class CountingStore:
    """A real store (``PostgresApiKeyStore``) that counts the reads that reach it; ``down``
    switches to another real store whose database does not answer."""

    def __init__(self, up: PostgresApiKeyStore, down: PostgresApiKeyStore | None = None) -> None:
        self.up = up
        self.down_store = down
        self.down = False
        self.reads = 0

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        self.reads += 1
        store = self.down_store if self.down and self.down_store is not None else self.up
        return await store.get(key_id)

    async def touch(self, key_id: str, when: datetime) -> None:
        await self.up.touch(key_id, when)


def refused_dsn() -> str:
    """A DSN on a local port nobody listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2"


@pytest.fixture
async def silent_dsn() -> AsyncIterator[str]:
    """A DSN on a server that accepts connections and never answers (a hung database)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://nobody@127.0.0.1:{port}/none"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def key_id(platform: Platform) -> str:
    return parse_api_key(platform.token).key_id


async def test_requests_for_an_expired_key_share_one_read(platform: Platform) -> None:
    store = CountingStore(PostgresApiKeyStore(platform.url))
    now = [0.0]
    cache = CachedKeyStore(store, fresh_for=10, stale_for=100, clock=lambda: now[0])
    kid = key_id(platform)
    first = await asyncio.gather(*(cache.get(kid) for _ in range(WAITERS)))
    assert store.reads == 1, "requests for a key never read must share the first read"
    assert all(r is not None and r.key_id == kid for r in first)
    now[0] = 11  # expired: everyone arriving now waits for one new read
    again = await asyncio.gather(*(cache.get(kid) for _ in range(WAITERS)))
    assert store.reads == 2
    assert cache.store_reads == 2
    assert again == first
    unknown = await asyncio.gather(*(cache.get("ZZZZZZZZZZZZ") for _ in range(WAITERS)))
    assert unknown == [None] * WAITERS
    assert store.reads == 3


async def test_a_request_that_leaves_does_not_cancel_the_read_others_wait_for(
    platform: Platform,
) -> None:
    store = CountingStore(PostgresApiKeyStore(platform.url))
    cache = CachedKeyStore(store)
    kid = key_id(platform)
    leaving = asyncio.ensure_future(cache.get(kid))
    staying = asyncio.ensure_future(cache.get(kid))
    await asyncio.sleep(0)  # both are waiting for the one read
    leaving.cancel()
    record = await staying
    assert record is not None
    assert record.key_id == kid
    assert leaving.cancelled()
    assert store.reads == 1
    assert await cache.get(kid) == record  # cached by the read the leaver started
    assert store.reads == 1


async def test_a_failed_read_is_shared_logged_once_and_not_retried_at_once(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    store = CountingStore(PostgresApiKeyStore(platform.url), PostgresApiKeyStore(refused_dsn()))
    now = [0.0]
    cache = CachedKeyStore(
        store, fresh_for=10, stale_for=100, retry_after=1.0, clock=lambda: now[0]
    )
    kid = key_id(platform)
    record = await cache.get(kid)
    assert record is not None
    store.down = True
    now[0] = 50
    caplog.set_level(logging.WARNING, logger="inference_service.keys")
    served = await asyncio.gather(*(cache.get(kid) for _ in range(WAITERS)))
    assert served == [record] * WAITERS  # stale, but the database is down
    assert store.reads == 2
    assert cache.stale_reads == WAITERS
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert kid in warnings[0]
    assert "served from cache" in warnings[0]
    assert platform.token not in caplog.text
    now[0] = 50.5  # within retry_after: no new read, the cached record
    assert await cache.get(kid) == record
    with pytest.raises(ServiceUnavailableError) as caught:
        await cache.get("YYYYYYYYYYYY")  # never seen: fail closed (its own read failed)
    assert caught.value.code == "KEY_STORE_UNAVAILABLE"
    assert store.reads == 3
    store.down = False
    now[0] = 51.5  # retry_after passed and the database is back: read again, fresh
    assert await cache.get(kid) == record
    assert store.reads == 4
    now[0] = 52
    assert await cache.get(kid) == record
    assert store.reads == 4
    with pytest.raises(ValueError, match="read_timeout"):
        CachedKeyStore(store, read_timeout=0)
    with pytest.raises(ValueError, match="retry_after"):
        CachedKeyStore(store, retry_after=-1)


async def test_a_hung_database_is_bounded_by_read_timeout(
    platform: Platform, silent_dsn: str
) -> None:
    store = CountingStore(PostgresApiKeyStore(platform.url), PostgresApiKeyStore(silent_dsn))
    store.down = True
    cache = CachedKeyStore(store, read_timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        *(cache.get(key_id(platform)) for _ in range(WAITERS)), return_exceptions=True
    )
    assert loop.time() - started < 5, "the read must give up after read_timeout"
    assert all(isinstance(r, ServiceUnavailableError) for r in results), results[:3]
    assert store.reads == 1

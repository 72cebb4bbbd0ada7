"""PostgresApiKeyStore with aiaas-core's ApiKeyVerifier against the seeded ``ci`` keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import seed_support

from aiaas_core import (
    ApiKey,
    ApiKeyStore,
    ApiKeyVerifier,
    AuthenticationError,
    HashKey,
    InternalError,
    KeyedHasher,
)
from aiaas_core._apikeys import SupportsDigestUpgrade
from aiaas_db.platform._apikey_store import PostgresApiKeyStore
from aiaas_db.platform._seeds import CI_SEED_SECRET, derive_api_key, seed, seed_api_key_hash_key
from aiaas_db.platform._seeds import seed_api_key_hasher as hasher_for

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

HASHER = hasher_for(CI_SEED_SECRET)


@pytest.fixture
def ci_url(platform_url: str) -> str:
    seed(platform_url, "ci", window="1d", seed_secret=CI_SEED_SECRET)
    return platform_url


def key(name: str) -> ApiKey:
    return derive_api_key(CI_SEED_SECRET, "acme-pro", name)


def verifier(store: ApiKeyStore, hasher: KeyedHasher = HASHER, **kw: Any) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, hasher, background=False, **kw)


def execute(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


class MiniPool:
    """Lends real autocommit connections through ``connection()``, like psycopg_pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lent = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self.lent += 1
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            yield conn


async def test_valid_wrong_secret_revoked_expired_rotating(ci_url: str) -> None:
    store = PostgresApiKeyStore(ci_url)
    assert isinstance(store, ApiKeyStore)
    assert isinstance(store, SupportsDigestUpgrade)
    v = verifier(store)
    actor = await v.verify(key("local-dev").token)
    assert actor.subject == key("local-dev").key_id
    assert actor.roles == ("developer",)
    assert actor.scopes == ("completions:create", "embeddings:create", "models:read")
    record = await v.verify_record(key("local-dev").token)
    assert record.scopes == ("completions:create", "embeddings:create", "models:read")
    assert record.name == "local-dev"
    # the owner comes with the key, from the same query
    [(row_id, org_id)] = execute(
        ci_url, "SELECT api_key_id, organization_id FROM api_keys WHERE name = 'local-dev'"
    )
    assert (record.record_id, record.organization_id) == (str(row_id), str(org_id))

    wrong = ApiKey("aiaas", key("local-dev").key_id, key("default").secret)
    cases = {
        wrong.token: "API_KEY_INVALID",
        key("ci-revoked").token: "API_KEY_REVOKED",
        key("ci-expired").token: "API_KEY_EXPIRED",
        derive_api_key(CI_SEED_SECRET, "acme-pro", "never-seeded").token: "API_KEY_INVALID",
    }
    for token, code in cases.items():
        with pytest.raises(AuthenticationError) as info:
            await v.verify(token)
        assert info.value.code == code
        assert token not in str(info.value)
    # A rotating key still works until it expires.
    assert (await v.verify(key("ci-rotating").token)).kind == "api_key"


async def test_touch_records_use_and_never_goes_back(ci_url: str) -> None:
    store = PostgresApiKeyStore(ci_url)
    when = datetime(2030, 1, 1, tzinfo=UTC)
    v = verifier(store, clock=lambda: when)
    await v.verify(key("local-dev").token)
    stored = execute(ci_url, "SELECT last_used_at FROM api_keys WHERE name = 'local-dev'")
    assert stored == [(when,)]
    await store.touch(key("local-dev").key_id, when - timedelta(days=1))
    record = await store.get(key("local-dev").key_id)
    assert record is not None
    assert record.last_used_at == when
    await store.touch("nosuchkey000", when)  # unknown: ignored
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.touch(key("local-dev").key_id, datetime(2030, 1, 1))  # noqa: DTZ001


async def test_digest_upgrade_after_hash_key_rotation(ci_url: str) -> None:
    old = HashKey("v1", bytes.fromhex(seed_api_key_hash_key(CI_SEED_SECRET)))
    rotated = KeyedHasher([old, HashKey("v2", b"n" * 32)], "v2")
    store = PostgresApiKeyStore(ci_url)
    v = verifier(store, rotated, touch_interval=None)
    await v.verify(key("local-dev").token)
    digest = execute(ci_url, "SELECT hashed_secret FROM api_keys WHERE name = 'local-dev'")[0][0]
    assert digest.startswith("hmac-sha256$v2$")
    assert rotated.verify(key("local-dev").secret, digest)
    # Compare-and-set: a stale "old" value replaces nothing.
    assert not await store.replace_digest(key("local-dev").key_id, "stale", digest)
    assert await store.replace_digest(key("local-dev").key_id, digest, digest)


async def test_inactive_organisation_keys_are_revoked(ci_url: str) -> None:
    store = PostgresApiKeyStore(ci_url)
    v = verifier(store)
    for change in (
        "UPDATE organizations SET status = 'suspended' WHERE slug = 'acme-pro'",
        "UPDATE organizations SET status = 'closed' WHERE slug = 'acme-pro'",
        "UPDATE organizations SET status = 'active', deleted_at = now() WHERE slug = 'acme-pro'",
    ):
        execute(ci_url, change)
        with pytest.raises(AuthenticationError) as info:
            await v.verify(key("local-dev").token)
        assert info.value.code == "API_KEY_REVOKED"
    execute(ci_url, "UPDATE organizations SET deleted_at = NULL WHERE slug = 'acme-pro'")
    assert (await v.verify(key("local-dev").token)).kind == "api_key"


@pytest.mark.parametrize("autocommit", [True, False])
async def test_shared_connection_source(ci_url: str, autocommit: bool) -> None:
    async with await psycopg.AsyncConnection.connect(ci_url, autocommit=autocommit) as conn:
        store = PostgresApiKeyStore(conn)
        v = verifier(store)
        when = datetime(2031, 5, 5, tzinfo=UTC)
        await store.touch(key("local-dev").key_id, when)
        assert (await v.verify_record(key("local-dev").token)).last_used_at == when
    # The touch was committed, whatever the connection's mode.
    assert execute(ci_url, "SELECT last_used_at FROM api_keys WHERE name = 'local-dev'") == [
        (when,)
    ]


async def test_pool_source(ci_url: str) -> None:
    pool = MiniPool(ci_url)
    store = PostgresApiKeyStore(pool)
    assert await store.get(key("local-dev").key_id) is not None
    assert await store.get("missingkey00") is None
    assert pool.lent == 2
    assert "MiniPool" in repr(store)
    assert "postgresql" not in repr(store)


async def test_malformed_row_is_an_internal_error(ci_url: str) -> None:
    execute(
        ci_url,
        "UPDATE api_keys SET hashed_secret = 'plain-secret-by-mistake' WHERE name = 'local-dev'",
    )
    store = PostgresApiKeyStore(ci_url)
    with pytest.raises(InternalError) as info:
        await store.get(key("local-dev").key_id)
    assert info.value.code == "API_KEY_RECORD_INVALID"
    assert "plain-secret-by-mistake" not in str(info.value)


def test_bad_source() -> None:
    with pytest.raises(TypeError, match="AsyncConnection"):
        PostgresApiKeyStore(42)  # type: ignore[arg-type]
    assert repr(PostgresApiKeyStore("postgresql://u:pw@h/db")) == "PostgresApiKeyStore(<dsn>)"

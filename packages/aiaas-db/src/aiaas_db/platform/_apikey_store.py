"""``PostgresApiKeyStore``: aiaas-core's :class:`~aiaas_core.ApiKeyStore` over ``api_keys``.

Give it to :class:`aiaas_core.ApiKeyVerifier` to authenticate requests against the platform
database::

    pool = psycopg_pool.AsyncConnectionPool(dsn, open=False)
    await pool.open()
    verifier = ApiKeyVerifier(PostgresApiKeyStore(pool), hasher)
    actor = await verifier.verify(token)

It also implements ``SupportsDigestUpgrade`` (digests are replaced, compare-and-set, after a hash
key rotation). The secret never reaches the database: lookups are by the public ``key_id``, and
only the keyed digest in ``hashed_secret`` is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import psycopg

if TYPE_CHECKING:
    from aiaas_core import ApiKeyRecord

__all__ = ["PostgresApiKeyStore"]

logger = logging.getLogger("aiaas.db.apikeys")

#: Organisation states whose keys no longer authenticate (reported as ``revoked``).
_INACTIVE_ORG: Final = ("closed", "suspended")

_SELECT: Final = (
    "SELECT k.key_id, k.hashed_secret, k.created_at, k.name, k.roles, k.scopes,"
    " CASE WHEN o.deleted_at IS NOT NULL OR o.status = ANY(%s) THEN 'revoked' ELSE k.status END,"
    " k.expires_at, k.last_used_at, k.api_key_id, k.organization_id"
    " FROM api_keys k JOIN organizations o ON o.organization_id = k.organization_id"
    " WHERE k.key_id = %s"
)
_TOUCH: Final = (
    "UPDATE api_keys SET last_used_at = %s"
    " WHERE key_id = %s AND (last_used_at IS NULL OR last_used_at < %s)"
)
_REPLACE: Final = "UPDATE api_keys SET hashed_secret = %s WHERE key_id = %s AND hashed_secret = %s"


class AsyncConnectionSource(Protocol):
    """Anything with ``connection()`` lending an async connection (a psycopg_pool pool)."""

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...


class PostgresApiKeyStore:
    """API key records from the ``api_keys`` table of the platform schema.

    ``source`` is a psycopg ``AsyncConnection`` (shared; calls are serialised), a connection pool
    (``psycopg_pool.AsyncConnectionPool`` or anything with an async ``connection()`` context
    manager; recommended for services) or a DSN (one short connection per call).

    Mapping to :class:`aiaas_core.ApiKeyRecord`: ``hashed_secret`` is the digest, ``name``,
    ``roles``, ``scopes``, ``status``, ``expires_at`` and ``last_used_at`` as stored; ``subject``
    is left empty (the verifier then uses the public key id); ``organization_id`` and
    ``record_id`` (the row's ``api_key_id``) are the uuids as text, read by the same query, so a
    service bills a request without a second lookup. A key of an organisation that is
    closed, suspended or soft-deleted is reported as ``revoked``. Database errors propagate
    unchanged (the verifier's caller answers them as 503).
    """

    def __init__(self, source: psycopg.AsyncConnection[Any] | AsyncConnectionSource | str) -> None:
        if not isinstance(source, (psycopg.AsyncConnection, str)) and not callable(
            getattr(source, "connection", None)
        ):
            raise TypeError(
                "source must be a psycopg AsyncConnection, a pool with connection(), or a DSN, "
                f"got {type(source).__name__}"
            )
        self._source = source
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        kind = "dsn" if isinstance(self._source, str) else type(self._source).__name__
        return f"PostgresApiKeyStore(<{kind}>)"

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        source = self._source
        if isinstance(source, str):
            conn = await psycopg.AsyncConnection.connect(
                source, autocommit=True, application_name="aiaas-db api keys"
            )
            async with conn:
                yield conn
        elif isinstance(source, psycopg.AsyncConnection):
            async with self._lock:
                if source.autocommit:
                    yield source
                else:
                    async with source.transaction():
                        yield source
        else:
            async with source.connection() as conn:
                yield conn

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record of ``key_id``, or ``None`` when there is no such key."""
        from aiaas_core import ApiKeyRecord, InternalError  # noqa: PLC0415 -- keeps imports cheap

        async with self._conn() as conn:
            cur = await conn.execute(_SELECT, (list(_INACTIVE_ORG), key_id))
            row = await cur.fetchone()
        if row is None:
            return None
        try:
            return ApiKeyRecord(
                key_id=row[0],
                digest=row[1],
                created_at=row[2],
                name=row[3],
                roles=tuple(row[4] or ()),
                scopes=tuple(row[5] or ()),
                status=row[6],
                expires_at=row[7],
                last_used_at=row[8],
                record_id=str(row[9]),
                organization_id=str(row[10]),
            )
        except (TypeError, ValueError) as exc:
            # Never echo the row: hashed_secret may hold something that must not be logged.
            logger.error("api_keys row of key %s is not a valid record: %s", key_id, type(exc))
            raise InternalError(
                f"the stored API key {key_id!r} is malformed",
                detail="its api_keys row does not describe a valid key; fix or revoke it",
                code="API_KEY_RECORD_INVALID",
            ) from None

    async def touch(self, key_id: str, when: datetime) -> None:
        """Set ``last_used_at`` to ``when`` unless it is already later; unknown keys: no-op."""
        if when.tzinfo is None:
            raise ValueError("when must be a timezone-aware datetime")
        async with self._conn() as conn:
            await conn.execute(_TOUCH, (when, key_id, when))

    async def replace_digest(self, key_id: str, old: str, new: str) -> bool:
        """Set ``hashed_secret`` to ``new`` only while it is still ``old``; whether it was."""
        async with self._conn() as conn:
            cur = await conn.execute(_REPLACE, (new, key_id, old))
            return cur.rowcount == 1

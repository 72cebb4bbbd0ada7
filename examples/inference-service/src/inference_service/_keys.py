"""API keys from aiaas-db's ``api_keys`` table, cached so a database outage does not stop traffic.

:class:`CachedKeyStore` wraps any :class:`aiaas_core.ApiKeyStore`: a record read within
``fresh_for`` seconds is served from memory; an older one is read again, and when that read fails
(the database is down) a record read within ``stale_for`` seconds is served instead, so keys that
were in use keep working through an outage while unknown keys fail closed (503). A revoked key
stops working within ``fresh_for`` seconds while the database is up.

:class:`KeyDirectory` maps a public key id to the ``api_key_id`` and ``organization_id`` a usage
event needs (immutable facts, cached for the life of the process). aiaas-db's
``PostgresApiKeyStore`` returns both with the key (``ApiKeyRecord.record_id`` and
``organization_id``), so :meth:`KeyDirectory.learn` needs no query; only a store that does not
know them costs one lookup per key.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs

from aiaas_core import AiaasError, ApiKeyRecord, ApiKeyStore, ServiceUnavailableError

__all__ = ["CachedKeyStore", "KeyDirectory", "KeyOwner"]

logger = logging.getLogger("inference_service.keys")


class CachedKeyStore:
    """An :class:`~aiaas_core.ApiKeyStore` with a freshness window and stale-if-error reads.

    A store failure with nothing usable cached becomes :class:`aiaas_core.ServiceUnavailableError`
    (503 ``KEY_STORE_UNAVAILABLE`` with ``Retry-After``): the client's key may be fine.
    """

    def __init__(
        self,
        inner: ApiKeyStore,
        *,
        fresh_for: float = 30.0,
        stale_for: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        if not 0 < fresh_for <= stale_for:
            raise ValueError("need 0 < fresh_for <= stale_for (seconds)")
        self._inner = inner
        self.fresh_for = fresh_for
        self.stale_for = stale_for
        self._clock = clock
        self._max = max_entries
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self.stale_reads = 0

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.fresh_for:
            return hit[1]
        try:
            record = await self._inner.get(key_id)
        except AiaasError:
            raise
        except Exception as exc:
            if hit is not None and hit[1] is not None and now - hit[0] < self.stale_for:
                self.stale_reads += 1
                logger.warning("API key store unavailable: serving key %s from cache", key_id)
                return hit[1]
            logger.warning(
                "API key store unavailable (%s): key %s cannot be checked",
                type(exc).__name__,
                key_id,
            )
            raise ServiceUnavailableError(
                "API keys cannot be checked right now: retry shortly",
                retry_after=5,
                code="KEY_STORE_UNAVAILABLE",
            ) from exc
        if len(self._cache) >= self._max:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key_id] = (now, record)
        return record

    async def touch(self, key_id: str, when: datetime) -> None:
        try:
            await self._inner.touch(key_id, when)
        except Exception:  # bookkeeping only: never fail a request for it
            logger.info("could not record the use of API key %s", key_id, exc_info=True)


@attrs.frozen
class KeyOwner:
    """Whose key it is: the ``api_keys`` row id and its organisation."""

    api_key_id: uuid.UUID
    organization_id: uuid.UUID


Lookup = Callable[[str], Awaitable[KeyOwner | None]]


class KeyDirectory:
    """``key_id`` -> :class:`KeyOwner`: from the key's record when it carries its owner, else
    read once per key from ``api_keys``. Holds at most ``max_entries`` keys (oldest dropped)."""

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], *, max_entries: int = 100_000
    ) -> None:
        self._connect = connect
        self._max = max_entries
        self._owners: OrderedDict[str, KeyOwner] = OrderedDict()

    def _keep(self, key_id: str, owner: KeyOwner) -> KeyOwner:
        self._owners[key_id] = owner
        self._owners.move_to_end(key_id)
        if len(self._owners) > self._max:
            self._owners.popitem(last=False)
        return owner

    async def learn(self, record: ApiKeyRecord) -> KeyOwner | None:
        """The owner of ``record``'s key: from the record itself when the store filled
        ``record_id`` and ``organization_id`` (no query), else :meth:`owner`."""
        if record.record_id is not None and record.organization_id is not None:
            known = self._owners.get(record.key_id)
            if known is not None:
                return known
            return self._keep(
                record.key_id,
                KeyOwner(
                    api_key_id=uuid.UUID(record.record_id),
                    organization_id=uuid.UUID(record.organization_id),
                ),
            )
        return await self.owner(record.key_id)

    async def owner(self, key_id: str) -> KeyOwner | None:
        """The owner of ``key_id`` (one ``api_keys`` query the first time; None if unknown)."""
        known = self._owners.get(key_id)
        if known is not None:
            return known
        async with await self._connect() as conn:
            cur = await conn.execute(
                "SELECT api_key_id, organization_id FROM api_keys WHERE key_id = %s", (key_id,)
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return self._keep(key_id, KeyOwner(api_key_id=row[0], organization_id=row[1]))

    def cached(self, key_id: str) -> KeyOwner | None:
        return self._owners.get(key_id)

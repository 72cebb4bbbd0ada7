"""API keys from aiaas-db's ``api_keys`` table, cached so a database outage does not stop traffic.

:class:`CachedKeyStore` wraps any :class:`aiaas_core.ApiKeyStore`: a record read within
``fresh_for`` seconds is served from memory; an older one is read again, and when that read fails
(the database is down) a record read within ``stale_for`` seconds is served instead, so keys that
were in use keep working through an outage while unknown keys fail closed (503). A revoked key
stops working within ``fresh_for`` seconds while the database is up. One read per key is in
flight at a time: the requests that find the same key expired wait for that read (the fault
campaign saw every request of a busy key open its own connection when the entry expired,
hundreds at once, holding the event loop and ``/health`` for up to 260 ms); a read is bounded by
``read_timeout`` seconds, and after a failed read the key is not read again for ``retry_after``
seconds (the cached record, or 503, meanwhile).

:class:`KeyDirectory` maps a public key id to the ``api_key_id`` and ``organization_id`` a usage
event needs (immutable facts, cached for the life of the process). aiaas-db's
``PostgresApiKeyStore`` returns both with the key (``ApiKeyRecord.record_id`` and
``organization_id``), so :meth:`KeyDirectory.learn` needs no query; only a store that does not
know them costs one lookup per key.
"""

from __future__ import annotations

import asyncio
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
        read_timeout: float = 5.0,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        if not 0 < fresh_for <= stale_for:
            raise ValueError("need 0 < fresh_for <= stale_for (seconds)")
        if read_timeout <= 0 or retry_after < 0:
            raise ValueError(
                f"need read_timeout > 0 and retry_after >= 0 (seconds), got {read_timeout} and"
                f" {retry_after}"
            )
        self._inner = inner
        self.fresh_for = fresh_for
        self.stale_for = stale_for
        self.read_timeout = read_timeout
        self.retry_after = retry_after
        self._clock = clock
        self._max = max_entries
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._reads: dict[str, asyncio.Future[ApiKeyRecord | None]] = {}
        self._failed_at: dict[str, float] = {}
        self.stale_reads = 0
        #: Reads of the inner store (a read shared by several requests counts once).
        self.store_reads = 0

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.fresh_for:
            return hit[1]
        failed_at = self._failed_at.get(key_id)
        if failed_at is not None and now - failed_at < self.retry_after:
            return self._stale(hit, now, None)
        read = self._reads.get(key_id)
        if read is None:
            read = asyncio.ensure_future(self._read(key_id))
            self._reads[key_id] = read
            read.add_done_callback(lambda _: self._reads.pop(key_id, None))
        try:
            # shielded: a request that goes away does not cancel the read others wait for
            return await asyncio.shield(read)
        except AiaasError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any store failure: stale record or 503
            return self._stale(hit, now, exc)

    def _stale(
        self, hit: tuple[float, ApiKeyRecord | None] | None, now: float, exc: Exception | None
    ) -> ApiKeyRecord:
        """The store cannot be read: the cached record if recent enough, else 503."""
        if hit is not None and hit[1] is not None and now - hit[0] < self.stale_for:
            self.stale_reads += 1
            return hit[1]
        raise ServiceUnavailableError(
            "API keys cannot be checked right now: retry shortly",
            retry_after=5,
            code="KEY_STORE_UNAVAILABLE",
        ) from exc

    async def _read(self, key_id: str) -> ApiKeyRecord | None:
        """One read of ``key_id`` from the inner store, cached; a failure is logged once here
        (not by each request waiting for it) and raised to every waiter."""
        self.store_reads += 1
        started = self._clock()
        try:
            async with asyncio.timeout(self.read_timeout):
                record = await self._inner.get(key_id)
        except AiaasError:
            raise
        except Exception as exc:
            if len(self._failed_at) >= self._max:
                self._failed_at.pop(next(iter(self._failed_at)))
            self._failed_at[key_id] = self._clock()
            hit = self._cache.get(key_id)
            usable = hit is not None and hit[1] is not None and started - hit[0] < self.stale_for
            logger.warning(
                "API key store unavailable (%s): key %s %s",
                type(exc).__name__,
                key_id,
                "served from cache" if usable else "cannot be checked",
            )
            raise
        self._failed_at.pop(key_id, None)
        if len(self._cache) >= self._max and key_id not in self._cache:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key_id] = (started, record)
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

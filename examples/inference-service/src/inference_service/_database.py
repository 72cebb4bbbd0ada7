"""The platform database the service uses: the configured one, or a local one for development.

With ``INFERENCE_SERVICE_DATABASE_URL`` set the service uses that database as it is (its schema
is managed with ``aiaas-db migrate``) and verifies keys with ``INFERENCE_SERVICE_API_KEY_HASH_KEY``.

Without it (local development) :func:`open_database` starts aiaas-db's local PostgreSQL (in
``INFERENCE_SERVICE_LOCAL_DATA_DIR``, kept between runs, or a throwaway cluster), applies the
platform schema (both components), loads the ``local-dev`` seed (idempotent) and verifies keys
with the hash key derived from the seed secret (``AIAAS_DB_SEED_SECRET`` or aiaas-db's published
local-dev default). The cluster is stopped again when the service exits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from aiaas_core import AiaasError, KeyedHasher

__all__ = ["Database", "DatabaseError", "open_database", "prepare_platform"]

logger = logging.getLogger("inference-service")


class DatabaseError(Exception):
    """The platform database could not be reached or prepared (the message says why)."""


def _minilm() -> Any:
    from aiaas_serving import SentenceEmbeddingAdapter  # noqa: PLC0415 -- torch is heavy

    return SentenceEmbeddingAdapter.minilm()


@attrs.frozen
class Database:
    """Where the service's keys and usage live, and how to reach it."""

    url: str = attrs.field(repr=False)
    hasher: KeyedHasher = attrs.field(repr=False)
    local: bool = False
    adapter_factory: Callable[[], Any] = _minilm

    async def connect(self) -> Any:
        """A new autocommit psycopg ``AsyncConnection`` (the caller closes it)."""
        import psycopg  # noqa: PLC0415

        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=5, application_name="inference-service"
        )

    def key_store(self) -> Any:
        """aiaas-db's ``PostgresApiKeyStore`` over this database (a short connection per read;
        the service caches what it reads)."""
        from aiaas_db import PostgresApiKeyStore  # noqa: PLC0415

        return PostgresApiKeyStore(self.url)


def prepare_platform(url: str, *, seed_secret: str, actor: str = "inference-service") -> None:
    """Apply the platform schema to ``url`` and load the ``local-dev`` seed (both idempotent)."""
    from aiaas_db import (  # noqa: PLC0415
        PLATFORM_COMPONENTS,
        Migrator,
        PiiProtector,
        platform_source,
        seed,
    )

    protector = PiiProtector.for_local_development(seed_secret)
    for component in PLATFORM_COMPONENTS:
        Migrator(
            url, platform_source(component), component=component, actor=actor, protector=protector
        ).up()
    report = seed(url, "local-dev", seed_secret=seed_secret, protector=protector)
    logger.info(
        "local platform database ready",
        extra={"seeded": report.changed, "hint": "aiaas-db seed --package local-dev --output json"},
    )


@contextmanager
def open_database(settings: Any, environ: Mapping[str, str]) -> Iterator[Database]:
    """The database for ``settings`` (see the module docs); raises :class:`DatabaseError`."""
    if settings.database_url is not None:
        hasher = settings.hasher()
        assert hasher is not None  # settings.load() requires the hash key with a database URL
        yield Database(settings.database_url.get_secret_value(), hasher)
        return
    from aiaas_db import (  # noqa: PLC0415
        LocalPostgres,
        resolve_seed_secret,
        seed_api_key_hasher,
    )

    secret = resolve_seed_secret("local-dev", environ)
    try:
        if settings.local_data_dir is not None:
            cluster = LocalPostgres(data_dir=settings.local_data_dir)
        else:
            cluster = LocalPostgres.temporary()
    except AiaasError as exc:
        raise DatabaseError(str(exc)) from exc
    try:
        with cluster:
            url = cluster.create_database("aiaas")
            prepare_platform(url, seed_secret=secret)
            yield Database(url, seed_api_key_hasher(secret), local=True)
    except AiaasError as exc:
        raise DatabaseError(f"local PostgreSQL: {exc}") from exc

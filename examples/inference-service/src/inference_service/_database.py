"""The platform database the service uses: the configured one, or a local one for development.

With ``INFERENCE_SERVICE_DATABASE_URL`` set the service uses that database as it is (its schema
is managed with ``aiaas-db migrate``) and verifies keys with ``INFERENCE_SERVICE_API_KEY_HASH_KEY``.

Without it (local development) :func:`open_database` starts aiaas-db's local PostgreSQL (in
``INFERENCE_SERVICE_LOCAL_DATA_DIR``, kept between runs, or a throwaway cluster), applies the
platform schema (both components), loads the ``local-dev`` seed (idempotent) and verifies keys
with the hash key derived from the seed secret (``AIAAS_DB_SEED_SECRET`` or aiaas-db's published
local-dev default). The cluster is stopped again when the service exits, unless it was already
running before (``aiaas-db local start``): then it is left running. ``fresh=True`` deletes the
data directory's cluster first (the database starts empty).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from aiaas_core import AiaasError, KeyedHasher

__all__ = ["Database", "DatabaseError", "open_database", "prepare_platform", "remove_cluster"]

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
    #: Local mode: the cluster's folder (``None`` for a throwaway cluster or a database URL).
    data_dir: Path | None = None
    #: Local mode: the server, e.g. ``PostgreSQL 18.1, embedded``.
    server: str | None = None
    #: Local mode: the seeded ``local-dev`` key's token (show it to the developer; never log it).
    api_key: str | None = attrs.field(default=None, repr=False)

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


def remove_cluster(data_dir: Path) -> bool:
    """Delete the local PostgreSQL cluster in ``data_dir`` (stopping it first); returns whether
    there was one. Refuses a folder that holds something other than a cluster."""
    from aiaas_db import LocalPostgres  # noqa: PLC0415

    if not data_dir.exists():
        return False
    if not data_dir.is_dir():
        raise DatabaseError(f"--data-dir {data_dir} is a file, not a folder: choose a folder")
    if not any(data_dir.iterdir()):
        return False
    if not (
        (data_dir / "data" / "PG_VERSION").is_file() or (data_dir / "aiaas-local.json").is_file()
    ):
        raise DatabaseError(
            f"--fresh refuses to delete {data_dir}: it holds no local PostgreSQL cluster (no"
            " data/PG_VERSION); choose another --data-dir or empty the folder yourself"
        )
    cluster = LocalPostgres(data_dir)
    try:
        cluster.stop()
    except AiaasError as exc:
        raise DatabaseError(f"--fresh could not stop the cluster in {data_dir}: {exc}") from exc
    shutil.rmtree(data_dir)
    return True


def _describe_server(cluster: Any) -> str:
    info = cluster.info().to_dict()
    source = info.get("source")
    return f"PostgreSQL {info['version']}" + (f", {source}" if source else "")


@contextmanager
def open_database(
    settings: Any, environ: Mapping[str, str], *, fresh: bool = False
) -> Iterator[Database]:
    """The database for ``settings`` (see the module docs); raises :class:`DatabaseError`."""
    if settings.database_url is not None:
        if fresh:
            raise DatabaseError("--fresh needs local mode: it cannot empty a database given by URL")
        hasher = settings.hasher()
        assert hasher is not None  # settings.load() requires the hash key with a database URL
        yield Database(settings.database_url.get_secret_value(), hasher)
        return
    from aiaas_db import (  # noqa: PLC0415
        LocalPostgres,
        local_dev_api_key,
        resolve_seed_secret,
        seed_api_key_hasher,
    )

    secret = resolve_seed_secret("local-dev", environ)
    data_dir: Path | None = settings.local_data_dir
    try:
        if data_dir is not None:
            if fresh and remove_cluster(data_dir):
                logger.warning(
                    "--fresh: deleted the local PostgreSQL cluster, starting from an empty one",
                    extra={"data_dir": str(data_dir)},
                )
            cluster = LocalPostgres(data_dir)
        else:
            cluster = LocalPostgres.temporary()
    except (AiaasError, OSError, ValueError) as exc:  # ValueError: a damaged state file
        raise DatabaseError(f"local PostgreSQL in {data_dir}: {exc}") from exc
    already_running = cluster.running
    if already_running:
        logger.warning(
            "local PostgreSQL was already running (aiaas-db local start, or a run that did not"
            " stop it): it is used and left running on exit",
            extra={
                "data_dir": str(data_dir),
                "stop_with": f"aiaas-db local stop --data-dir {data_dir}",
            },
        )
    try:
        cluster.start()
        url = cluster.create_database("aiaas")
        server = _describe_server(cluster)
        logger.info(
            "local PostgreSQL running",
            extra={"data_dir": str(data_dir) if data_dir else None, "server": server},
        )
        prepare_platform(url, seed_secret=secret)
        database = Database(
            url,
            seed_api_key_hasher(secret),
            local=True,
            data_dir=data_dir,
            server=server,
            api_key=local_dev_api_key(secret),
        )
    except BaseException as exc:
        _stop(cluster, already_running, quiet=True)
        if isinstance(exc, AiaasError | OSError):
            raise DatabaseError(f"local PostgreSQL: {exc}") from exc
        raise
    try:
        yield database
    finally:
        _stop(cluster, already_running, quiet=False)


def _stop(cluster: Any, already_running: bool, *, quiet: bool) -> None:
    """Stop the cluster unless it ran before; ``quiet``: log a failure instead of raising it
    (while another error is on its way out)."""
    where = {"data_dir": str(cluster.base_dir) if cluster.persistent else None}
    if already_running:
        logger.info("local PostgreSQL left running: it was running before", extra=where)
        return
    try:
        cluster.stop()
    except AiaasError as exc:
        logger.error("local PostgreSQL could not be stopped: %s", exc, extra=where)
        if quiet:
            return
        raise DatabaseError(f"local PostgreSQL could not be stopped: {exc}") from exc
    logger.info("local PostgreSQL stopped", extra=where)

"""``aiaas-db serve``: the schema management API under uvicorn (the ``serve`` extra).

API keys are configured the way every aiaas service does it: an environment variable holds
``subject:key_id:role[+role]:digest`` entries (keyed digests, never secrets) and another the HMAC
key the digests were made with. ``aiaas-db serve --issue-key platform-engineer`` prints a new key
and its entry.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from aiaas_db.cli._common import Output, resolve_dsn

if TYPE_CHECKING:
    from aiaas_core import Actor, ApiKeyRecord, KeyedHasher

__all__ = ["DEFAULT_HASH_KEY_ENV", "DEFAULT_KEYS_ENV"]

DEFAULT_KEYS_ENV: Final = "AIAAS_DB_API_KEYS"
DEFAULT_HASH_KEY_ENV: Final = "AIAAS_DB_API_KEY_HASH_KEY"
HASH_KEY_VERSION: Final = "v1"
SERVICE_NAME: Final = "aiaas-db"


def _hasher(environ: Mapping[str, str], name: str) -> KeyedHasher | None:
    from aiaas_core import HashKey, KeyedHasher  # noqa: PLC0415 -- keeps --help fast

    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return KeyedHasher([HashKey.from_text(HASH_KEY_VERSION, value)], HASH_KEY_VERSION)
    except ValueError as exc:
        raise click.UsageError(f"${name} is not a usable HMAC key: {exc}") from None


def _records(environ: Mapping[str, str], name: str) -> list[ApiKeyRecord]:
    from aiaas_core import parse_api_key_entries  # noqa: PLC0415 -- keeps --help fast

    try:
        return parse_api_key_entries(environ.get(name, ""))
    except ValueError as exc:  # "entry N: ..." (the entry itself never appears)
        raise click.UsageError(f"${name} {exc}") from None


async def _no_keys(_credential: str) -> Actor:
    from aiaas_core import AuthenticationError  # noqa: PLC0415

    raise AuthenticationError(
        "Authentication failed: this server has no API keys configured", code="API_KEY_INVALID"
    )


@click.command("serve")
@click.option(
    "--dsn",
    envvar="AIAAS_DB_URL",
    help="PostgreSQL URL (env AIAAS_DB_URL). Without it the local cluster of `aiaas-db local`.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8085, show_default=True, help="TCP port."
)
@click.option(
    "--keys-env",
    default=DEFAULT_KEYS_ENV,
    show_default=True,
    help="Variable holding the API keys: subject:key_id:role[+role]:digest entries.",
)
@click.option(
    "--hash-key-env",
    default=DEFAULT_HASH_KEY_ENV,
    show_default=True,
    help="Variable holding the HMAC key (32+ bytes) the key digests were made with.",
)
@click.option(
    "--classification",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AIAAS_DB_CLASSIFICATION",
    help="A data-classification map (contracts/data-classification.yml format) for the "
    "entities (default: the platform's own map).",
)
@click.option(
    "--rollup-target",
    default="postgres",
    show_default=True,
    envvar="AIAAS_ROLLUP_TARGET",
    help="Rollup target the rollup trigger runs against (see `aiaas-db rollup`).",
)
@click.option("--schema", default="public", show_default=True, help="Schema of the tables.")
@click.option(
    "--env", "environment", envvar="AIAAS_ENV", help="Environment (production: dual approval)."
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds a run waits for the migration lock once accepted.",
)
@click.option(
    "--issue-key",
    metavar="ROLE[,ROLE]",
    help="Print a new API key and its entry for --keys-env, then exit.",
)
@click.option("--subject", default="operator", show_default=True, help="Owner of --issue-key.")
def serve(
    *,
    dsn: str | None,
    host: str,
    port: int,
    keys_env: str,
    hash_key_env: str,
    classification: Path | None,
    rollup_target: str,
    schema: str,
    environment: str | None,
    lock_timeout: float,
    issue_key: str | None,
    subject: str,
) -> None:
    """Serve the schema management API (contracts/schema-management.yaml) until SIGTERM.

    Applying, rolling back and running rollups need the platform-engineer role; app-team and
    read-only may read entities and run status. /health, /ready and /metrics are public.
    """
    from aiaas_core import (  # noqa: PLC0415 -- keeps --help fast
        ApiKeyVerifier,
        InMemoryApiKeyStore,
        ServiceUnavailableError,
    )
    from aiaas_core import serve as serve_app  # noqa: PLC0415

    environ = os.environ
    hasher = _hasher(environ, hash_key_env)
    if issue_key is not None:
        if hasher is None:
            raise click.UsageError(f"--issue-key needs ${hash_key_env} (the HMAC key)")
        roles = [r.strip() for r in issue_key.split(",") if r.strip()]
        key, record = ApiKeyVerifier(InMemoryApiKeyStore(), hasher).issue(
            subject=subject, roles=roles
        )
        click.echo(f"API key (shown once; hand it to its owner): {key.token}")
        click.echo(
            f"{keys_env} entry (a digest, safe to store): "
            f"{subject}:{record.key_id}:{'+'.join(record.roles)}:{record.digest}"
        )
        return
    records = _records(environ, keys_env)
    if records and hasher is None:
        raise click.UsageError(f"${keys_env} is set but ${hash_key_env} (the HMAC key) is not")
    if importlib.util.find_spec("uvicorn") is None:  # pragma: no cover - the `serve` extra
        raise click.ClickException("aiaas-db serve needs uvicorn: pip install 'aiaas-db[serve]'")
    from aiaas_db.platform._classification import (  # noqa: PLC0415
        ClassificationError,
        load_classification,
    )
    from aiaas_db.server import SchemaApi, create_schema_app, default_rollup_trigger  # noqa: PLC0415
    from aiaas_telemetry import load_profile, setup  # noqa: PLC0415

    try:
        classes = load_classification(classification) if classification is not None else None
    except ClassificationError as exc:
        raise click.UsageError(exc.message) from None
    url = resolve_dsn(dsn, Output("text"))
    telemetry = setup(load_profile({"service_name": SERVICE_NAME}), tracing=False)
    log = logging.getLogger("aiaas.db.serve")
    try:
        api = SchemaApi(
            url,
            rollups=default_rollup_trigger(url, rollup_target),
            classification="platform" if classes is None else classes,
            schema=schema,
            environment=environment,
            lock_timeout=lock_timeout,
        )
        authenticate: Any = (
            _no_keys
            if hasher is None
            else ApiKeyVerifier(InMemoryApiKeyStore(records), hasher, touch_interval=None).verify
        )
        app = create_schema_app(api, telemetry=telemetry, authenticate=authenticate)
        try:
            stopped_by = serve_app(app, host=host, port=port, graceful_timeout=10)
        except ServiceUnavailableError as exc:  # SERVER_START_FAILED: address taken, startup
            raise click.ClickException(exc.message) from None
        log.info(
            "aiaas-db serve stopped", extra={"signal": stopped_by.name if stopped_by else None}
        )
    finally:
        telemetry.shutdown()

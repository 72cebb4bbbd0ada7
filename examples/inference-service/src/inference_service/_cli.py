"""``inference-service --host H --port P``: serve embeddings under uvicorn until SIGTERM/SIGINT.

With ``INFERENCE_SERVICE_DATABASE_URL`` unset, the service starts aiaas-db's local PostgreSQL,
applies the platform schema and loads the ``local-dev`` seed first (local development): the
seeded key is printed by ``aiaas-db seed --package local-dev --output json``, never by this
service.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from aiaas_core import ConfigError, settings_summary, signals_end_normally
from aiaas_telemetry import load_profile, setup
from inference_service import _settings
from inference_service._settings import SERVICE_NAME

__all__ = ["main"]

__version__ = "0.1.0"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SERVICE_NAME,
        description=(
            "Serve OpenAI-compatible POST /v1/embeddings (all-MiniLM-L6-v2 on aiaas-serving's"
            " batching runtime) with API keys from the platform database, usage events, /health,"
            " /ready and /metrics, until SIGTERM or SIGINT (which drain accepted requests and"
            " flush usage before exit)."
        ),
        epilog=(
            "Configuration: INFERENCE_SERVICE_HOST, _PORT (the flags win), _DATABASE_URL (unset:"
            " local PostgreSQL, migrated and seeded), _API_KEY_HASH_KEY, _MODEL, _DEVICE,"
            " _MAX_BATCH_SIZE, _MAX_QUEUE, _REQUEST_TIMEOUT, _REGION, _USAGE_BUFFER, _USAGE_BATCH,"
            " _USAGE_FLUSH_INTERVAL, _GRACEFUL_TIMEOUT, _LOCAL_DATA_DIR, _TRACING, and OTEL_*."
            " Local mode also reads AIAAS_DB_SEED_SECRET. Exit codes: 0 after a clean shutdown,"
            " 1 when the server could not start, 2 for a usage or configuration error, 3 when the"
            " database could not be prepared."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8080)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    import os  # noqa: PLC0415

    args = _parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = _settings.load(env, overrides)
        profile = load_profile({"service_name": SERVICE_NAME}, environ=env)
    except ConfigError as exc:
        sys.stderr.write(f"{SERVICE_NAME}: {exc.message}\n")
        return EXIT_USAGE
    try:
        telemetry = setup(
            profile,
            tracing=settings.tracing,
            service_version=__version__,
            config_summary=settings_summary(settings),
            environ=env,
            gil_switch_interval_s=0.001,
        )
    except ConfigError as exc:
        sys.stderr.write(f"{SERVICE_NAME}: {exc.message}\n")
        return EXIT_USAGE
    log = logging.getLogger(SERVICE_NAME)
    try:
        with ExitStack() as stack:
            from inference_service._database import DatabaseError, open_database  # noqa: PLC0415

            try:
                database = stack.enter_context(open_database(settings, env))
            except DatabaseError as exc:
                log.error("the platform database could not be prepared: %s", exc)
                sys.stderr.write(f"{SERVICE_NAME}: {exc}\n")
                return EXIT_DATABASE
            return _serve(settings, telemetry, database, log)
    finally:
        telemetry.shutdown()  # bounded: at most 3 s even with the collector gone


def _serve(settings: _settings.Settings, telemetry: Any, database: Any, log: logging.Logger) -> int:
    import uvicorn  # noqa: PLC0415

    from inference_service._app import Service, create_app  # noqa: PLC0415

    service = Service(
        settings,
        telemetry,
        connect=database.connect,
        key_store=database.key_store(),
        hasher=database.hasher,
        adapter_factory=database.adapter_factory,
    )
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout.total_seconds())),
    )
    server = uvicorn.Server(config)
    with signals_end_normally() as received:
        try:
            server.run()
        except SystemExit as exc:
            log.error("inference-service could not start (uvicorn exit status %s)", exc.code)
            return EXIT_FAILED
    if not service.started:
        return EXIT_FAILED
    log.info(
        "inference-service stopped",
        extra={"signal": signal.Signals(received[0]).name if received else None},
    )
    return EXIT_OK

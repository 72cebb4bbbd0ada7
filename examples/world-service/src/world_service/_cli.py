"""``world-service --host H --port P``: serve the app under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence

from aiaas_core import (
    ApiKeyVerifier,
    ConfigError,
    InMemoryApiKeyStore,
    ServiceUnavailableError,
    serve,
    settings_summary,
)
from aiaas_telemetry import load_profile, setup
from world_service._app import SERVICE_NAME, create_app
from world_service._settings import Settings, load

__version__ = "0.1.0"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SERVICE_NAME,
        description=(
            "Serve GET /world, /health, /ready, /metrics and the API-key guarded"
            " GET /admin/config over HTTP until SIGTERM or SIGINT."
        ),
        epilog=(
            "Configuration: WORLD_SERVICE_HOST, WORLD_SERVICE_PORT (the flags win),"
            " WORLD_SERVICE_API_KEYS (subject:key_id:role[+role]:digest entries),"
            " WORLD_SERVICE_API_KEY_HASH_KEY, WORLD_SERVICE_GRACEFUL_TIMEOUT (e.g. 10s),"
            " WORLD_SERVICE_TRACING, WORLD_SERVICE_GIL_SWITCH_INTERVAL (1ms; 0 for Python's"
            " default), and the standard OTEL_* variables for telemetry (OTEL_BSP_* included)."
            " Exit codes: 0 after a clean shutdown, 2 for a usage or configuration error."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8080)")
    parser.add_argument(
        "--issue-key",
        metavar="ROLE[,ROLE]",
        help="print a new API key and its WORLD_SERVICE_API_KEYS entry, then exit",
    )
    parser.add_argument(
        "--subject", default="operator", help="who the issued key belongs to (--issue-key)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _issue_key(settings: Settings, roles: str, subject: str) -> int:
    hasher = settings.hasher()
    if hasher is None:
        sys.stderr.write(
            f"{SERVICE_NAME}: --issue-key needs WORLD_SERVICE_API_KEY_HASH_KEY"
            " (the HMAC key digests are made with)\n"
        )
        return 2
    verifier = ApiKeyVerifier(InMemoryApiKeyStore(), hasher)
    names = [r.strip() for r in roles.split(",") if r.strip()]
    key, record = verifier.issue(subject=subject, roles=names)
    entry = f"{subject}:{record.key_id}:{'+'.join(record.roles)}:{record.digest}"
    sys.stdout.write(
        f"API key (shown once; hand it to its owner): {key.token}\n"
        f"WORLD_SERVICE_API_KEYS entry (a digest, safe to store): {entry}\n"
    )
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = load(environ, overrides)
        profile = load_profile({"service_name": SERVICE_NAME}, environ=environ)
    except ConfigError as exc:
        sys.stderr.write(f"{SERVICE_NAME}: {exc.message}\n")
        return 2
    if args.issue_key is not None:
        return _issue_key(settings, args.issue_key, args.subject)

    switch_interval = settings.gil_switch_interval.total_seconds()
    try:
        telemetry = setup(
            profile,
            tracing=settings.tracing,
            service_version=__version__,
            config_summary=settings_summary(settings),
            environ=environ,
            gil_switch_interval_s=switch_interval or None,
        )
    except ConfigError as exc:  # a bad OTEL_BSP_* variable
        sys.stderr.write(f"{SERVICE_NAME}: {exc.message}\n")
        return 2
    log = logging.getLogger(SERVICE_NAME)
    try:
        app = create_app(settings, telemetry)
        try:  # returns after SIGTERM/SIGINT, once in-flight requests are done
            stopped_by = serve(
                app,
                host=settings.host,
                port=settings.port,
                graceful_timeout=settings.graceful_timeout,
            )
        except ServiceUnavailableError as exc:  # the port is taken, or the app did not start
            log.error("world-service could not start: %s", exc.message)
            return 1
        log.info("world-service stopped", extra={"signal": stopped_by.name if stopped_by else None})
        return 0
    finally:
        telemetry.shutdown()  # bounded: at most 3 s even with the collector gone

"""``service-template --host H --port P``: serve the app under uvicorn until SIGTERM or SIGINT.

The order matters: configuration first (a bad value exits 2 before anything starts), then
telemetry, then the server; telemetry is flushed last, within a bound, however the server ended.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence

from aiaas_core import ConfigError, ServiceUnavailableError, serve, settings_summary
from aiaas_telemetry import load_profile, setup

from ._app import SPAN_QUEUE_SIZE, create_app
from ._config import ENV_PREFIX, SERVICE_NAME, __version__, load

#: How long flushing telemetry may take at exit, whatever the collector does.
TELEMETRY_SHUTDOWN_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SERVICE_NAME,
        description="Serve GET /v1/greeting?name=..., /health, /ready and /metrics over HTTP.",
        epilog=(
            f"Configuration: {ENV_PREFIX}HOST, {ENV_PREFIX}PORT (the flags win),"
            f" {ENV_PREFIX}GRACEFUL_TIMEOUT (e.g. 10s), {ENV_PREFIX}TRACING, and the standard"
            " OTEL_* variables for telemetry. Exit codes: 0 after a clean shutdown (SIGTERM,"
            " SIGINT), 1 when the server cannot start, 2 for a usage or configuration error."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8080)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line (``environ`` defaults to ``os.environ``); returns the exit code."""
    args = _parser().parse_args(argv)
    flags = {name: value for name in ("host", "port") if (value := getattr(args, name)) is not None}
    try:
        settings = load(environ, flags)
        profile = load_profile({"service_name": SERVICE_NAME}, environ=environ)
    except ConfigError as exc:
        sys.stderr.write(f"{SERVICE_NAME}: {exc.message}\n")
        return 2

    telemetry = setup(  # JSON logs on stderr, traces over OTLP, metrics on /metrics
        profile,
        tracing=settings.tracing,
        service_version=__version__,
        config_summary=settings_summary(settings),
        max_queue_size=SPAN_QUEUE_SIZE,
    )
    log = logging.getLogger(SERVICE_NAME)
    try:
        # aiaas-core's serve(): uvicorn with its lines through the JSON handler, no access log of
        # its own (the telemetry middleware writes it), and SIGTERM/SIGINT returned after the
        # graceful shutdown instead of killing the process, so telemetry is flushed below.
        try:
            stopped_by = serve(
                create_app(telemetry),
                host=settings.host,
                port=settings.port,
                graceful_timeout=settings.graceful_timeout,
            )
        except ServiceUnavailableError as exc:  # the port is taken, or the app did not start
            log.error("%s could not start: %s", SERVICE_NAME, exc.message)
            return 1
        log.info(
            "%s stopped", SERVICE_NAME, extra={"signal": stopped_by.name if stopped_by else None}
        )
        return 0
    finally:
        telemetry.shutdown(timeout_s=TELEMETRY_SHUTDOWN_S)

"""``service-template --host H --port P``: serve the app under uvicorn until SIGTERM or SIGINT.

The order matters: configuration first (a bad value exits 2 before anything starts), then
telemetry, then the server; telemetry is flushed last, within a bound, however the server ended.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

import uvicorn

from aiaas_core import ConfigError, settings_summary, signals_end_normally
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
        config = uvicorn.Config(
            create_app(telemetry),
            host=settings.host,
            port=settings.port,
            log_config=None,  # uvicorn's own lines go through the JSON handler too
            access_log=False,  # the telemetry middleware writes the access log
            lifespan="on",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.graceful_timeout.total_seconds())),
        )
        server = uvicorn.Server(config)
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown: record it instead of dying,
        # so telemetry is flushed below.
        with signals_end_normally() as received:
            try:
                server.run()  # returns after SIGTERM/SIGINT, once in-flight requests are done
            except SystemExit as exc:  # uvicorn exits when it cannot bind the port or start
                log.error("%s could not start (uvicorn exit status %s)", SERVICE_NAME, exc.code)
                return 1
        stopped_by = signal.Signals(received[0]).name if received else None
        log.info("%s stopped", SERVICE_NAME, extra={"signal": stopped_by})
        return 0
    finally:
        telemetry.shutdown(timeout_s=TELEMETRY_SHUTDOWN_S)

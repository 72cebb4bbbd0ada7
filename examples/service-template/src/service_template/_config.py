"""Who this service is, and what it reads from its environment (``SERVICE_TEMPLATE_*``).

CHANGE: add your service's settings to :class:`Settings`. Each field is read from
``ENV_PREFIX + FIELD_NAME`` (``port`` from ``SERVICE_TEMPLATE_PORT``); a bad value stops the
service before it starts, every problem listed, with exit status 2. Declare secrets with the type
:class:`aiaas_core.Secret`: they never appear in a repr, a log line or ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

import attrs

from aiaas_core import load_settings, setting

#: The service's name: its console script, its log lines' ``service`` and its metrics' service.
SERVICE_NAME: Final = "service-template"
#: Prefix of the environment variables :class:`Settings` reads.
ENV_PREFIX: Final = "SERVICE_TEMPLATE_"
__version__: Final = "0.1.0"


def _check_port(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"a TCP port is between 0 and 65535, got {value}")


@attrs.frozen
class Settings:
    """The service's configuration (environment variables ``SERVICE_TEMPLATE_*``)."""

    host: str = setting(default="127.0.0.1", help="address to listen on (--host wins)")
    port: int = setting(default=8080, help="TCP port (--port wins)", validator=_check_port)
    graceful_timeout: timedelta = setting(
        default=timedelta(seconds=10),
        help="how long in-flight requests may take to finish after SIGTERM (e.g. 10s)",
    )
    tracing: bool = setting(default=True, help="export traces over OTLP (the OTEL_* variables)")


def load(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Defaults < environment < ``overrides``; raises :class:`aiaas_core.ConfigError`."""
    return load_settings(Settings, prefix=ENV_PREFIX, environ=environ, overrides=overrides)

"""Structured events and spans for migrations.

Events go through stdlib logging on ``aiaas.db.migrations`` with their fields in ``extra``
(``event`` is one of :data:`EVENTS`), so any JSON log formatter (aiaas-telemetry's included)
renders them as fields. Spans go through the OpenTelemetry API only (tracer ``aiaas_db``): with no
SDK installed they cost next to nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import trace

__all__ = ["EVENTS", "LOGGER_NAME"]

LOGGER_NAME: Final = "aiaas.db.migrations"
EVENTS: Final = frozenset(
    {
        "migration_start",
        "migration_pre_checks",
        "migration_finish",
        "migration_failed",
        "migration_lock_wait",
        "migration_recover",
        "migration_dry_run",
        "migration_drill",
    }
)
_logger = logging.getLogger(LOGGER_NAME)


def emit(event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with ``event`` and ``fields`` as structured extras."""
    if event not in EVENTS:
        raise ValueError(f"unknown migration event {event!r}")
    if _logger.isEnabledFor(level):
        _logger.log(level, message, extra={"event": event, **fields})


def _attr(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


@contextmanager
def span(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """A span named ``name``; ``None`` attribute values are left out."""
    tracer = trace.get_tracer("aiaas_db")
    attrs = {k: _attr(v) for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(
        name, attributes=attrs, record_exception=True, set_status_on_exception=True
    ) as current:
        yield current


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    current.set_attributes({k: _attr(v) for k, v in attributes.items() if v is not None})

"""JSON log lines on the standard library's :mod:`logging`.

:class:`JsonFormatter` renders each record as one JSON object on one line::

    {"time": "2024-05-01T12:00:00.123Z", "level": "info", "service": "world-service",
     "message": "GET /world 200", "logger": "aiaas.access", "request_id": "5f0c...",
     "trace_id": "4bf9...", "span_id": "00f0...", "actor.subject": null, "status": 200, ...}

- ``time`` (UTC, milliseconds), ``level`` (``debug``/``info``/``warn``/``error``/``critical``),
  ``service``, ``message`` and ``logger`` are always present;
- ``request_id``, ``trace_id``, ``span_id`` and ``actor.subject`` come from the aiaas-core request
  context (set by :class:`aiaas_telemetry.TelemetryMiddleware` for every request) or from the same
  names passed in ``extra=``; they are present when known, and *always* present -- ``null`` when
  unknown -- when named in the profile's ``log.required_fields``;
- every other ``extra=`` field is added as it is, after :func:`aiaas_telemetry.redact`: a value
  under a secret-looking key (``authorization``, ``token``, ``password`` ...) never reaches the
  line, at any nesting depth;
- an exception (``exc_info``) adds ``exception.type``, ``exception.message`` and
  ``exception.stacktrace`` -- tracebacks stay in server logs, never in responses.

Values JSON cannot encode are written with ``str()``; ``bytes`` are decoded as UTF-8 with
replacement characters.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final

from aiaas_core import get_actor, get_request_id, get_span_id, get_trace_id
from aiaas_telemetry._redact import REDACTED, _secret, redact

__all__ = ["JsonFormatter", "configure_logging", "emit_json", "remove_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}

_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_CONTEXT_FIELDS: Final = ("request_id", "trace_id", "span_id", "actor.subject")
_FIXED_FIELDS: Final = frozenset({"time", "level", "service", "message", "logger"})
# uvicorn adds "color_message" (the message with ANSI colour codes) to its records.
_SKIP: Final = _RECORD_ATTRS | _FIXED_FIELDS | frozenset(_CONTEXT_FIELDS) | {"color_message"}
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format records as one-line JSON objects with service and request-context fields.

    ``required_fields`` are always written (``null`` when unknown). ``static_fields`` (for example
    ``{"environment": "staging"}``) are added to every line; secret-looking ones are redacted.
    """

    def __init__(
        self,
        service: str,
        *,
        required_fields: Iterable[str] = (),
        static_fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.required_fields: tuple[str, ...] = tuple(dict.fromkeys(required_fields))
        self._static = redact(dict(static_fields or {}))
        self._second: tuple[int, str] = (-1, "")
        self._encode = json.JSONEncoder(
            default=_default, ensure_ascii=False, separators=(",", ":")
        ).encode

    def _time(self, created: float) -> str:
        second = int(created)
        cached, prefix = self._second  # one tuple: consistent even across threads
        if second != cached:  # one strftime per second, not per line
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out = self._fields(
            record.created,
            _LEVELS.get(record.levelno) or record.levelname.lower(),
            record.getMessage(),
            record.name,
            record.__dict__,
        )
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, _tb = record.exc_info
            out["exception.type"] = exc_type.__qualname__
            out["exception.message"] = str(exc)
            out["exception.stacktrace"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception.stacktrace"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return self._encode(out)

    def format_fields(
        self, *, created: float, levelno: int, message: str, logger: str, fields: Mapping[str, Any]
    ) -> str:
        """The line :meth:`format` writes for a record with these attributes and ``extra=fields``.

        No :class:`logging.LogRecord` is made: what :func:`emit_json` uses for lines written
        often (the access log). A record's exception and stack information have no counterpart.
        """
        level = _LEVELS.get(levelno) or logging.getLevelName(levelno).lower()
        return self._encode(self._fields(created, level, message, logger, fields))

    def _fields(
        self,
        created: float,
        level: str,
        message: str,
        logger: str,
        data: Mapping[str, Any],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": self._time(created),
            "level": level,
            "service": self.service,
            "message": message,
            "logger": logger,
        }
        request_id = data.get("request_id") or get_request_id()
        trace_id = data.get("trace_id") or get_trace_id()
        span_id = data.get("span_id") or get_span_id()
        subject = data.get("actor.subject")
        if subject is None:
            actor = get_actor()
            subject = actor.subject if actor is not None else None
        if request_id is not None:
            out["request_id"] = request_id
        if trace_id is not None:
            out["trace_id"] = trace_id
        if span_id is not None:
            out["span_id"] = span_id
        if subject is not None:
            out["actor.subject"] = subject
        for key in self.required_fields:
            out.setdefault(key, None)
        if self._static:
            for key, value in self._static.items():
                out.setdefault(key, value)
        for key, value in data.items():
            if key in _SKIP or key[0] == "_":
                continue
            if _secret(key):
                out[key] = REDACTED
            elif type(value) in _SCALARS:  # the common case: no walk needed
                out[key] = value
            else:
                out[key] = redact(value)
        return out


def _direct_handlers(
    logger: logging.Logger, levelno: int
) -> list[logging.StreamHandler[Any]] | None:
    """The handlers a ``levelno`` record from ``logger`` reaches, when :func:`emit_json` may
    write to them directly: plain :class:`logging.StreamHandler` s with a :class:`JsonFormatter`
    and no filters, and no filter on ``logger``. ``None`` when anything else would see the record
    (another handler, a filter, a formatter subclass) or when no handler would (the last resort).
    """
    if logger.filters or logger.disabled:
        return None
    found: list[logging.StreamHandler[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if levelno < handler.level:
                continue
            if (
                type(handler) is not logging.StreamHandler
                or handler.filters
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            found.append(handler)
        if not current.propagate:
            break
        current = current.parent
    return found or None


def emit_json(logger: logging.Logger, levelno: int, message: str, fields: dict[str, Any]) -> bool:
    """Write one line as ``logger.log(levelno, message, extra=fields)`` would, faster.

    When only plain JSON stream handlers would see the record (see :func:`_direct_handlers`),
    each gets its line from :meth:`JsonFormatter.format_fields` -- the same JSON its
    :meth:`JsonFormatter.format` makes, without a :class:`logging.LogRecord`, the caller lookup
    and the handler chain -- and ``True`` is returned. Otherwise nothing is written and the
    result is ``False``: log the usual way. The caller checks ``logger.isEnabledFor(levelno)``.
    """
    handlers = _direct_handlers(logger, levelno)
    if handlers is None:
        return False
    created = time.time()
    for handler in handlers:
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        handler.acquire()
        try:
            line = formatter.format_fields(
                created=created, levelno=levelno, message=message, logger=logger.name, fields=fields
            )
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except RecursionError:  # as StreamHandler.emit does
            raise
        except Exception:  # noqa: BLE001 -- reported the way logging reports a failing handler
            handler.handleError(
                logger.makeRecord(logger.name, levelno, "(emit_json)", 0, message, (), None)
            )
        finally:
            handler.release()
    return True


_HANDLER_MARK: Final = "_aiaas_telemetry_handler"
_LEVEL_MARK: Final = "_aiaas_telemetry_previous_level"


def configure_logging(
    service: str,
    *,
    level: int = logging.INFO,
    required_fields: Iterable[str] = (),
    static_fields: Mapping[str, Any] | None = None,
    stream: IO[str] | None = None,
    logger: logging.Logger | None = None,
) -> logging.Handler:
    """Send ``logger``'s records (the root logger by default) to ``stream`` as JSON lines.

    ``stream`` defaults to ``sys.stderr``. A handler installed by an earlier call is replaced,
    so calling this twice never doubles lines; other handlers are left alone. Returns the
    handler; :func:`remove_logging` takes it away again.
    """
    target = logger if logger is not None else logging.getLogger()
    for existing in list(target.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            target.removeHandler(existing)
            existing.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter(service, required_fields=required_fields, static_fields=static_fields)
    )
    setattr(handler, _HANDLER_MARK, True)
    setattr(handler, _LEVEL_MARK, target.level)
    target.addHandler(handler)
    target.setLevel(level)
    return handler


def remove_logging(handler: logging.Handler, logger: logging.Logger | None = None) -> None:
    """Detach a handler installed by :func:`configure_logging` (a no-op when already gone).

    The logger's level is put back to what it was before :func:`configure_logging`.
    """
    target = logger if logger is not None else logging.getLogger()
    if handler in target.handlers:
        target.removeHandler(handler)
        previous = getattr(handler, _LEVEL_MARK, None)
        if isinstance(previous, int):
            target.setLevel(previous)
    handler.flush()

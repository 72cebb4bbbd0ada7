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
from collections.abc import Callable, Iterable, Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
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


def _line_encoder() -> Callable[[Any], str]:
    """``json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode``
    for the dicts the formatter builds, calling the C encoder directly when there is one (the
    same text, without the encoder's per-call Python set-up: about a third of a line's cost)."""
    encoder = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))
    make = c_make_encoder
    if make is None:  # no C accelerator (another interpreter): the encoder as it is
        return encoder.encode

    def encode(fields: Any) -> str:
        # A fresh markers dict per line, as JSONEncoder.iterencode does (circular references
        # are refused the same way).
        return "".join(
            make({}, _default, encode_basestring, None, ":", ",", False, False, True)(fields, 0)
        )

    return encode


_encode_str: Final = encode_basestring
_SKIP_FIELD: Final = "skip"
_ORDERED_FIELD: Final = "ordered"
_ORDERED_LAYOUT: Final = ("ordered",)
#: The ``extra`` fields of an access-log line (:func:`emit_access`), in their order; the optional
#: ones (``client.address`` on) only when known.
ACCESS_FIELDS: Final = (
    "http.method",
    "http.route",
    "http.status_code",
    "url.path",
    "duration_ms",
    "client.address",
    "user_agent",
    "error.code",
)
#: An access-log line's values (see :func:`emit_access`).
AccessEntry = tuple[str, str, str, int, float, Any, str | None, str | None]
_REDACTED_JSON: Final = encode_basestring(REDACTED)
_CONTEXT_BITS: Final = {"request_id": 1, "trace_id": 2, "span_id": 4, "actor.subject": 8}


def _value_json(value: Any, encode: Callable[[Any], str]) -> str:
    """``value`` as the formatter's encoder writes it, after :func:`redact` (scalars directly)."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is float and value - value == 0.0:  # finite (NaN and infinities: the encoder's words)
        return float.__repr__(value)
    return encode(value if kind in _SCALARS else redact(value))


class _DirectPlan:
    """What :meth:`JsonFormatter._direct` precomputes for a formatter's service, required and
    static fields: the text between the message and the logger, the text after the
    request-context fields (one per combination of context fields present) and, per ``extra``
    key, what to do with it (its ``,"key":`` fragment, or skip, redact, or leave the line to the
    dict path)."""

    __slots__ = (
        "access",
        "actions",
        "enabled",
        "heads",
        "layouts",
        "loggers",
        "required",
        "service",
        "static",
        "tails",
    )

    def __init__(
        self,
        service: str,
        required: tuple[str, ...],
        static: dict[str, Any],
        encode: Callable[[Any], str],
    ) -> None:
        self.service = service
        self.required = required
        self.static = static
        ordered = {*required, *static} - set(_CONTEXT_FIELDS)
        # Static fields that are fixed or context fields, or required too, interleave with them
        # in ways only the dict reproduces: no direct path then.
        self.enabled = not (set(static) & (_FIXED_FIELDS | set(_CONTEXT_FIELDS) | set(required)))
        static_text = "".join(
            f",{_encode_str(key)}:{_value_json(value, encode)}" for key, value in static.items()
        )
        self.tails: list[str] = []
        for present in range(16):
            text = "".join(
                f",{_encode_str(name)}:null"
                for name in required
                if not present & _CONTEXT_BITS.get(name, 0) and name not in static
            )
            self.tails.append(text + static_text)
        self.actions: dict[str, str] = dict.fromkeys(ordered, _ORDERED_FIELD)
        # level -> '","level":"info","service":"svc","message":'; logger -> ',"logger":"name"'
        self.heads: dict[str, str] = {}
        self.loggers: dict[str, str] = {}
        # the keys of an ``extra`` (in order) -> each key's action ("" for a skipped key), or
        # _ORDERED_LAYOUT when one of them must go through the dict path
        self.layouts: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Whether the access line's fields are plain (not required, static, secret or skipped):
        # then JsonFormatter._access_line writes it from one template.
        self.access = self.enabled and all(
            (self.actions.get(key) or self.action(key)) == f",{_encode_str(key)}:"
            for key in ACCESS_FIELDS
        )

    def action(self, key: str) -> str:
        """The fragment to write before ``key``'s value, or what to do instead."""
        if key in _SKIP or key[:1] == "_":
            action = _SKIP_FIELD
        elif _secret(key):  # the whole pair, the value redacted (ends in '"', not ':')
            action = f",{_encode_str(key)}:{_REDACTED_JSON}"
        else:
            action = f",{_encode_str(key)}:"
        if len(self.actions) < 4096:
            self.actions[key] = action
        return action

    def layout(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The actions for the fields of an ``extra`` with these keys, in order (cached)."""
        actions = self.actions
        layout: tuple[str, ...] = ()
        found = []
        for key in keys:
            action = actions.get(key) or self.action(key)
            if action is _ORDERED_FIELD:
                layout = _ORDERED_LAYOUT
                break
            found.append("" if action is _SKIP_FIELD else action)
        else:
            layout = tuple(found)
        if len(self.layouts) < 1024:
            self.layouts[keys] = layout
        return layout

    def head(self, level: str) -> str:
        head = self.heads.get(level)
        if head is None:
            head = (
                f'","level":{_encode_str(level)},"service":{_encode_str(self.service)},"message":'
            )
            if len(self.heads) < 64:
                self.heads[level] = head
        return head

    def logger(self, name: str) -> str:
        text = self.loggers.get(name)
        if text is None:
            text = f',"logger":{_encode_str(name)}'
            if len(self.loggers) < 4096:
                self.loggers[name] = text
        return text


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
        self._encode = _line_encoder()
        self._plan: _DirectPlan | None = None

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
        line = self._direct(created, level, message, logger, fields)
        if line is None:
            line = self._encode(self._fields(created, level, message, logger, fields))
        return line

    def _direct_plan(self) -> _DirectPlan:
        """The precomputed plan of the direct paths, rebuilt when the formatter's service,
        required or static fields were replaced."""
        plan = self._plan
        if (
            plan is None
            or plan.required is not self.required_fields
            or plan.static is not self._static
            or plan.service is not self.service
        ):
            plan = self._plan = _DirectPlan(
                self.service, self.required_fields, self._static, self._encode
            )
        return plan

    def _direct(
        self, created: float, level: str, message: str, logger: str, data: Mapping[str, Any]
    ) -> str | None:
        """The line ``self._encode(self._fields(...))`` makes, written piece by piece (about
        half the cost: no intermediate dict, the fixed text precomputed, scalars encoded
        straight away), or ``None`` when a field of ``data`` would land among the required or
        static fields (then the dict decides the order: take the general path)."""
        plan = self._direct_plan()
        if not plan.enabled:
            return None
        get = data.get
        request_id = get("request_id") or get_request_id()
        trace_id = get("trace_id") or get_trace_id()
        span_id = get("span_id") or get_span_id()
        subject = get("actor.subject")
        if subject is None:
            actor = get_actor()
            subject = actor.subject if actor is not None else None
        head = plan.heads.get(level) or plan.head(level)
        parts = [
            '{"time":"',
            self._time(created),
            head,
            _encode_str(message),
            plan.loggers.get(logger) or plan.logger(logger),
        ]
        append = parts.append
        present = 0
        if request_id is not None:
            present = 1
            append(',"request_id":')
            append(_value_json(request_id, self._encode))
        if trace_id is not None:
            present |= 2
            append(',"trace_id":')
            append(_value_json(trace_id, self._encode))
        if span_id is not None:
            present |= 4
            append(',"span_id":')
            append(_value_json(span_id, self._encode))
        if subject is not None:
            present |= 8
            append(',"actor.subject":')
            append(_value_json(subject, self._encode))
        append(plan.tails[present])
        keys = tuple(data)
        layout = plan.layouts.get(keys)
        if layout is None:
            layout = plan.layout(keys)
        if layout is _ORDERED_LAYOUT:
            return None
        for fragment, value in zip(layout, data.values(), strict=True):
            if not fragment:  # a field the line leaves out
                continue
            append(fragment)  # the key's ',"key":' fragment, or the whole redacted pair
            if fragment[-1] != ":":
                continue
            kind = type(value)
            if kind is str:
                append(_encode_str(value))
            elif kind is int:
                append(int.__repr__(value))
            else:
                append(_value_json(value, self._encode))
        append("}")
        return "".join(parts)

    def _access_line(
        self,
        created: float,
        logger: str,
        entry: AccessEntry,
        ids: tuple[str, str | None, str | None, str | None],
    ) -> str | None:
        """The access-log line :meth:`format_fields` writes for ``entry`` and ``ids`` from
        ``logger`` (see :func:`emit_access`), from one template: the fixed text precomputed,
        only the values encoded. ``None`` when an access field is a required, static or
        secret-looking one of this formatter (then the dict decides: use
        :meth:`format_fields`)."""
        plan = self._direct_plan()
        if not plan.access:
            return None
        method, path, route, status, duration_ms, client, user_agent, error_code = entry
        # The context fields as _direct takes them: a falsy id is the request context's.
        request_id = ids[0] or get_request_id()
        trace_id = ids[1] or get_trace_id()
        span_id = ids[2] or get_span_id()
        subject = ids[3]
        if subject is None:
            actor = get_actor()
            subject = actor.subject if actor is not None else None
        encode = self._encode
        present = 0
        context = ""
        if request_id is not None:
            present = 1
            text = _encode_str(request_id) if type(request_id) is str else encode(request_id)
            context = f',"request_id":{text}'
        if trace_id is not None:
            present |= 2
            text = _encode_str(trace_id) if type(trace_id) is str else encode(trace_id)
            context += f',"trace_id":{text}'
        if span_id is not None:
            present |= 4
            text = _encode_str(span_id) if type(span_id) is str else encode(span_id)
            context += f',"span_id":{text}'
        if subject is not None:
            present |= 8
            text = _encode_str(subject) if type(subject) is str else encode(subject)
            context += f',"actor.subject":{text}'
        line = (
            f'{{"time":"{self._time(created)}{plan.heads.get("info") or plan.head("info")}'
            f"{_encode_str(f'{method} {path} {status:d}')}"
            f"{plan.loggers.get(logger) or plan.logger(logger)}"
            f"{context}{plan.tails[present]}"
            f',"http.method":{_encode_str(method)},"http.route":{_encode_str(route)}'
            f',"http.status_code":{_value_json(status, encode)},"url.path":{_encode_str(path)}'
            f',"duration_ms":{_value_json(duration_ms, encode)}'
        )
        if client:
            line += f',"client.address":{_value_json(client[0], encode)}'
        if user_agent is not None:
            line += f',"user_agent":{_value_json(user_agent, encode)}'
        if error_code is not None:
            line += f',"error.code":{_value_json(error_code, encode)}'
        return line + "}"

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
        # Context fields are set by the caller's ``extra=`` too: redacted like any other field.
        if request_id is not None:
            out["request_id"] = request_id if type(request_id) in _SCALARS else redact(request_id)
        if trace_id is not None:
            out["trace_id"] = trace_id if type(trace_id) in _SCALARS else redact(trace_id)
        if span_id is not None:
            out["span_id"] = span_id if type(span_id) in _SCALARS else redact(span_id)
        if subject is not None:
            out["actor.subject"] = subject if type(subject) in _SCALARS else redact(subject)
        for key in self.required_fields:
            out.setdefault(key, None)
        if self._static:
            for key, value in self._static.items():
                out.setdefault(key, value)
        for key, value in data.items():
            if key in _SKIP or key[:1] == "_":
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
    name = logger.name
    for handler in handlers:
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        handler.acquire()
        try:
            _write(
                handler,
                formatter.format_fields(
                    created=created, levelno=levelno, message=message, logger=name, fields=fields
                ),
            )
        except RecursionError:  # as StreamHandler.emit does
            raise
        except Exception:  # noqa: BLE001 -- reported the way logging reports a failing handler
            handler.handleError(
                logger.makeRecord(name, levelno, "(emit_json)", 0, message, (), None)
            )
        finally:
            handler.release()
    return True


def _write(handler: logging.StreamHandler[Any], line: str) -> None:
    """``StreamHandler.emit``'s writing, the handler's lock already held."""
    stream = handler.stream
    stream.write(line + handler.terminator)
    if stream and hasattr(stream, "flush"):  # StreamHandler.flush, the lock already held
        stream.flush()


def access_fields(
    entry: AccessEntry,
    ids: tuple[str, str | None, str | None, str | None],
    *,
    with_ids: bool = True,
) -> dict[str, Any]:
    """The ``extra`` fields of an access-log line: the request, trace and span ids of ``ids``
    first (unless ``with_ids`` is false: a record's come from the request context), then
    :data:`ACCESS_FIELDS` (the optional ones when known), then the actor's subject when known."""
    method, path, route, status, duration_ms, client, user_agent, error_code = entry
    fields: dict[str, Any] = (
        {"request_id": ids[0], "trace_id": ids[1], "span_id": ids[2]} if with_ids else {}
    )
    fields["http.method"] = method
    fields["http.route"] = route
    fields["http.status_code"] = status
    fields["url.path"] = path
    fields["duration_ms"] = duration_ms
    if client:
        fields["client.address"] = client[0]
    if user_agent is not None:
        fields["user_agent"] = user_agent
    if error_code is not None:
        fields["error.code"] = error_code
    if ids[3] is not None:
        fields["actor.subject"] = ids[3]
    return fields


def access_message(entry: AccessEntry) -> str:
    """An access-log line's message: ``"GET /v1/items/7 200"``."""
    return f"{entry[0]} {entry[1]} {entry[3]:d}"


def emit_access(
    logger: logging.Logger,
    entry: AccessEntry,
    ids: tuple[str, str | None, str | None, str | None],
) -> bool:
    """:func:`emit_json` for an access-log line: ``entry`` is (method, path, route template,
    status, duration in ms, the ASGI ``client``, user agent, error code), ``ids`` the request id,
    trace id, span id and actor subject the line carries (``None``: the request context's).

    The line is :meth:`JsonFormatter._access_line` (one template, the values encoded), the very
    line ``logger.info(access_message(entry), extra=access_fields(entry, ids))`` writes.
    ``False`` (nothing written) when anything but plain JSON stream handlers would see it.
    """
    handlers = _direct_handlers(logger, logging.INFO)
    if handlers is None:
        return False
    created = time.time()
    name = logger.name
    for handler in handlers:
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        handler.acquire()
        try:
            line = formatter._access_line(created, name, entry, ids)
            if line is None:
                line = formatter.format_fields(
                    created=created,
                    levelno=logging.INFO,
                    message=access_message(entry),
                    logger=name,
                    fields=access_fields(entry, ids),
                )
            _write(handler, line)
        except RecursionError:  # as StreamHandler.emit does
            raise
        except Exception:  # noqa: BLE001 -- reported the way logging reports a failing handler
            handler.handleError(
                logger.makeRecord(
                    name, logging.INFO, "(emit_access)", 0, access_message(entry), (), None
                )
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

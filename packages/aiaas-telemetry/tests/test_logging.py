"""JSON log lines: fixed fields, request context, required fields, redaction, exceptions."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import Actor, request_context, set_actor
from aiaas_telemetry import (
    JsonFormatter,
    configure_logging,
    emit_json,
    is_secret_key,
    remove_logging,
)
from aiaas_telemetry._logging import (
    ACCESS_FIELDS,
    AccessEntry,
    access_fields,
    access_message,
    emit_access,
)

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def fmt(
    formatter: JsonFormatter, msg: str = "hello %s", *args: Any, **extra: Any
) -> dict[str, Any]:
    record = logging.LogRecord("app.x", logging.INFO, __file__, 10, msg, args or ("world",), None)
    record.__dict__.update(extra)
    return json.loads(formatter.format(record))


def test_fixed_fields_outside_a_request() -> None:
    line = fmt(JsonFormatter("svc"))
    assert TIME.fullmatch(line["time"])
    assert line["level"] == "info"
    assert line["service"] == "svc"
    assert line["message"] == "hello world"
    assert line["logger"] == "app.x"
    assert "request_id" not in line  # unknown and not required


def test_required_fields_are_always_present() -> None:
    line = fmt(JsonFormatter("svc", required_fields=["request_id", "actor.subject", "tenant"]))
    assert line["request_id"] is None
    assert line["actor.subject"] is None
    assert line["tenant"] is None
    line = fmt(JsonFormatter("svc", required_fields=["tenant"]), tenant="acme")
    assert line["tenant"] == "acme"


def test_request_context_fields() -> None:
    formatter = JsonFormatter("svc")
    with request_context("req-12345678", trace_id="a" * 32, span_id="b" * 16):
        set_actor(Actor("key_abc", ("reader",), "api_key"))
        line = fmt(formatter)
    assert line["request_id"] == "req-12345678"
    assert line["trace_id"] == "a" * 32
    assert line["span_id"] == "b" * 16
    assert line["actor.subject"] == "key_abc"
    # Explicit values (a queued record from elsewhere) win over the context.
    line = fmt(formatter, request_id="other-1234", **{"actor.subject": "svc-a"})
    assert line["request_id"] == "other-1234"
    assert line["actor.subject"] == "svc-a"


def test_extras_are_redacted_and_cannot_override_fixed_fields() -> None:
    formatter = JsonFormatter("svc", static_fields={"env": "staging", "api_token": "t0k"})
    line = fmt(
        formatter,
        headers={"Authorization": "Bearer abc", "accept": "json"},
        password="hunter2",
        service="spoofed",
        _private="hidden",
        raw=b"\xff\xfebytes",
        tags={"b", "a"},
        obj=object,
    )
    text = json.dumps(line)
    assert "abc" not in text
    assert "hunter2" not in text
    assert "t0k" not in text
    assert line["headers"] == {"Authorization": "[REDACTED]", "accept": "json"}
    assert line["password"] == "[REDACTED]"
    assert line["service"] == "svc"
    assert line["env"] == "staging"
    assert "_private" not in line
    assert line["raw"].endswith("bytes")
    assert line["tags"] == ["a", "b"]
    assert line["obj"] == "<class 'object'>"


def test_levels_exceptions_and_stack_info() -> None:
    formatter = JsonFormatter("svc")
    try:
        raise ValueError("bad thing")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.stack_info = "Stack (most recent call last):\n  here"
    line = json.loads(formatter.format(record))
    assert line["level"] == "error"
    assert line["exception.type"] == "ValueError"
    assert line["exception.message"] == "bad thing"
    assert "Traceback" in line["exception.stacktrace"]
    assert "here" in line["stack_info"]
    for level, name in [(10, "debug"), (30, "warn"), (50, "critical"), (25, "level 25")]:
        rec = logging.LogRecord("x", level, __file__, 1, "m", None, None)
        assert json.loads(formatter.format(rec))["level"] == name
    text = logging.LogRecord("x", 40, __file__, 1, "m", None, None)
    text.exc_text = "pre-rendered"
    assert json.loads(formatter.format(text))["exception.stacktrace"] == "pre-rendered"


def test_configure_logging_replaces_its_own_handler_and_restores_level() -> None:
    logger = logging.getLogger("aiaas.test.configure")
    logger.setLevel(logging.ERROR)
    first, second = io.StringIO(), io.StringIO()
    h1 = configure_logging("svc", stream=first, logger=logger, level=logging.DEBUG)
    h2 = configure_logging("svc", stream=second, logger=logger, level=logging.INFO)
    try:
        assert h1 not in logger.handlers
        assert logger.level == logging.INFO
        logger.info("once")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "once"
    finally:
        remove_logging(h2, logger)
    assert h2 not in logger.handlers
    assert logger.level == logging.DEBUG  # the level before the second configure
    remove_logging(h2, logger)  # idempotent


# --------------------------------------------------------------------------- emit_json


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=1, max_size=12)
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_values = st.recursive(
    _scalars | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_SECRET_KEYS = st.sampled_from(["token", "password", "authorization", "api_key", "x_secret"])


@given(
    fields=st.dictionaries(_keys | _SECRET_KEYS, _values, max_size=6),
    levelno=st.sampled_from([10, 20, 25, 30, 40, 50]),
    message=st.text(max_size=40),
    in_request=st.booleans(),
)
def test_format_fields_is_what_format_writes(
    fields: dict[str, Any], levelno: int, message: str, in_request: bool
) -> None:
    """The access log's direct path writes the very line the formatter makes from a record."""
    formatter = JsonFormatter(
        "svc",
        required_fields=["request_id", "trace_id", "actor.subject"],
        static_fields={"env": "test", "deploy_token": "t0k"},
    )
    logger = logging.getLogger("aiaas.test.equality")
    extra = {k: v for k, v in fields.items() if k not in _RESERVED}
    with request_context("req-12345678" if in_request else None, trace_id="c" * 32):
        if in_request:
            set_actor(Actor("key_abc", ("reader",), "api_key"))
        record = logger.makeRecord(
            logger.name, levelno, __file__, 1, "%s", (message,), None, extra=extra
        )
        direct = formatter.format_fields(
            created=record.created,
            levelno=levelno,
            message=message,
            logger=logger.name,
            fields=extra,
        )
        assert direct == formatter.format(record)
    parsed = json.loads(direct)
    assert "t0k" not in direct
    for key in extra:
        if key.startswith("_"):
            assert key not in parsed  # a record's private attributes are never written
        elif is_secret_key(key):
            assert parsed[key] == "[REDACTED]"


# Formatter set-ups the direct path must match the dict path for: the profile's default required
# fields, none, required fields out of the context order or outside it, static fields that are
# context fields, required fields, or secret (the direct path steps aside for some of these).
_FORMATTERS = [
    {"required_fields": ["request_id", "trace_id", "span_id", "actor.subject"]},
    {},
    {"required_fields": ["actor.subject", "env", "request_id", "zone"]},
    {"required_fields": ["trace_id"], "static_fields": {"zone": "eu", "region.name": ["a", 1]}},
    {"static_fields": {"trace_id": "static-trace", "env": "x"}},
    {"required_fields": ["env"], "static_fields": {"env": "prod", "api_key": "k3y"}},
]
_more_keys = st.sampled_from(
    ["env", "zone", "request_id", "trace_id", "span_id", "actor.subject", "", "_private", "ü"]
)
_more_values = _values | st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**70])


@given(
    setup=st.sampled_from(_FORMATTERS),
    fields=st.dictionaries(_keys | _SECRET_KEYS | _more_keys, _more_values, max_size=6),
    message=st.text(max_size=20),
    context=st.sampled_from(["none", "request", "request+trace", "request+trace+actor"]),
)
def test_format_fields_direct_path_matches_the_dict_path(
    setup: dict[str, Any], fields: dict[str, Any], message: str, context: str
) -> None:
    """format_fields builds the line piece by piece; it is the line of the dict path."""
    formatter = JsonFormatter('svc "quoted"\n', **setup)
    extra = {k: v for k, v in fields.items() if k not in _RESERVED}
    with request_context(
        "req-12345678" if context != "none" else None,
        trace_id="c" * 32 if "trace" in context else None,
        span_id="d" * 16 if "trace" in context else None,
    ):
        if "actor" in context:
            set_actor(Actor("key_abc", ("reader",), "api_key"))
        fast = formatter.format_fields(
            created=1765000000.25, levelno=20, message=message, logger="a.b", fields=extra
        )
        slow = formatter._encode(formatter._fields(1765000000.25, "info", message, "a.b", extra))
    assert fast == slow
    assert "k3y" not in fast


# Formatter set-ups for the access line's template: the default, and ones where an access field is
# required, static or secret-looking (the template steps aside for those).
_ACCESS_FORMATTERS = [
    *_FORMATTERS,
    {"required_fields": ["request_id", "http.route", "span_id"]},
    {"static_fields": {"url.path": "/static"}},
    {"required_fields": ["error.code"], "static_fields": {"region": "eu"}},
]
_text = st.text(max_size=12)


@given(
    setup=st.sampled_from(_ACCESS_FORMATTERS),
    entry=st.tuples(
        st.sampled_from(["GET", "POST", "BREW", 'G"ET']),
        _text,
        _text,
        st.sampled_from([200, 404, 499, 500]),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.sampled_from([None, ("10.0.0.7", 5), ("::1", 1), (None, 0), ()]),
        st.none() | _text,
        st.none() | st.sampled_from(["INTERNAL_ERROR", "CLIENT_DISCONNECTED"]),
    ),
    ids=st.tuples(  # an empty id is the request context's, as for any line
        st.sampled_from(["req-12345678", 'req-"quoted"-\u00e9', ""]),
        st.none() | st.sampled_from(["a" * 32, ""]),
        st.none() | st.sampled_from(["b" * 16, ""]),
        st.none() | st.sampled_from(["key_abc", "us\u00e9r\n"]),
    ),
    context=st.sampled_from(["none", "trace", "trace+actor"]),
)
def test_access_line_is_what_format_fields_writes(
    setup: dict[str, Any],
    entry: AccessEntry,
    ids: tuple[str, str | None, str | None, str | None],
    context: str,
) -> None:
    """The access line's template writes the very line of the general path, hostile text too;
    ids left out are the request context's. Where an access field is a required or static one,
    the template steps aside (``None``)."""
    formatter = JsonFormatter('svc "quoted"\n', **setup)
    with request_context(
        "outer-request-1",
        trace_id="c" * 32 if "trace" in context else None,
        span_id="d" * 16 if "trace" in context else None,
    ):
        if "actor" in context:
            set_actor(Actor("ctx_actor", ("reader",), "api_key"))
        fast = formatter._access_line(1765000000.25, "aiaas.access", entry, ids)
        slow = formatter.format_fields(
            created=1765000000.25,
            levelno=logging.INFO,
            message=access_message(entry),
            logger="aiaas.access",
            fields=access_fields(entry, ids),
        )
    named = {*setup.get("required_fields", ()), *setup.get("static_fields", {})}
    if setup in _FORMATTERS[:4]:  # nothing in the way: the template writes it
        assert fast == slow
    elif named & set(ACCESS_FIELDS):
        assert fast is None
    else:
        assert fast in {None, slow}
    line = json.loads(slow)
    assert line["message"] == f"{entry[0]} {entry[1]} {entry[3]}"
    assert line["http.method"] == entry[0]


def test_emit_access_writes_the_line_logging_would() -> None:
    logger = logging.getLogger("aiaas.test.emit.access")
    direct, usual = io.StringIO(), io.StringIO()
    entry: AccessEntry = (
        "GET",
        "/v1/items/7",
        "/v1/items/{id}",
        404,
        1.25,
        ("::1", 9),
        "t/1",
        None,
    )
    ids = ("req-abcdef12", "d" * 32, "e" * 16, "key_abc")
    for setup in ({}, {"required_fields": ["http.route"]}):  # the template, the general path
        with only_handler(json_handler(direct, **setup), logger):
            assert emit_access(logger, entry, ids) is True
        with (
            only_handler(json_handler(usual, **setup), logger),
            request_context(ids[0], trace_id=ids[1], span_id=ids[2]),
        ):
            logger.info(
                "%s %s %d",
                "GET",
                "/v1/items/7",
                404,
                extra=access_fields(entry, ids, with_ids=False),
            )
    for a, b in zip(direct.getvalue().splitlines(), usual.getvalue().splitlines(), strict=True):
        one, other = json.loads(a), json.loads(b)
        assert TIME.fullmatch(one.pop("time"))
        other.pop("time")
        assert one == other
        assert one["actor.subject"] == "key_abc"
        assert one["client.address"] == "::1"
    with only_handler(logging.NullHandler(), logger):  # anything else listening: not written
        assert emit_access(logger, entry, ids) is False


# Names a LogRecord refuses in extra= (and the formatter's own fields it would never take).
_RESERVED = frozenset(vars(logging.LogRecord("x", 20, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


@contextmanager
def only_handler(handler: logging.Handler, logger: logging.Logger) -> Iterator[None]:
    """``handler`` alone on an isolated logger (no propagation to pytest's root handlers)."""
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def json_handler(stream: io.StringIO, **kwargs: Any) -> logging.StreamHandler[Any]:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc", **kwargs))
    return handler


def test_emit_json_writes_the_lines_logging_would() -> None:
    logger = logging.getLogger("aiaas.test.emit.same")
    direct, usual = io.StringIO(), io.StringIO()
    fields = {"http.status_code": 200, "cookie": "c=1", "nested": {"token": "x", "n": [1, b"b"]}}
    with request_context("req-abcdef12", trace_id="d" * 32, span_id="e" * 16):
        with only_handler(json_handler(direct, static_fields={"env": "t"}), logger):
            assert emit_json(logger, logging.INFO, "GET /x 200", fields) is True
        with only_handler(json_handler(usual, static_fields={"env": "t"}), logger):
            logger.info("%s %s %d", "GET", "/x", 200, extra=fields)
    (a,), (b,) = direct.getvalue().splitlines(), usual.getvalue().splitlines()
    one, other = json.loads(a), json.loads(b)
    assert TIME.fullmatch(one.pop("time"))
    other.pop("time")
    assert one == other
    assert one["cookie"] == "[REDACTED]"
    assert one["nested"] == {"token": "[REDACTED]", "n": [1, "b"]}
    assert one["request_id"] == "req-abcdef12"


def test_emit_json_writes_to_every_json_handler_on_the_way_up() -> None:
    parent = logging.getLogger("aiaas.test.emit.up")
    child = logging.getLogger("aiaas.test.emit.up.child")
    first, second, quiet = io.StringIO(), io.StringIO(), io.StringIO()
    loud = json_handler(quiet)
    loud.setLevel(logging.ERROR)  # skipped for an INFO line, as logging would
    child.addHandler(json_handler(first))
    child.addHandler(loud)
    try:
        with only_handler(json_handler(second, static_fields={"where": "parent"}), parent):
            assert emit_json(child, logging.INFO, "hello", {"k": 1}) is True
    finally:
        child.handlers[:] = []
    assert json.loads(first.getvalue())["logger"] == "aiaas.test.emit.up.child"
    assert json.loads(second.getvalue())["where"] == "parent"
    assert quiet.getvalue() == ""


class _Subclass(JsonFormatter):
    pass


class _Other(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


@pytest.mark.parametrize(
    "variant", ["logger filter", "handler filter", "formatter subclass", "other handler"]
)
def test_emit_json_declines_when_anything_else_would_see_the_record(variant: str) -> None:
    logger = logging.getLogger(f"aiaas.test.emit.decline.{variant.replace(' ', '_')}")
    stream = io.StringIO()
    handler: logging.Handler = json_handler(stream)
    if variant == "handler filter":
        handler.addFilter(lambda record: True)
    elif variant == "formatter subclass":
        handler.setFormatter(_Subclass("svc"))
    elif variant == "other handler":
        handler = _Other()
    with only_handler(handler, logger):
        if variant == "logger filter":
            logger.addFilter(lambda record: True)
        try:
            assert emit_json(logger, logging.INFO, "m", {}) is False
        finally:
            logger.filters[:] = []
    assert stream.getvalue() == ""


def test_emit_json_declines_without_handlers_or_when_disabled() -> None:
    logger = logging.getLogger("aiaas.test.emit.none")
    logger.propagate = False
    try:
        assert emit_json(logger, logging.INFO, "m", {}) is False  # logging's last resort
    finally:
        logger.propagate = True
    stream = io.StringIO()
    with only_handler(json_handler(stream), logger):
        logger.disabled = True
        try:
            assert emit_json(logger, logging.INFO, "m", {}) is False
        finally:
            logger.disabled = False
    assert stream.getvalue() == ""


class _Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk full")


def test_emit_json_reports_a_failing_stream_like_logging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("aiaas.test.emit.broken")
    with only_handler(json_handler(_Broken()), logger):
        assert emit_json(logger, logging.INFO, "lost line", {}) is True  # never raises
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "disk full" in err

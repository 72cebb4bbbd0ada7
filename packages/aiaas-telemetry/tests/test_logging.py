"""JSON log lines: fixed fields, request context, required fields, redaction, exceptions."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

from aiaas_core import Actor, request_context, set_actor
from aiaas_telemetry import JsonFormatter, configure_logging, remove_logging

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

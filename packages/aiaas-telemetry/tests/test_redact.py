"""Redaction: secret-looking keys, at any nesting, never leak their values."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_telemetry import JsonFormatter, is_secret_key, redact
from aiaas_telemetry._redact import MAX_DEPTH, REDACTED, SECRET_KEY_PARTS, TRUNCATED

MARK = "S3CR3T-"


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "Authorization",
        "X-Api-Key",
        "api_key",
        "APIKEY",
        "refresh_token",
        "DB_PASSWORD",
        "Set-Cookie",
        "client_secret",
        "aws-credentials",
        "private_key_pem",
        b"authorization",
    ],
)
def test_secret_keys(key: str | bytes) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["user", "path", "max_tokens", "prompt_tokens", "Total_Tokens", "author", 42, None]
)
def test_not_secret_keys(key: object) -> None:
    assert not is_secret_key(key)


def test_nested_mappings_lists_and_header_pairs() -> None:
    data = {
        "user": "ann",
        "headers": [(b"authorization", b"Bearer abc"), (b"accept", b"*/*")],
        "pairs": [["Cookie", "sid=1"], ["x", "y"]],
        "deep": {"a": [{"password": "p"}, ({"token": "t"},)]},
        "credentials": {"anything": "inside"},
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "set": {1, 2},
        "max_tokens": 128,
    }
    out = redact(data)
    assert out["user"] == "ann"
    assert out["headers"] == [[b"authorization", REDACTED], [b"accept", b"*/*"]]
    assert out["pairs"] == [["Cookie", REDACTED], ["x", "y"]]
    assert out["deep"] == {"a": [{"password": REDACTED}, [{"token": REDACTED}]]}
    assert out["credentials"] == REDACTED
    assert out["count"] == 3
    assert out["set"] == [1, 2]
    assert out["max_tokens"] == 128
    assert data["deep"]["a"][0]["password"] == "p"  # input untouched


def test_cycles_and_depth_are_bounded() -> None:
    cyclic: dict[str, Any] = {"name": "x"}
    cyclic["self"] = cyclic
    out = redact(cyclic)
    assert out["self"] == TRUNCATED
    deep: Any = {"password": "p"}
    for _ in range(MAX_DEPTH + 5):
        deep = {"next": deep}
    text = json.dumps(redact(deep))
    assert 'p"' not in text.replace("password", "")
    assert TRUNCATED in text
    shared = {"k": 1}
    assert redact([shared, shared]) == [{"k": 1}, {"k": 1}]  # shared is not cyclic


# --------------------------------------------------------------------------- properties

_plain_keys = st.text(alphabet="abcdefghijklmnopqrsuvwxyz_", min_size=1, max_size=8).filter(
    lambda k: not is_secret_key(k)
)
_secret_keys = st.builds(
    lambda prefix, part, suffix, upper: (
        (prefix + part + suffix).upper() if upper else prefix + part.replace("_", "-") + suffix
    ),
    st.sampled_from(["", "x_", "db-", "My"]),
    st.sampled_from(SECRET_KEY_PARTS),
    st.sampled_from(["", "_value", "s", "-header"]),
    st.booleans(),
).filter(is_secret_key)  # allow-listed names such as "tokens" are not secret
_scalars = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=5).filter(lambda t: not is_secret_key(t)),  # ["token", x] reads as a pair
)
# A secret value: the marker itself, or containers holding it (they are dropped whole).
_secret_values = st.recursive(
    st.sampled_from([MARK, f"Bearer {MARK}", f"{MARK}xyz"]),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=2),
        st.dictionaries(_plain_keys, inner, min_size=1, max_size=2),
    ),
    max_leaves=3,
)


def _tree(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    entry = st.one_of(st.tuples(_plain_keys, inner), st.tuples(_secret_keys, _secret_values))
    return st.one_of(
        st.lists(entry, max_size=4).map(dict),
        st.lists(inner, max_size=3),
        st.lists(entry, max_size=3),  # header-style (name, value) pair lists
    )


_with_secrets = st.recursive(_scalars, _tree, max_leaves=12)


@given(_with_secrets)
def test_no_secret_value_survives_at_any_nesting(value: Any) -> None:
    assert MARK not in json.dumps(redact(value), default=str)


@given(st.dictionaries(st.one_of(_plain_keys, _secret_keys), _with_secrets, max_size=4))
def test_json_log_lines_never_carry_secret_values(extra: dict[str, Any]) -> None:
    formatter = JsonFormatter("svc", required_fields=("request_id", "trace_id", "span_id"))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    for key, value in extra.items():
        if key not in record.__dict__:
            setattr(record, key, value)
    line = formatter.format(record)
    assert MARK not in line
    assert json.loads(line)["message"] == "hello"


@pytest.mark.parametrize("field", ["request_id", "trace_id", "span_id", "actor.subject"])
def test_context_fields_given_as_extra_are_redacted_on_both_paths(field: str) -> None:
    # A caller's extra= may set a request-context field to anything: redacted like the rest.
    formatter = JsonFormatter("svc", required_fields=("request_id", "trace_id", "span_id"))
    value = {"authorization": MARK + "x", "kept": 1}
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    setattr(record, field, value)
    dict_path = formatter.format(record)
    direct = formatter.format_fields(
        created=record.created,
        levelno=logging.INFO,
        message="hello",
        logger="t",
        fields={field: value},
    )
    for line in (dict_path, direct):
        assert MARK not in line
        assert json.loads(line)[field] == {"authorization": REDACTED, "kept": 1}


_clean = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_plain_keys, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_clean)
def test_redaction_keeps_data_without_secret_keys(value: Any) -> None:
    assert redact(value) == value

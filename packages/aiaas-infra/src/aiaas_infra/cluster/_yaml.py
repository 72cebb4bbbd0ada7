"""A small, deterministic YAML emitter for the rendered GitOps tree (JSON-like data only)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__: list[str] = []

# A small, deterministic YAML emitter for JSON-like data (dicts with string keys, lists,
# strings, ints, floats, bools, None). Its output does not depend on whether PyYAML has libyaml,
# and it is several times faster than PyYAML's pure-Python emitter. Strings are written plain
# only when no YAML 1.1 or 1.2 parser (PyYAML, Go's yaml.v2 behind kubectl and ArgoCD) can read
# them as anything else; multi-line strings as literal blocks; everything else double-quoted
# (JSON escapes are valid YAML escapes).
_PLAIN = re.compile(r"[A-Za-z_/](?:[A-Za-z0-9_./ -]*[A-Za-z0-9_./-])?")
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"})
_MAX_KEY = 1000  # YAML implicit keys are limited to 1024 characters


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return _quote(value)
    raise TypeError(f"cannot write a {type(value).__name__} as YAML")


_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def _quote(value: str) -> str:
    """A double-quoted YAML scalar: ASCII only, non-ASCII as ``\\u``/``\\U`` escapes."""
    parts = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            parts.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            parts.append(ch)
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


def _block(value: str) -> str | None:
    """The literal block header for a multi-line string, or None when it must be quoted."""
    if "\n" not in value.rstrip("\n") or value.startswith((" ", "\n")) or "\r" in value:
        return None
    if not all(ch.isprintable() or ch in "\t\n" for ch in value):
        return None
    if not value.endswith("\n"):
        return "|-"
    return "|" if not value.endswith("\n\n") else "|+"


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {type(key).__name__}")
    text = _scalar(key)
    if len(text) > _MAX_KEY:
        raise ValueError(f"a mapping key is longer than {_MAX_KEY} characters")
    return text


def _emit(value: Any, indent: int, out: list[str], prefix: str) -> None:
    """Append ``value`` to ``out``; ``prefix`` is what precedes it on its first line."""
    pad = " " * indent
    if isinstance(value, Mapping) and value:
        first = True
        for key in sorted(value):
            head = (prefix if first else pad) + _key(key) + ":"
            first = False
            _emit_child(value[key], indent, out, head)
    elif isinstance(value, list) and value:
        first = True
        for item in value:
            head = (prefix if first else pad) + "-"
            first = False
            if isinstance(item, Mapping) and item:
                _emit(item, indent + 2, out, head + " ")
            elif isinstance(item, list) and item:
                out.append(head)
                _emit(item, indent + 2, out, " " * (indent + 2))
            else:
                _emit_child(item, indent, out, head)
    else:
        out.append(prefix + _inline(value))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def _emit_child(value: Any, indent: int, out: list[str], head: str) -> None:
    """``head`` (``key:`` or ``-``) followed by ``value`` at ``indent``."""
    if isinstance(value, Mapping) and value:
        out.append(head)
        _emit(value, indent + 2, out, " " * (indent + 2))
    elif isinstance(value, list) and value:
        out.append(head)
        _emit(value, indent, out, " " * indent)
    elif isinstance(value, str) and (header := _block(value)) is not None:
        out.append(f"{head} {header}")
        body = value[:-1] if value.endswith("\n") else value
        content = " " * (indent + 2)
        out.extend(content + line if line else "" for line in body.split("\n"))
    else:
        out.append(f"{head} {_inline(value)}")


def dump_yaml(value: Any) -> str:
    """``value`` (JSON-like data) as one YAML document; keys sorted, output deterministic."""
    out: list[str] = []
    _emit(value, 0, out, "")
    return "\n".join(out) + "\n"


def _dump_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    return "---\n" + "---\n".join(dump_yaml(dict(o)) for o in objects)

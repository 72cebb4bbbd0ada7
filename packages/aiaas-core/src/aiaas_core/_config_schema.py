"""Settings declarations, :class:`Secret`, problems, type conversion and the schema tree.

The field model of :mod:`aiaas_core._config`: what a settings class declares (``setting()``,
``Secret``), how text and native values convert to the declared types, and the tree of
settings classes the loader walks. The loader (layers, building instances) and redaction
(:func:`~aiaas_core.settings_summary`) live in ``_config``.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import PurePath
from typing import Any, Final, Literal, NoReturn, TypeGuard, TypeVar, final, overload

import attrs

__all__ = ["SECRET_MASK", "ConfigProblem", "Secret", "setting"]


_T = TypeVar("_T")

#: What a secret value is shown as in reprs and in problems.
SECRET_MASK: Final = "**********"  # noqa: S105 -- the mask, not a password

_META_KEY: Final = "aiaas_setting"
_FACTORY: Final = typing.cast("type[Any]", type(attrs.Factory(list)))
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_TEXT: Final = re.compile(r"[+-]?[0-9](?:_?[0-9])*", re.ASCII)
_NUMBER_TEXT: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_DURATION_TEXT: Final = re.compile(
    r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:us|ms|s|m|h|d|w)\s*)+", re.ASCII
)
_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|ms|s|m|h|d|w)", re.ASCII)
_DURATION_UNITS: Final = {
    "us": "microseconds",
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_MAX_SHOWN: Final = 60


# --------------------------------------------------------------------------------------------
# Secret


@final
class Secret:
    """A secret string (password, token, key) that never shows itself.

    ``repr``, ``str`` and ``format`` all render a fixed mask (``Secret('**********')``), so a
    ``Secret`` inside a settings object, a log line or an f-string stays hidden; read the value
    deliberately with :meth:`get_secret_value`. Equality with another ``Secret`` compares in
    constant time; a ``Secret`` never equals a plain ``str``. Instances are immutable and
    hashable. An empty secret is falsy.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, got {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def get_secret_value(self) -> str:
        """The wrapped string. Keep it out of logs, messages and reprs."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({SECRET_MASK!r})"

    def __str__(self) -> str:
        return SECRET_MASK

    def __format__(self, format_spec: str) -> str:
        return SECRET_MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac  # noqa: PLC0415 -- hmac pulls in hashlib; only equality needs it

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


# --------------------------------------------------------------------------------------------
# Declaring settings


@attrs.frozen
class _SettingMeta:
    env: str | None = None
    help: str = ""
    secret: bool = False


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], Any]


def _masked_repr(value: object) -> str:
    return "None" if value is None else repr(SECRET_MASK)


@overload
def setting(
    default: _T,
    *,
    env: str | None = ...,
    help: str = ...,
    secret: bool = ...,
    validator: _Validator | Sequence[_Validator] | None = ...,
) -> _T: ...
@overload
def setting(
    *,
    factory: Callable[[], _T],
    env: str | None = ...,
    help: str = ...,
    secret: bool = ...,
    validator: _Validator | Sequence[_Validator] | None = ...,
) -> _T: ...
@overload
def setting(
    *,
    env: str | None = ...,
    help: str = ...,
    secret: bool = ...,
    validator: _Validator | Sequence[_Validator] | None = ...,
) -> Any: ...
def setting(
    default: Any = attrs.NOTHING,
    *,
    env: str | None = None,
    help: str = "",
    secret: bool = False,
    validator: _Validator | Sequence[_Validator] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a settings field: an attrs field that carries settings metadata.

    ``default`` / ``factory`` give the class default (neither: the setting is required).
    ``env`` replaces the whole environment variable name (no prefix is added). ``help`` documents
    the setting. ``secret=True`` hides the value in reprs, problems and summaries (fields typed
    :class:`Secret` are secret anyway). ``validator`` is an attrs validator (or a list of them);
    a ``ValueError`` or ``TypeError`` it raises becomes a :class:`ConfigProblem`.

    The field is keyword-only, so required settings may follow ones with defaults.
    """
    if default is not attrs.NOTHING and factory is not None:
        raise TypeError("setting() takes a default or a factory, not both")
    if env is not None and not _ENV_NAME.fullmatch(env):
        raise ValueError(
            f"env must be an environment variable name (letters, digits, _), got {env!r}"
        )
    return attrs.field(
        default=default,
        factory=factory,
        validator=validator,
        repr=_masked_repr if secret else True,
        kw_only=True,
        metadata={_META_KEY: _SettingMeta(env=env, help=help, secret=secret)},
    )


# --------------------------------------------------------------------------------------------
# Problems


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


@attrs.frozen
class ConfigProblem:
    """One thing wrong with the configuration.

    ``path`` is the dotted setting name (``db.pool_size``; empty for the file as a whole).
    ``source`` says where the value came from: ``env AIAAS_DB__POOL_SIZE``,
    ``file settings.toml``, ``override``, ``default``, or ``missing`` for a required setting no
    layer sets. ``value`` is the offending value as given (``'**********'`` for a secret setting;
    ``None`` when there is none to show). ``expected`` says what would have been accepted, and
    ``hint`` what to do about it. ``str()`` renders all of it as one line.
    """

    path: str
    source: str
    value: object
    expected: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path or 'settings'} ({self.source}): expected {_one_line(self.expected)}"
        if self.value is not None:
            text += f", got {_short_repr(self.value)}"
        return f"{text}; {_one_line(self.hint)}" if self.hint else text


class _Mismatch(Exception):  # noqa: N818 -- internal control flow, never escapes
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


# --------------------------------------------------------------------------------------------
# Types: description and conversion


def _optional_inner(tp: object) -> object | None:
    """``X`` for ``X | None`` / ``Optional[X]``; ``None`` for anything else."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest: list[object] = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            return rest[0]
        raise TypeError(f"unsupported settings type {tp!r}: only X | None unions are supported")
    return None


def _sequence_parts(tp: object) -> tuple[type, object] | None:
    origin = typing.get_origin(tp)
    if origin not in (tuple, list, frozenset):
        return None
    args = typing.get_args(tp)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(
                f"unsupported settings type {tp!r}: use tuple[X, ...] for a variable-length tuple"
            )
        inner = args[0]
    else:
        if len(args) != 1:
            raise TypeError(f"unsupported settings type {tp!r}: give the item type")
        inner = args[0]
    if _optional_inner(inner) is not None or _sequence_parts(inner) is not None:
        raise TypeError(f"unsupported settings type {tp!r}: items must be scalars")
    return origin, inner


def _choice_text(choice: object) -> str:
    if isinstance(choice, enum.Enum):
        return str(choice.value)
    if isinstance(choice, bool):
        return "true" if choice else "false"
    return str(choice)


def _describe(tp: object) -> str:
    """What a value of ``tp`` looks like, for ``expected``. Rejects unsupported types."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_describe(inner)}, or empty for none"
    seq = _sequence_parts(tp)
    if seq is not None:
        return f"a comma-separated list, each item {_describe(seq[1])}"
    if typing.get_origin(tp) is Literal:
        return "one of: " + ", ".join(_choice_text(c) for c in typing.get_args(tp))
    if tp is bool:
        return "a boolean (true/false, yes/no, on/off, 1/0)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str or tp is Secret:
        return "a string"
    if tp is timedelta:
        return "a duration such as 250ms, 30s, 5m, 1h or 1h30m (a plain number means seconds)"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of: " + ", ".join(_choice_text(m) for m in tp)
    raise TypeError(
        f"unsupported settings type {tp!r}: use str, int, float, bool, Secret, Path, timedelta, "
        "an enum, a Literal, X | None, or a tuple/list/frozenset of those"
    )


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Mismatch(_describe(bool))


def _parse_int(text: str) -> int:
    stripped = text.strip()
    if not _INT_TEXT.fullmatch(stripped):
        raise _Mismatch(_describe(int))
    try:
        return int(stripped)
    except ValueError:  # more digits than int() accepts
        raise _Mismatch(_describe(int)) from None


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise _Mismatch(_describe(float))
    return number


def _parse_duration(text: str) -> timedelta:
    stripped = text.strip()
    try:
        if _NUMBER_TEXT.fullmatch(stripped):
            return timedelta(seconds=float(stripped))
        if _DURATION_TEXT.fullmatch(stripped):
            total = timedelta()
            for number, unit in _DURATION_PART.findall(stripped):
                total += timedelta(**{_DURATION_UNITS[unit]: float(number)})
            return total
    except OverflowError:
        pass
    raise _Mismatch(_describe(timedelta))


def _match_choice(choices: Sequence[object], text: str, tp: object) -> object:
    stripped = text.strip()
    for choice in choices:
        if _choice_text(choice) == stripped or (
            isinstance(choice, enum.Enum) and choice.name == stripped
        ):
            return choice
    folded = stripped.casefold()
    found = [
        c
        for c in choices
        if _choice_text(c).casefold() == folded
        or (isinstance(c, enum.Enum) and c.name.casefold() == folded)
    ]
    if len(set(found)) == 1:
        return found[0]
    raise _Mismatch(_describe(tp))


def _convert(tp: object, value: object) -> object:
    """Convert ``value`` (text or a native value) to ``tp``; :class:`_Mismatch` if it can't."""
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return _convert(inner, value)
        except _Mismatch:
            raise _Mismatch(_describe(tp)) from None
    seq = _sequence_parts(tp)
    if seq is not None:
        return _convert_sequence(tp, seq[0], seq[1], value)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str):
            return _match_choice(choices, value, tp)
        for choice in choices:
            if type(choice) is type(value) and choice == value:
                return choice
        raise _Mismatch(_describe(tp))
    if isinstance(value, str):
        return _from_text(tp, value)
    return _from_native(tp, value)


def _from_text(tp: object, text: str) -> object:
    if tp is str:
        return text
    if tp is Secret:
        return Secret(text)
    if tp is bool:
        return _parse_bool(text)
    if tp is int:
        return _parse_int(text)
    if tp is float:
        try:
            return _finite(float(text.strip().replace("_", "")))
        except ValueError:
            raise _Mismatch(_describe(tp)) from None
    if tp is timedelta:
        return _parse_duration(text)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if not text.strip():
            raise _Mismatch(_describe(tp))
        return tp(text)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _match_choice(list(tp), text, tp)
    raise TypeError(f"unsupported settings type {tp!r}")  # pragma: no cover -- _describe guards


def _from_native(tp: object, value: object) -> object:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value))
    if tp is Secret and isinstance(value, Secret):
        return value
    if tp is timedelta:
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise _Mismatch(_describe(tp))
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise _Mismatch(_describe(tp))
            try:
                return timedelta(seconds=value)
            except OverflowError:
                raise _Mismatch(_describe(tp)) from None
    if isinstance(tp, type) and issubclass(tp, PurePath) and isinstance(value, PurePath):
        return tp(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if type(member.value) is type(value) and member.value == value:
                return member
    raise _Mismatch(_describe(tp))


def _convert_sequence(tp: object, origin: type, inner: object, value: object) -> object:
    items: list[object]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json  # noqa: PLC0415 -- only for JSON arrays

            try:
                loaded = json.loads(text)
            except ValueError:
                raise _Mismatch(f"{_describe(tp)} (the JSON array is malformed)") from None
            if not isinstance(loaded, list):  # pragma: no cover -- "[..." always loads a list
                raise _Mismatch(_describe(tp))
            items = loaded
        else:
            items = [part.strip() for part in text.split(",")] if text else []
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise _Mismatch(_describe(tp))
    converted = []
    for index, item in enumerate(items, start=1):
        try:
            converted.append(_convert(inner, item))
        except _Mismatch:
            raise _Mismatch(f"{_describe(tp)} (item {index} is not)") from None
    return origin(converted)


def _mentions_secret(tp: object) -> bool:
    if tp is Secret:
        return True
    return any(_mentions_secret(arg) for arg in typing.get_args(tp))


# --------------------------------------------------------------------------------------------
# Schema: the tree of settings classes


class _NoDefault(enum.Enum):
    REQUIRED = "required"  # no layer set it and there is no default: a problem
    ATTRS = "attrs"  # a Factory(takes_self=True): let attrs compute it in __init__


@attrs.frozen
class _Leaf:
    path: tuple[str, ...]
    attribute: attrs.Attribute[Any]
    owner: type
    type: object
    env: str
    secret: bool
    default: object

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@attrs.frozen
class _Node:
    cls: type
    path: tuple[str, ...]
    children: dict[str, _Leaf | _Node]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _is_settings_class(tp: object) -> TypeGuard[type[Any]]:
    return isinstance(tp, type) and attrs.has(tp)


def _default_of(attribute: attrs.Attribute[Any]) -> object:
    default = attribute.default
    if default is attrs.NOTHING:
        return _NoDefault.REQUIRED
    if isinstance(default, _FACTORY):
        if default.takes_self:
            return _NoDefault.ATTRS
        return default.factory()
    return default


def _nested_default(attribute: attrs.Attribute[Any], parent: object | None) -> object | None:
    """The default instance of a nested settings field, when it can be had without input."""
    if parent is not None:
        return typing.cast(object, getattr(parent, attribute.name))
    try:
        value = _default_of(attribute)
    except (TypeError, ValueError):  # a factory that needs required settings
        return None
    return None if isinstance(value, _NoDefault) else value


@functools.lru_cache(maxsize=256)
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a settings class, computed once per class (read-only)."""
    return typing.get_type_hints(cls)


def _schema(
    cls: type,
    path: tuple[str, ...],
    prefix: str,
    parent_default: object | None,
    envs: dict[str, str],
) -> _Node:
    try:
        hints = _type_hints(cls)
    except Exception as exc:  # any failure means unresolvable annotations
        raise TypeError(f"cannot resolve the type hints of {cls.__qualname__}: {exc}") from exc
    children: dict[str, _Leaf | _Node] = {}
    for attribute in attrs.fields(cls):
        if not attribute.init:
            continue
        name = attribute.alias or attribute.name
        tp = hints.get(attribute.name, attribute.type)
        meta = attribute.metadata.get(_META_KEY, _SettingMeta())
        child_path = (*path, name)
        if _is_settings_class(tp):
            if meta.env is not None:
                raise TypeError(
                    f"{cls.__qualname__}.{name}: env= applies to leaf settings, "
                    "not to a nested settings class"
                )
            nested = _nested_default(attribute, parent_default)
            children[name] = _schema(tp, child_path, prefix, nested, envs)
            continue
        _describe(tp)  # fail fast on unsupported types, even when nothing sets the field
        env = meta.env or prefix + "__".join(part.upper() for part in child_path)
        other = envs.setdefault(env, ".".join(child_path))
        if other != ".".join(child_path):
            raise TypeError(f"settings {other} and {'.'.join(child_path)} both read ${env}")
        default = (
            getattr(parent_default, attribute.name)
            if parent_default is not None
            else _default_of(attribute)
        )
        children[name] = _Leaf(
            path=child_path,
            attribute=attribute,
            owner=cls,
            type=tp,
            env=env,
            secret=meta.secret or _mentions_secret(tp),
            default=default,
        )
    return _Node(cls=cls, path=path, children=children)


def _leaves(node: _Node) -> list[_Leaf]:
    out: list[_Leaf] = []
    for child in node.children.values():
        out.extend(_leaves(child) if isinstance(child, _Node) else [child])
    return out

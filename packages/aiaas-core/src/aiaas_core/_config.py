"""Typed settings: class defaults, a TOML file, environment variables and overrides.

Settings are plain ``@attrs.frozen`` classes. A field may itself be a settings class, which
nests its settings one level down::

    from typing import Literal

    import attrs
    from aiaas_core import Secret, load_settings, setting


    @attrs.frozen
    class Database:
        url: str = setting(help="PostgreSQL DSN, without the password")
        password: Secret = setting(help="database password")  # secret: its type is Secret
        pool_size: int = setting(default=10, validator=attrs.validators.ge(1))


    @attrs.frozen
    class Settings:
        db: Database
        log_level: Literal["debug", "info", "warning"] = "info"
        email_hash_key: Secret | None = setting(default=None, env="EMAIL_HASH_KEY")


    settings = load_settings(Settings, file="settings.toml")

Layering
--------
Each setting takes the value of the highest layer that sets it (lowest first):

1. the class default (``= value``, ``setting(default=...)`` or ``setting(factory=...)``; a
   nested settings field whose default is an instance lends that instance's values);
2. the TOML ``file``: top-level keys are the root class's fields, and a nested settings class
   is a table (``[db]`` with ``pool_size = 20`` sets ``db.pool_size``);
3. environment variables (``environ``, by default :data:`os.environ`);
4. the explicit ``overrides`` mapping: dotted keys (``{"db.pool_size": 5}``) or nested mappings
   (``{"db": {"pool_size": 5}}``), or a settings instance for a nested field.

Environment variable names
--------------------------
``prefix`` + the field path, upper-cased, with ``__`` (two underscores) between nesting levels:
with the default prefix ``AIAAS_``, ``log_level`` is read from ``AIAAS_LOG_LEVEL`` and
``db.pool_size`` from ``AIAAS_DB__POOL_SIZE``. ``setting(env="EMAIL_HASH_KEY")`` replaces the
whole name, prefix included. Names are case-sensitive. Environment variables that carry the
prefix but match no setting are **ignored**, because other tools share prefixes; unknown keys
in the TOML file and unknown override keys, by contrast, are problems (they are typos).

Values and types
----------------
Text (every environment value, and TOML strings) is converted to the declared type:

* ``str`` as is; ``Secret`` wraps it; ``Path`` (non-empty);
* ``int`` (``42``, ``-3``, ``1_000``); ``float`` (finite: ``0.5``, ``1e3``);
* ``bool``: ``true/false``, ``yes/no``, ``on/off``, ``1/0``, in any case;
* enums by value or name, ``Literal[...]`` by choice (exact first, then case-insensitively when
  that is unambiguous);
* ``timedelta``: ``250ms``, ``30s``, ``5m``, ``1h``, ``2d``, ``1w``, ``us``, combined as in
  ``1h30m``, or a plain number of seconds (``1.5``); never negative;
* ``tuple[X, ...]``, ``list[X]`` and ``frozenset[X]`` of the scalars above: comma-separated
  (``a, b, c``; an empty value is an empty collection) or a JSON array (``["a,b", "c"]``) when
  an item itself contains a comma;
* ``X | None``: an empty value (or ``None`` in overrides) means ``None``.

TOML and override values may also be native values of the right type (TOML integers, floats,
booleans and arrays; any Python value in overrides). Durations in TOML are strings or numbers
of seconds.

Problems
--------
:func:`load_settings` reports every problem at once in one :class:`~aiaas_core.ConfigError`,
whose ``problems`` is a tuple of :class:`ConfigProblem`: values that do not convert, required
settings that no layer sets, unknown keys in the file or in overrides, a missing or malformed
file (then settings no other layer sets are not also reported as missing: the file may
have set them), and values that attrs validators (``validator=``) reject with ``ValueError`` or
``TypeError``. Values of secret settings are shown as ``'**********'``.

Secrets
-------
A setting is secret when its type is :class:`Secret` (also ``Secret | None`` and collections of
``Secret``) or when it is declared with ``setting(secret=True)``. Secret values never appear in
a settings object's ``repr``, in a :class:`ConfigProblem` or :class:`~aiaas_core.ConfigError`,
or in :func:`settings_summary` (which shows ``"<redacted>"``).
"""

from __future__ import annotations

import enum
import functools
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any, Final, Literal, NoReturn, TypeGuard, TypeVar, final, overload

import attrs

from aiaas_core._errors import ConfigError

__all__ = ["ConfigProblem", "Secret", "load_settings", "setting", "settings_summary"]

_T = TypeVar("_T")

#: What a secret value is shown as in reprs and in problems.
SECRET_MASK: Final = "**********"  # noqa: S105 -- the mask, not a password
#: What a secret setting is shown as in :func:`settings_summary`.
REDACTED: Final = "<redacted>"

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
_TOML_LINE: Final = re.compile(r"at line (\d+)")
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


# --------------------------------------------------------------------------------------------
# Layers


@attrs.frozen
class _Given:
    value: object
    source: str


def _hint(leaf: _Leaf, source: str, file: str | None) -> str:
    if source.startswith("env "):
        return f"fix or unset {leaf.env}"
    if source.startswith("file "):
        return f"fix {leaf.dotted!r} in {file}"
    if source == "override":
        return f"fix the override for {leaf.dotted!r}"
    if source == "default":
        return f"fix the default of {leaf.owner.__qualname__}.{leaf.path[-1]} or set {leaf.env}"
    return f"set {leaf.env}, or {leaf.dotted!r} in the settings file"


def _suggest(node: _Node, key: str) -> str:
    import difflib  # noqa: PLC0415 -- only on a typo

    close = difflib.get_close_matches(key, list(node.children), n=1)
    if close:
        return f"a known setting (did you mean {'.'.join((*node.path, close[0]))!r}?)"
    known = ", ".join(node.children) or "none"
    return f"a known setting (known here: {known})"


def _read_file(shown: str, problems: list[ConfigProblem]) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 -- only when there is a file

    source = f"file {shown}"
    try:
        text = Path(shown).read_bytes().decode("utf-8")
    except FileNotFoundError:
        problems.append(
            ConfigProblem(
                "", source, None, "an existing TOML file", f"create {shown} or fix the path"
            )
        )
        return {}
    except OSError as exc:
        problems.append(
            ConfigProblem("", source, None, "a readable TOML file", f"{exc.strerror or exc}")
        )
        return {}
    except UnicodeDecodeError:
        problems.append(
            ConfigProblem("", source, None, "UTF-8 encoded TOML", f"re-save {shown} as UTF-8")
        )
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _TOML_LINE.search(str(exc))
        where = f"at line {line.group(1)} of {shown}" if line else f"in {shown}"
        problems.append(
            ConfigProblem("", source, None, f"valid TOML ({exc})", f"fix the syntax {where}")
        )
        return {}


def _file_layer(
    node: _Node,
    table: Mapping[str, Any],
    file: str,
    given: dict[tuple[str, ...], _Given],
    problems: list[ConfigProblem],
) -> None:
    source = f"file {file}"
    for key, value in table.items():
        child = node.children.get(key)
        dotted = ".".join((*node.path, key))
        if child is None:
            problems.append(
                ConfigProblem(
                    dotted,
                    source,
                    None,
                    _suggest(node, key),
                    f"remove or rename {dotted!r} in {file}",
                )
            )
        elif isinstance(child, _Node):
            if isinstance(value, dict):
                _file_layer(child, value, file, given, problems)
            else:
                problems.append(
                    ConfigProblem(
                        dotted,
                        source,
                        None,
                        f"a table ([{dotted}]) of {child.cls.__qualname__} settings",
                        f"make {dotted!r} a table in {file}",
                    )
                )
        else:
            given[child.path] = _Given(value, source)


def _override_layer(
    node: _Node,
    overrides: Mapping[str, object],
    given: dict[tuple[str, ...], _Given],
    problems: list[ConfigProblem],
) -> None:
    for key, value in overrides.items():
        target: _Node | _Leaf = node
        parts = str(key).split(".")
        for index, part in enumerate(parts):
            child = target.children.get(part) if isinstance(target, _Node) else None
            if child is None:
                dotted = ".".join((*node.path, *parts[: index + 1]))
                expected = (
                    _suggest(target, part) if isinstance(target, _Node) else "a known setting"
                )
                problems.append(
                    ConfigProblem(
                        dotted, "override", None, expected, f"remove or rename the override {key!r}"
                    )
                )
                break
            target = child
        else:
            if isinstance(target, _Leaf):
                given[target.path] = _Given(value, "override")
            elif isinstance(value, target.cls):
                fields = attrs.fields(target.cls)
                values = {a.alias or a.name: getattr(value, a.name) for a in fields if a.init}
                _override_layer(target, values, given, problems)
            elif isinstance(value, Mapping):
                _override_layer(target, value, given, problems)
            else:
                problems.append(
                    ConfigProblem(
                        target.dotted,
                        "override",
                        None,
                        f"a mapping or a {target.cls.__qualname__} instance",
                        f"fix the override {key!r}",
                    )
                )


# --------------------------------------------------------------------------------------------
# Building instances


class _Failed(enum.Enum):
    FAILED = "failed"


def _apply_converter(attribute: attrs.Attribute[Any], value: object, inst: object) -> object:
    converter: Any = attribute.converter
    if converter is None:
        return value
    if isinstance(converter, attrs.Converter):
        # attrs.Converter (attrs >= 24.1): the wrapped callable, given self/field on request.
        spec: Any = converter  # its attributes are not in attrs' type stubs
        args: list[object] = [value]
        if spec.takes_self:
            args.append(inst)
        if spec.takes_field:
            args.append(attribute)
        return spec.converter(*args)
    return converter(value)


class _Builder:
    def __init__(self, file: str | None) -> None:
        self.file = file
        #: The file could not be read: settings it may have set are not reported as missing.
        self.file_failed = False
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()

    def remember_secret(self, value: object) -> None:
        if isinstance(value, Secret):
            value = value.get_secret_value()
        if isinstance(value, str) and value:
            self.secrets.add(value)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                self.remember_secret(item)

    def problem(self, leaf: _Leaf, given: _Given, expected: str) -> None:
        shown = SECRET_MASK if leaf.secret and given.value is not None else given.value
        self.problems.append(
            ConfigProblem(
                leaf.dotted, given.source, shown, expected, _hint(leaf, given.source, self.file)
            )
        )

    def build(self, node: _Node, given: Mapping[tuple[str, ...], _Given]) -> object:
        kwargs: dict[str, object] = {}
        origin: dict[str, tuple[_Leaf, _Given]] = {}
        failed = False
        for name, child in node.children.items():
            if isinstance(child, _Node):
                built = self.build(child, given)
                if built is _Failed.FAILED:
                    failed = True
                else:
                    kwargs[name] = built
                continue
            entry = given.get(child.path)
            if child.secret:
                self.remember_secret(entry.value if entry is not None else child.default)
            if entry is None:
                if child.default is _NoDefault.REQUIRED:
                    failed = True
                    if self.file_failed:
                        continue
                    self.problems.append(
                        ConfigProblem(
                            child.dotted,
                            "missing",
                            None,
                            _describe(child.type),
                            _hint(child, "missing", self.file),
                        )
                    )
                elif child.default is not _NoDefault.ATTRS:
                    kwargs[name] = child.default
                    origin[name] = (child, _Given(child.default, "default"))
                continue
            try:
                kwargs[name] = _convert(child.type, entry.value)
            except _Mismatch as mismatch:
                self.problem(child, entry, mismatch.expected)
                failed = True
                continue
            origin[name] = (child, entry)
        if failed:
            self.diagnose(node, kwargs, origin)
            return _Failed.FAILED
        try:
            return node.cls(**kwargs)
        except (ValueError, TypeError) as exc:
            if not self.diagnose(node, kwargs, origin):
                self.problems.append(
                    ConfigProblem(
                        node.dotted,
                        "validation",
                        None,
                        f"settings that {node.cls.__qualname__} accepts ({exc})",
                        "fix the settings named in the message",
                    )
                )
            return _Failed.FAILED

    def diagnose(
        self,
        node: _Node,
        kwargs: Mapping[str, object],
        origin: Mapping[str, tuple[_Leaf, _Given]],
    ) -> bool:
        """Run each field's converter and validators on its own; report what they reject."""
        inst: Any = object.__new__(node.cls)
        attributes = {a.alias or a.name: a for a in attrs.fields(node.cls)}
        values: dict[str, object] = {}
        found = False
        for name, value in kwargs.items():
            attribute = attributes[name]
            try:
                values[name] = _apply_converter(attribute, value, inst)
            except (ValueError, TypeError) as exc:
                found |= self.reject(name, origin, exc)
                continue
            object.__setattr__(inst, attribute.name, values[name])
        for name, value in values.items():
            validator: Any = attributes[name].validator
            if validator is None:
                continue
            try:
                validator(inst, attributes[name], value)
            except (ValueError, TypeError) as exc:
                found |= self.reject(name, origin, exc)
            except AttributeError:  # a cross-field validator reading a field that failed
                continue
        return found

    def reject(self, name: str, origin: Mapping[str, tuple[_Leaf, _Given]], exc: Exception) -> bool:
        if name not in origin:  # a nested settings instance: its own problems are reported
            return False
        leaf, given = origin[name]
        self.problem(leaf, given, f"a value that passes validation ({exc})")
        return True

    def scrubbed(self) -> list[ConfigProblem]:
        secrets = sorted((s for s in self.secrets if len(s) >= 3), key=len, reverse=True)

        def scrub(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, SECRET_MASK)
            return text

        out = []
        for problem in self.problems:
            value = problem.value
            if isinstance(value, str) and value != scrub(value):
                value = SECRET_MASK
            out.append(
                attrs.evolve(
                    problem, value=value, expected=scrub(problem.expected), hint=scrub(problem.hint)
                )
            )
        return out


# --------------------------------------------------------------------------------------------
# Public entry points


def load_settings(
    cls: type[_T],
    *,
    prefix: str = "AIAAS_",
    environ: Mapping[str, str] | None = None,
    file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> _T:
    """Load and validate ``cls`` from defaults, ``file``, the environment and ``overrides``.

    See the module documentation for the layering, the environment variable names and the
    accepted value forms. Raises :class:`~aiaas_core.ConfigError` listing every problem found
    (``.problems``), and :class:`TypeError` when ``cls`` itself is not a usable settings class
    (not an attrs class, an unsupported field type, two settings reading one variable).
    """
    if not _is_settings_class(cls):
        raise TypeError(f"load_settings() needs an attrs class, got {cls!r}")
    schema = _schema(cls, (), prefix, None, {})
    shown_file = os.fspath(file) if file is not None else None
    builder = _Builder(shown_file)
    given: dict[tuple[str, ...], _Given] = {}
    if file is not None and shown_file is not None:
        table = _read_file(shown_file, builder.problems)
        builder.file_failed = bool(builder.problems)
        _file_layer(schema, table, shown_file, given, builder.problems)
    env = os.environ if environ is None else environ
    for leaf in _leaves(schema):
        if leaf.env in env:
            given[leaf.path] = _Given(env[leaf.env], f"env {leaf.env}")
    if overrides:
        _override_layer(schema, overrides, given, builder.problems)
    result = builder.build(schema, given)
    if builder.problems or result is _Failed.FAILED:
        raise ConfigError(problems=builder.scrubbed())
    return typing.cast(_T, result)


def _jsonable(value: object) -> object:
    if isinstance(value, Secret):
        return REDACTED
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _summarise(inst: Any, prefix: str, out: dict[str, object]) -> None:
    for attribute in attrs.fields(type(inst)):
        value = getattr(inst, attribute.name)
        name = prefix + (attribute.alias or attribute.name)
        if attrs.has(type(value)):
            _summarise(value, name + ".", out)
            continue
        meta = attribute.metadata.get(_META_KEY)
        if meta is not None and meta.secret:
            out[name] = None if value is None else REDACTED
        else:
            out[name] = _jsonable(value)


def settings_summary(settings: object) -> dict[str, object]:
    """The effective settings as a flat, JSON-serialisable dict for a start-up log line.

    Keys are dotted setting names (``db.pool_size``). Values are JSON-ready: durations in
    seconds (float), paths as strings, enums as their values, collections as lists. Secret
    settings are kept but shown as ``"<redacted>"`` (``None`` when unset), so the summary tells
    whether a secret is configured without revealing it.
    """
    if not attrs.has(type(settings)):
        raise TypeError(f"settings_summary() needs an attrs instance, got {type(settings)!r}")
    out: dict[str, object] = {}
    _summarise(settings, "", out)
    return out

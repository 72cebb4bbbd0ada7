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
import math
import os
import re
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any, Final, TypeVar

import attrs

from aiaas_core._config_schema import (
    _META_KEY,
    SECRET_MASK,
    ConfigProblem,
    Secret,
    _convert,
    _describe,
    _is_settings_class,
    _Leaf,
    _leaves,
    _Mismatch,
    _Node,
    _NoDefault,
    _schema,
    setting,
)
from aiaas_core._errors import ConfigError

__all__ = ["ConfigProblem", "Secret", "load_settings", "setting", "settings_summary"]

_T = TypeVar("_T")

#: What a secret setting is shown as in :func:`settings_summary`.
REDACTED: Final = "<redacted>"
_TOML_LINE: Final = re.compile(r"at line (\d+)")

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

"""Loading a spec: strict YAML (no duplicate keys), strict structuring with cattrs, and every
problem reported with its exact dotted path; the inverse (:func:`spec_to_dict`) and the
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

import attrs

from aiaas_infra._errors import SpecError, SpecProblem
from aiaas_infra.spec._model import PlatformSpec
from aiaas_infra.spec._rules import _InvalidError

__all__ = [
    "example_spec_path",
    "load_spec",
    "spec_fingerprint",
    "spec_from_dict",
    "spec_to_dict",
]

# --------------------------------------------------------------------------------------------
# Loading


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


class _MismatchError(TypeError):
    """A value of the wrong JSON type."""


def _strict_str(value: object, _tp: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        raise _MismatchError(
            f"expected a string, got the number {value!r}: quote it in YAML (an unquoted "
            "1.30 is read as the number 1.3)"
        )
    raise _MismatchError(f"expected a string, got {_kind(value)}")


def _strict_int(value: object, _tp: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _MismatchError(f"expected an integer, got {_kind(value)} {value!r}")


def _strict_bool(value: object, _tp: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _MismatchError(f"expected true or false, got {_kind(value)} {value!r}")


def _is_tuple(tp: Any) -> bool:
    return get_origin(tp) is tuple


def _is_dict(tp: Any) -> bool:
    return get_origin(tp) is dict


def _converter() -> Any:
    import cattrs  # noqa: PLC0415 -- heavy; only loading needs it
    from cattrs.errors import (  # noqa: PLC0415
        IterableValidationError,
        IterableValidationNote,
    )
    from cattrs.gen import make_dict_structure_fn  # noqa: PLC0415

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)

    def fail(errors: list[Exception], tp: Any) -> None:
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)

    def structure_tuple(value: object, tp: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise _MismatchError(f"expected a list, got {_kind(value)}")
        arg = get_args(tp)[0]
        items: list[Any] = []
        errors: list[Exception] = []
        for i, item in enumerate(value):
            try:
                items.append(conv.structure(item, arg))
            except Exception as exc:  # noqa: BLE001 -- collected and re-raised with its index
                exc.add_note(IterableValidationNote(f"@ index {i}", i, arg))
                errors.append(exc)
        fail(errors, tp)
        return tuple(items)

    def structure_dict(value: object, tp: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _MismatchError(f"expected a mapping, got {_kind(value)}")
        val_tp = get_args(tp)[1]
        out: dict[str, Any] = {}
        errors: list[Exception] = []
        for key, item in value.items():
            try:
                if not isinstance(key, str):
                    raise _MismatchError(f"keys must be strings, got {_kind(key)} {key!r}")
                out[key] = conv.structure(item, val_tp)
            except Exception as exc:  # noqa: BLE001 -- collected and re-raised with its key
                exc.add_note(IterableValidationNote(f"@ key {key!r}", key, val_tp))
                errors.append(exc)
        fail(errors, tp)
        return out

    conv.register_structure_hook_func(_is_tuple, structure_tuple)
    conv.register_structure_hook_func(_is_dict, structure_dict)

    def attrs_hook_factory(tp: Any) -> Callable[[object, Any], Any]:
        generated = make_dict_structure_fn(
            tp, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def hook(value: object, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _MismatchError(f"expected a mapping, got {_kind(value)}")
            return generated(value, t)

        return hook

    conv.register_structure_hook_factory(attrs.has, attrs_hook_factory)
    return conv


def _walk_errors(exc: BaseException, path: str, out: list[SpecProblem]) -> None:
    """Flatten a cattrs error tree into problems with exact dotted paths."""
    from cattrs.errors import (  # noqa: PLC0415
        AttributeValidationNote,
        ClassValidationError,
        ForbiddenExtraKeysError,
        IterableValidationError,
        IterableValidationNote,
    )

    def child_path(child: BaseException) -> str:
        for note in getattr(child, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                return f"{path}.{note.name}" if path else note.name
            if isinstance(note, IterableValidationNote):
                if isinstance(note.index, int):
                    return f"{path}[{note.index}]"
                return f"{path}.{note.index}" if path else str(note.index)
        return path

    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for child in exc.exceptions:
            _walk_errors(child, child_path(child), out)
    elif isinstance(exc, ForbiddenExtraKeysError):
        allowed = sorted(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            where = f"{path}.{key}" if path else key
            out.append(SpecProblem(where, f"unknown key (allowed here: {', '.join(allowed)})"))
    elif isinstance(exc, _InvalidError):
        for rel, message in exc.problems:
            if not rel:
                where = path
            elif rel.startswith("["):
                where = f"{path}{rel}"
            else:
                where = f"{path}.{rel}" if path else rel
            out.append(SpecProblem(where, message))
    elif isinstance(exc, KeyError):
        out.append(SpecProblem(path, f"required key {exc.args[0]!r} is missing"))
    elif isinstance(exc, _MismatchError):
        out.append(SpecProblem(path, str(exc)))
    else:  # a Literal choice cattrs refused
        text = str(exc) or type(exc).__name__
        choices = re.search(r"not in literal .*Literal\[(.*)\]", text)
        if choices:
            text = f"must be one of {choices.group(1)}, got {text.split(' not in literal')[0]}"
        out.append(SpecProblem(path, text))


def spec_from_dict(data: object, *, source: str | None = None) -> PlatformSpec:
    """Build a :class:`PlatformSpec` from plain data (as parsed from YAML or JSON).

    Raises :class:`~aiaas_infra.SpecError` listing every problem found.
    """
    if not isinstance(data, Mapping):
        problem = SpecProblem("", f"the spec must be a mapping, got {_kind(data)}")
        raise SpecError([problem], source=source)
    conv = _converter()
    try:
        spec: PlatformSpec = conv.structure(dict(data), PlatformSpec)
    except Exception as exc:  # noqa: BLE001 -- every structuring failure becomes a problem
        problems: list[SpecProblem] = []
        _walk_errors(exc, "", problems)
        raise SpecError(list(dict.fromkeys(problems)), source=source) from None
    return spec


def _yaml_loader() -> Any:
    import yaml  # noqa: PLC0415

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return dict(loader.construct_pairs(node, deep=deep))

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def load_spec(source: str | Path) -> PlatformSpec:
    """Load and validate a ``platform.yaml`` (a path, or YAML text when it contains a newline)."""
    import yaml  # noqa: PLC0415

    if isinstance(source, Path) or "\n" not in source:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problem = SpecProblem("", f"cannot read {path}: {exc.strerror}")
            raise SpecError([problem], source=str(path)) from None
        shown: str | None = str(path)
    else:
        text, shown = source, None
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(where, f"not valid YAML: {reason}")], source=shown) from None
    return spec_from_dict(data, source=shown)


def spec_to_dict(spec: PlatformSpec) -> dict[str, Any]:
    """Plain data for ``spec`` (the inverse of :func:`spec_from_dict`); defaults are included."""
    out: dict[str, Any] = _converter().unstructure(spec)
    return out


def spec_fingerprint(spec: PlatformSpec) -> str:
    """A stable digest of the spec's content: equal specs, equal fingerprints."""
    canonical = json.dumps(spec_to_dict(spec), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def example_spec_path() -> Path:
    """The complete example spec shipped with the package (four environments)."""
    ref = resources.files("aiaas_infra") / "examples" / "platform.yaml"
    return Path(str(ref))

"""Lazy exports: a package's public names imported from their private modules on first use.

Every aiaas package keeps ``import aiaas_x`` cheap the same way: its ``__init__`` declares a
``_LAZY`` table (public name -> private module, relative to the package) and lets
:func:`lazy_exports` build the module-level ``__getattr__`` and ``__dir__`` (PEP 562)::

    _LAZY: dict[str, str] = {"Migrator": "migrations._migrator"}
    __all__ = ["Migrator", "__version__"]
    if TYPE_CHECKING:
        from aiaas_db.migrations._migrator import Migrator
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY)

A resolved name is cached in the package's globals, so later lookups cost nothing. A name in
``deprecated`` (public name -> message) still resolves through the table but warns on every
access through the package and is never cached, so each access is seen.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def _is_dotted_identifier(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def lazy_exports(
    module_name: str,
    table: Mapping[str, str],
    *,
    deprecated: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level ``__getattr__`` and ``__dir__`` from its ``_LAZY`` table.

    ``module_name`` is the package's ``__name__`` (it must already be in ``sys.modules``, as it is
    while its ``__init__`` runs). ``table`` maps each lazily exported name to the module that
    defines it, relative to the package (``"_errors"``, ``"migrations._migrator"``).
    ``deprecated`` maps names of ``table`` that are kept only for compatibility to the message
    their use warns with (``AiaasDeprecationWarning``, a ``DeprecationWarning``, pointing at the
    line that accessed the name); they are left out of ``dir()``.

    The returned ``__getattr__`` raises ``AttributeError`` for a name the table lacks, like any
    module; an import error of the defining module propagates unchanged (a missing optional
    dependency stays visible). ``__dir__`` lists the package's globals and its ``__all__`` (or
    the table's names when it has no ``__all__``), sorted.

    Raises ``ValueError`` when the package is not imported, a table name is not an identifier, a
    module path is not a relative dotted name, or a deprecated name is missing from the table.
    """
    module = sys.modules.get(module_name)
    if module is None:
        raise ValueError(
            f"lazy_exports({module_name!r}, ...): no module of that name is imported; "
            "call it from the package's __init__ with __name__"
        )
    entries: list[tuple[object, object]] = list(table.items())  # callers may pass anything
    for name, target in entries:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"lazy_exports({module_name!r}, ...): {name!r} is not a valid attribute name; "
                "table keys must be Python identifiers"
            )
        if not isinstance(target, str) or not _is_dotted_identifier(target):
            raise ValueError(
                f"lazy_exports({module_name!r}, ...): {name!r} points at {target!r}, which is "
                "not a module path relative to the package (write e.g. '_errors' or "
                "'migrations._migrator')"
            )
    checked = {str(name): str(target) for name, target in entries}
    messages = dict(deprecated or {})
    for name in messages:
        if name not in checked:
            raise ValueError(
                f"lazy_exports({module_name!r}, ...): deprecated name {name!r} is not in the "
                "table; add it with the module that defines it"
            )
    namespace = module.__dict__

    def __getattr__(name: str) -> Any:  # noqa: N807 -- the module hook of PEP 562
        target = checked.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{module_name}.{target}"), name)
        message = messages.get(name)
        if message is not None:
            from aiaas_core._versioning import _emit  # noqa: PLC0415 -- only on deprecated use

            _emit(message, stacklevel=2)  # the frame that accessed the name
            return value
        namespace[name] = value  # cache: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:  # noqa: N807 -- the module hook of PEP 562
        public = namespace.get("__all__", checked)
        return sorted(set(namespace).union(public).difference(messages))

    return __getattr__, __dir__

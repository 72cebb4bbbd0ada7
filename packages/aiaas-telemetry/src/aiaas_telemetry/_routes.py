"""Route templates for span names and metric labels (``/v1/items/{id}``, never the raw path).

A *route resolver* is any callable ``resolver(scope) -> str | None`` that returns the template
of the route an ASGI request will reach, or ``None`` when no route matches. Two are built in:

- :class:`TemplateRoutes` -- from a list of templates (``"/v1/items/{id}"``,
  ``"/files/{rest:path}"``): static templates by one dictionary lookup, dynamic ones by one
  precompiled regular expression, first match in list order;
- :class:`RouterRoutes` -- from the application's own router (anything with a Starlette-style
  ``routes`` list whose entries have ``matches(scope)`` and ``path``), mounts included.

:func:`as_route_resolver` turns what a user passes (a list of templates, a router, an app with a
``router``, or a callable) into a resolver. When a resolver finds nothing, the middleware also
reads ``scope["route"]`` after the application ran (Starlette and FastAPI put the matched route
there), so a Starlette app gets route templates with no configuration at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from aiaas_core import Scope

__all__ = ["RouteResolver", "RouterRoutes", "TemplateRoutes", "as_route_resolver"]

#: The route label and span-name suffix of a request no route matched.
UNMATCHED: Final = "<unmatched>"

_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_CONVERTORS: Final = {
    "str": r"[^/]+",
    "int": r"[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "path": r".*",
}


@runtime_checkable
class RouteResolver(Protocol):
    """``resolver(scope)`` returns the matched route template, or ``None``."""

    def __call__(self, scope: Scope, /) -> str | None: ...


def _template_regex(template: str) -> str:
    if not template.startswith("/"):
        raise ValueError(f"route template must start with '/', got {template!r}")
    out: list[str] = []
    pos = 0
    names: set[str] = set()
    for m in _PARAM.finditer(template):
        literal = template[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"route template {template!r} has a malformed '{{name}}' parameter")
        out.append(re.escape(literal))
        name, conv = m.group(1), m.group(2) or "str"
        if conv not in _CONVERTORS:
            raise ValueError(
                f"route template {template!r}: unknown convertor {conv!r};"
                f" use one of {sorted(_CONVERTORS)}"
            )
        if name in names:
            raise ValueError(f"route template {template!r} repeats parameter {name!r}")
        names.add(name)
        out.append(_CONVERTORS[conv])
        pos = m.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"route template {template!r} has a malformed '{{name}}' parameter")
    out.append(re.escape(tail))
    return "".join(out)


class TemplateRoutes:
    """Resolve the request path against a list of route templates.

    Parameters are ``{name}`` (one path segment) or ``{name:convertor}`` with a Starlette
    convertor (``str``, ``int``, ``float``, ``uuid``, ``path``). A static template wins over
    a dynamic one; dynamic templates are tried in the order given. All matching machinery is
    built here, once: a request costs a dictionary lookup and at most one regular expression
    match.
    """

    __slots__ = ("_dynamic", "_regex", "_static", "templates")

    def __init__(self, templates: Iterable[str]) -> None:
        self.templates: tuple[str, ...] = tuple(dict.fromkeys(templates))
        self._static: dict[str, str] = {}
        self._dynamic: dict[str, str] = {}
        parts: list[str] = []
        for template in self.templates:
            if not isinstance(template, str):
                raise TypeError(f"route templates must be strings, got {template!r}")
            pattern = _template_regex(template)
            if _PARAM.search(template) is None:
                self._static[template] = template
                continue
            group = f"r{len(parts)}"
            self._dynamic[group] = template
            parts.append(f"(?P<{group}>{pattern})")
        self._regex = re.compile("|".join(parts)) if parts else None

    def __call__(self, scope: Scope, /) -> str | None:
        path: str = scope["path"]
        found = self._static.get(path)
        if found is not None or self._regex is None:
            return found
        match = self._regex.fullmatch(path)
        if match is None:
            return None
        return self._dynamic[match.lastgroup]  # type: ignore[index]

    def __repr__(self) -> str:
        return f"TemplateRoutes({list(self.templates)!r})"


def _route_template(route: Any, prefix: str = "") -> str | None:
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    if not hasattr(route, "endpoint") and hasattr(route, "app"):
        # A mount (Starlette's Mount has an app and no endpoint): its own path is a prefix.
        return f"{prefix}{path}/{{path:path}}"
    return f"{prefix}{path}"


class RouterRoutes:
    """Resolve routes with the application's router (Starlette-style ``routes`` and ``matches``).

    A route that matches fully wins; otherwise the first partial match (a known path with
    another method, which the app answers with 405) still names the template. Mounts are
    followed into their sub-routes and their prefixes joined (``/api`` + ``/items/{id}``).
    """

    __slots__ = ("_routes",)

    def __init__(self, router: Any) -> None:
        routes = getattr(router, "routes", None)
        if routes is None:
            raise TypeError(
                f"{type(router).__name__} has no 'routes'; pass a router or a list of templates"
            )
        self._routes = router

    def __call__(self, scope: Scope, /) -> str | None:
        return self._resolve(self._routes.routes, scope, "", 0)

    def _resolve(self, routes: Sequence[Any], scope: Scope, prefix: str, depth: int) -> str | None:
        partial: str | None = None
        for route in routes:
            try:
                match, child = route.matches(scope)
            except Exception:  # noqa: BLE001, S112 -- a custom route that cannot judge this scope
                continue
            kind = getattr(match, "name", None)
            if kind == "FULL":
                sub = getattr(route, "routes", None)
                if sub and depth < 8:
                    child_scope = dict(scope)
                    child_scope.update(child)
                    path = getattr(route, "path", "")
                    found = self._resolve(sub, child_scope, f"{prefix}{path}", depth + 1)
                    if found is not None:
                        return found
                return _route_template(route, prefix)
            if kind == "PARTIAL" and partial is None:
                partial = _route_template(route, prefix)
        return partial


def template_from_scope(scope: Scope) -> str | None:
    """The template of the route a Starlette/FastAPI router put in ``scope["route"]``."""
    route = scope.get("route")
    if route is None:
        return None
    return _route_template(route)


def as_route_resolver(
    routes: RouteResolver | Sequence[str] | Any | None,
) -> Callable[[Scope], str | None] | None:
    """Turn a list of templates, a router, an app with a router, or a callable into a resolver."""
    if routes is None:
        return None
    if isinstance(routes, str):
        raise TypeError("routes must be a list of templates, not one string")
    if isinstance(routes, Sequence) and all(isinstance(t, str) for t in routes):
        return TemplateRoutes(routes)
    if isinstance(routes, TemplateRoutes | RouterRoutes):
        return routes
    if getattr(routes, "routes", None) is not None:
        return RouterRoutes(routes)
    router = getattr(routes, "router", None)
    if router is not None and getattr(router, "routes", None) is not None:
        return RouterRoutes(router)
    if callable(routes):
        return routes
    raise TypeError(
        "routes must be a list of templates, a router, an app with a router, or a callable"
        f" scope -> template; got {type(routes).__name__}"
    )

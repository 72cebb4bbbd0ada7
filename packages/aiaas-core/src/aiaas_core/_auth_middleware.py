"""Pure-ASGI authentication and authorisation: credential -> actor -> policy decision.

:class:`AuthMiddleware` wraps any ASGI 3 application (no framework needed)::

    app = AuthMiddleware(
        inner_app,
        authenticate=verifier.verify,  # async (credential: str) -> Actor
        policy=bundle.policy,
        rules=[
            RouteRule("GET", "/v1/environments", "environments:read"),
            RouteRule("GET", "/v1/environments/{environment}/handoff", "handoff:{environment}"),
        ],
        audit=audit_queue.put_nowait,  # optional; called with an AuthAuditEvent
    )

For every ``http`` and ``websocket`` request:

1. A *public path* (``public_paths``, default ``/health``, ``/ready``, ``/metrics``) passes
   straight through, unauthenticated. An entry ending in ``*`` is a prefix (``/docs/*``);
   others match the path exactly.
2. The credential is read from ``Authorization: Bearer <token>`` (the header named by
   ``header``) or from ``X-API-Key: <key>`` (``api_key_header``; ``None`` turns it off).
   Tokens are RFC 6750 ``b64token`` characters (letters, digits, ``-._~+/``, trailing ``=``);
   the scheme name is case-insensitive.
3. ``authenticate(credential)`` returns the :class:`~aiaas_core.Actor` or raises
   :class:`~aiaas_core.AuthenticationError` (any :class:`~aiaas_core.AiaasError` is rendered
   with its own status and code; any other exception becomes a 500 whose text is not shown).
4. The actor is recorded with :func:`~aiaas_core.set_actor` for the rest of the request (logs
   and error bodies see it; the previous value is restored afterwards), in
   ``scope["aiaas.actor"]``, and in ``scope["state"]["actor"]`` when the server provides a
   state dict (Starlette's ``request.state.actor``).
5. The route is looked up in ``rules``; the :class:`~aiaas_core.Policy` decides whether the
   actor holds the permission it needs. Allowed requests reach the application.

Rejections use the shared error body (``error-response.schema.json``), or RFC 7807 with
``problem=True``, or, for paths under a prefix named in ``error_renderers``, that renderer's body:
``error_renderers={"/v1/": openai_error_response}`` answers an OpenAI-compatible API's paths in
OpenAI's error shape. A renderer takes the :class:`~aiaas_core.AiaasError` and returns the status,
the ASGI headers (``content-type`` and ``content-length`` included) and the body, like
:func:`~aiaas_core.error_response`; the longest matching prefix wins:

====== =========================== ========================================================
status code                        when
====== =========================== ========================================================
400    ``AUTH_HEADER_INVALID``     credential header not visible ASCII, empty or malformed
                                   token, the header repeated, or both headers sent (401 with
                                   ``WWW-Authenticate`` when ``malformed_credential_status=401``:
                                   for an API whose schema lets a credential be any string, a
                                   malformed one is a rejected credential)
401    ``AUTH_UNAUTHENTICATED``    no credential (``WWW-Authenticate: Bearer realm="aiaas"``)
401    ``AUTH_SCHEME_UNSUPPORTED`` ``Authorization`` with a scheme other than ``Bearer``
401    (the authenticator's code)  the authenticator rejected the credential
431    ``AUTH_HEADER_TOO_LARGE``   credential header value longer than ``max_header_bytes``
                                   (RFC 6585 "Request Header Fields Too Large")
403    ``AUTH_ROLE_DENIED``        the policy denied the permission (the body names the
                                   actor), or a path value cannot form a permission
403    ``AUTH_ROUTE_UNMAPPED``     no route rule covers this method and path (deny by
                                   default)
403    ``AUTH_SCOPE_DENIED``       the route rule names a ``scope`` the actor's scopes do
                                   not include (the actor has scopes, none is ``*``)
500    ``INTERNAL_ERROR``          the authenticator raised something other than an
                                   ``AiaasError`` (only its type is logged), or returned
                                   something other than an ``Actor``
====== =========================== ========================================================

Authentication is checked before the route: an anonymous client gets 401 on mapped and
unmapped paths alike, so it cannot probe which routes exist. A websocket is authenticated the
same way before it is accepted; a rejection is sent as an HTTP response when the server
supports the ``websocket.http.response`` extension, and as ``websocket.close`` with code 1008
(policy violation) otherwise. ``lifespan`` passes through; any other scope type is refused
with an exception.

Route rules
-----------
``RouteRule(method, path_template, permission)``. ``method`` is an HTTP method, ``*`` for
any, or ``WEBSOCKET`` for websocket connections; a ``GET`` rule also covers ``HEAD``.
``path_template`` is matched against the whole path (``root_path`` removed): literal segments
match exactly, ``{name}`` matches one non-empty segment (no ``/``). A trailing slash is part
of the path, so ``/v1/environments/`` is not ``/v1/environments``.

``permission`` is a concrete ``action:resource`` (no wildcards) whose segments may hold
``{name}`` placeholders filled from the path, e.g. ``handoff:{environment}`` or
``handoff:env-{environment}``. A filled segment must be a valid permission segment (letters,
digits, ``.``, ``_``, ``-``; see :mod:`aiaas_core._policy`); when a path value cannot make one
(``/v1/environments/bad%20name/handoff``) the request is denied with ``AUTH_ROLE_DENIED``.

``RouteRule(..., scope="embeddings:create")`` also requires a *scope*: scopes narrow what the
roles allow, per credential (an API key made for one job). An actor with no scopes
(``Actor.scopes == ()``) is limited by its roles alone; an actor with scopes must hold the rule's
scope or ``*``, else the request is denied with ``AUTH_SCOPE_DENIED``. The policy is checked
first, so a denial names the permission when both would fail.

Lookup order: templates without placeholders first (a dictionary lookup), then templates with
placeholders in declaration order (one precompiled regular expression per method). Two rules
with the same method and the same template shape are an error.

Audit
-----
When ``audit`` is set it is called synchronously with an :class:`AuthAuditEvent` for every
authorisation decision (allowed and denied) and every authentication failure. It must be
cheap and must not block (enqueue the event); an exception it raises is logged and the request
goes on. Events never carry the credential.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs

from aiaas_core._context import (
    Actor,
    get_actor,
    get_request_id,
    get_trace_id,
    new_request_id,
    set_actor,
)
from aiaas_core._errors import (
    AiaasError,
    AuthenticationError,
    BadRequestError,
    InternalError,
    PermissionDeniedError,
    error_response,
)
from aiaas_core._policy import Policy
from aiaas_core._serving import (
    ASGIApp,
    ErrorRenderer,
    ErrorRenderers,
    Receive,
    Scope,
    Send,
)

__all__ = ["AuthAuditEvent", "AuthMiddleware", "RouteRule"]

Authenticator = Callable[[str], Awaitable[Actor]]
AuditSink = Callable[["AuthAuditEvent"], object]

_log = logging.getLogger("aiaas_core.auth")

_METHOD_RE: Final = re.compile(r"[A-Z]{1,20}|\*")
_PARAM_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@%-]*")
_PERMISSION_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SCOPE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
#: The error code of a request whose route needs a scope the actor's scopes lack.
_SCOPE_DENIED: Final = "AUTH_SCOPE_DENIED"
_HEADER_NAME_RE: Final = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BEARER: Final = "bearer"
_WS_POLICY_VIOLATION: Final = 1008


class _HeaderTooLargeError(BadRequestError):
    code = "AUTH_HEADER_TOO_LARGE"
    status = 431
    title = "Request header fields too large"


def _header_invalid(message: str) -> BadRequestError:
    return BadRequestError(message, code="AUTH_HEADER_INVALID")


# --------------------------------------------------------------------------- route rules


@attrs.frozen
class _Template:
    """A route template split into its regex, placeholder names and shape."""

    pattern: str
    params: tuple[str, ...]
    shape: str


def _parse_template(template: object) -> _Template:
    if not isinstance(template, str):
        raise TypeError(f"path_template must be a string, got {type(template).__name__}")
    if not template.startswith("/"):
        raise ValueError(f"path_template must start with '/', got {template!r}")
    parts: list[str] = []
    shape: list[str] = []
    params: list[str] = []
    for segment in template[1:].split("/"):
        match = _PARAM_RE.fullmatch(segment)
        if match is not None:
            name = match.group(1)
            if name in params:
                raise ValueError(f"path_template {template!r} repeats the placeholder {{{name}}}")
            params.append(name)
            parts.append("([^/]+)")
            shape.append("{}")
        elif _LITERAL_SEGMENT_RE.fullmatch(segment):
            parts.append(re.escape(segment))
            shape.append(segment)
        else:
            raise ValueError(
                f"path_template {template!r}: segment {segment!r} must be literal path "
                "characters or one whole {placeholder}"
            )
    return _Template("/" + "/".join(parts), tuple(params), "/" + "/".join(shape))


def _permission_parts(permission: object, params: tuple[str, ...]) -> tuple[str, str]:
    if not isinstance(permission, str):
        raise TypeError(f"permission must be a string, got {type(permission).__name__}")
    if permission.count(":") != 1:
        raise ValueError(f"permission {permission!r} is not action:resource")
    action, _, resource = permission.partition(":")
    for part, text in (("action", action), ("resource", resource)):
        for name in _PARAM_RE.findall(text):
            if name not in params:
                raise ValueError(
                    f"permission {permission!r} uses {{{name}}}, which the path template "
                    f"does not define (it has: {', '.join(params) or 'no placeholders'})"
                )
        if not _PERMISSION_SEGMENT_RE.fullmatch(_PARAM_RE.sub("x", text)):
            raise ValueError(
                f"permission {permission!r}: the {part} {text!r} is not a concrete name "
                "(letters, digits, '.', '_', '-' and {placeholders}; no wildcards)"
            )
    return action, resource


def _check_scope(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _SCOPE_RE.fullmatch(value):
        raise ValueError(
            "scope must be a concrete scope name (a letter or digit, then letters, digits and"
            f" '._:/-'; at most 128 characters; not '*'), got {value!r}"
        )


def _to_method(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"method must be a string, got {type(value).__name__}")
    method = value.upper()
    if not _METHOD_RE.fullmatch(method):
        raise ValueError(f"method must be an HTTP method, 'WEBSOCKET' or '*', got {value!r}")
    return method


@attrs.frozen
class RouteRule:
    """The permission a route needs: ``RouteRule("GET", "/v1/x/{id}", "x:{id}")``, and
    optionally the scope an actor with scopes must hold (``scope="x:read"``).

    See the module documentation for the template and placeholder grammar and for scopes.
    """

    method: str = attrs.field(converter=_to_method)
    path_template: str
    permission: str
    scope: str | None = attrs.field(default=None, kw_only=True, validator=_check_scope)
    _template: _Template = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _parse_template(self.path_template), takes_self=True),
    )
    _parts: tuple[str, str] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: _permission_parts(self.permission, self._template.params),
            takes_self=True,
        ),
    )


# How one permission segment is filled in: a constant, the value of one regex group, or
# literal pieces and group values to join.
_Builder = str | int | tuple[str | int, ...]


def _builder(text: str, groups: dict[str, int]) -> _Builder:
    pieces: list[str | int] = []
    pos = 0
    for match in _PARAM_RE.finditer(text):
        if match.start() > pos:
            pieces.append(text[pos : match.start()])
        pieces.append(groups[match.group(1)])
        pos = match.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces[0] if len(pieces) == 1 else tuple(pieces)


def _fill(builder: _Builder, match: re.Match[str] | None) -> str | None:
    if isinstance(builder, str):
        return builder  # constant: validated when the rule was made
    assert match is not None
    if isinstance(builder, int):
        value: str = match.group(builder)
    else:
        value = "".join(p if isinstance(p, str) else match.group(p) for p in builder)
    return value if _PERMISSION_SEGMENT_RE.fullmatch(value) else None


class _Route:
    """A rule compiled into one method's table: where its path values are in the match."""

    __slots__ = ("action", "resource", "rule")

    def __init__(self, rule: RouteRule, first_group: int) -> None:
        groups = {name: first_group + i for i, name in enumerate(rule._template.params)}
        self.rule = rule
        self.action = _builder(rule._parts[0], groups)
        self.resource = _builder(rule._parts[1], groups)

    def permission(self, match: re.Match[str] | None) -> tuple[str, str] | None:
        """The concrete (action, resource), or None when a path value cannot form one."""
        action = _fill(self.action, match)
        resource = _fill(self.resource, match)
        if action is None or resource is None:
            return None
        return action, resource


# The outcome of a route lookup: the rule and the permission it needs (None: a path value
# cannot form one).
_Found = tuple[RouteRule, tuple[str, str] | None]


class _Table:
    """The routes for one method: literal paths in a dict, templates in one regex."""

    __slots__ = ("literal", "regex", "routes")

    def __init__(self, rules: list[RouteRule]) -> None:
        self.literal: dict[str, _Found] = {}
        alternatives: list[str] = []
        self.routes: dict[int, _Route] = {}
        group = 0
        for rule in rules:
            template = rule._template
            if not template.params:
                self.literal.setdefault(
                    rule.path_template, (rule, _Route(rule, 0).permission(None))
                )
                continue
            group += 1
            # The outermost group of an alternative closes last: it is the match's lastindex.
            self.routes[group] = _Route(rule, group + 1)
            group += len(template.params)
            alternatives.append(f"({template.pattern})")
        self.regex = re.compile("|".join(alternatives)) if alternatives else None

    def resolve(self, path: str) -> _Found | None:
        found = self.literal.get(path)
        if found is not None or self.regex is None:
            return found
        match = self.regex.fullmatch(path)
        if match is None:
            return None
        route = self.routes[match.lastindex or 0]
        return route.rule, route.permission(match)


class _Router:
    __slots__ = ("_any", "_tables")

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        checked: list[RouteRule] = []
        seen: dict[tuple[str, str], RouteRule] = {}
        for rule in rules:
            if not isinstance(rule, RouteRule):
                raise TypeError(f"rules must be RouteRule objects, got {type(rule).__name__}")
            key = (rule.method, rule._template.shape)
            if key in seen:
                raise ValueError(
                    f"route rules {seen[key]!r} and {rule!r} cover the same requests; keep one"
                )
            seen[key] = rule
            checked.append(rule)
        methods = {r.method for r in checked} - {"*"}
        if "GET" in methods:
            methods.add("HEAD")

        def applies(rule: RouteRule, method: str) -> bool:
            return rule.method in (method, "*") or (method == "HEAD" and rule.method == "GET")

        self._tables = {m: _Table([r for r in checked if applies(r, m)]) for m in methods}
        self._any = _Table([r for r in checked if r.method == "*"])

    def resolve(self, method: str, path: str) -> _Found | None:
        return self._tables.get(method, self._any).resolve(path)


# --------------------------------------------------------------------------- audit events


@attrs.frozen(kw_only=True)
class AuthAuditEvent:
    """One authentication failure or authorisation decision, for an audit sink.

    ``kind`` is ``"authentication"`` (the credential was missing or rejected; ``actor`` is
    None) or ``"authorization"`` (a policy or route decision about ``actor``). ``code`` is the
    error code sent to the client, None when allowed. The credential is never included.
    """

    kind: Literal["authentication", "authorization"]
    allowed: bool
    reason: str
    actor: Actor | None
    action: str | None
    resource: str | None
    rule: str | None
    code: str | None
    method: str
    path: str
    request_id: str
    trace_id: str | None
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (``actor`` as subject, roles and kind; timestamp in ISO-8601)."""
        actor = self.actor
        return {
            "kind": self.kind,
            "allowed": self.allowed,
            "reason": self.reason,
            "actor": None
            if actor is None
            else {"subject": actor.subject, "roles": list(actor.roles), "kind": actor.kind},
            "action": self.action,
            "resource": self.resource,
            "rule": self.rule,
            "code": self.code,
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
        }


# --------------------------------------------------------------------------- the middleware


def _header_name(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEADER_NAME_RE.fullmatch(value.lower()):
        raise ValueError(f"{what} must be an HTTP header name, got {value!r}")
    return value.lower().encode("ascii")


def _route_path(path: str, root_path: str) -> str:
    """``path`` without the ``root_path`` the application is mounted at (as Starlette does)."""
    if path == root_path:
        return "/"
    if path.startswith(root_path) and path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


class AuthMiddleware:
    """Authenticate every request, authorise it against a :class:`Policy`, then call ``app``.

    See the module documentation for the flow, the status codes and the route grammar.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticator,
        policy: Policy,
        rules: Iterable[RouteRule],
        public_paths: Iterable[str] = ("/health", "/ready", "/metrics"),
        audit: AuditSink | None = None,
        header: str = "authorization",
        api_key_header: str | None = "x-api-key",
        max_header_bytes: int = 8192,
        problem: bool = False,
        error_renderers: Mapping[str, ErrorRenderer] | ErrorRenderers | None = None,
        malformed_credential_status: int = 400,
    ) -> None:
        if type(malformed_credential_status) is not int or malformed_credential_status not in {
            400,
            401,
        }:
            got = malformed_credential_status
            raise ValueError(f"malformed_credential_status must be 400 or 401, got {got!r}")
        if not callable(authenticate):
            raise TypeError("authenticate must be an async callable (credential) -> Actor")
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, got {type(policy).__name__}")
        if audit is not None and not callable(audit):
            raise TypeError("audit must be a callable taking an AuthAuditEvent, or None")
        if isinstance(max_header_bytes, bool) or not isinstance(max_header_bytes, int):
            raise TypeError("max_header_bytes must be an integer")
        if max_header_bytes < 16:
            raise ValueError(f"max_header_bytes must be at least 16, got {max_header_bytes}")
        exact: set[str] = set()
        prefixes: list[str] = []
        entries: list[object] = [public_paths] if isinstance(public_paths, str) else [*public_paths]
        for entry in entries:
            if not isinstance(entry, str) or not entry.startswith("/"):
                raise ValueError(f"public paths must start with '/', got {entry!r}")
            if entry.endswith("*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        self.app = app
        self._authenticate = authenticate
        self._policy = policy
        self._router = _Router(rules)
        self._audit = audit
        self._header = _header_name(header, "header")
        self._api_key_header = (
            None if api_key_header is None else _header_name(api_key_header, "api_key_header")
        )
        if self._header == self._api_key_header:
            raise ValueError("header and api_key_header must name different headers")
        self._max = max_header_bytes
        self._malformed_status = malformed_credential_status
        self._problem = problem
        self._renderers = ErrorRenderers(error_renderers)
        self._public = frozenset(exact)
        self._missing_message = "Authentication required: send 'Authorization: Bearer <token>'" + (
            f" or '{api_key_header}: <key>'" if api_key_header is not None else ""
        )
        self._public_prefixes = tuple(prefixes)

    def required_permission(self, method: str, path: str) -> str | None:
        """The ``action:resource`` a request needs, or None when no rule grants access.

        None means the request would be denied whoever makes it (unmapped route, or a path
        value that cannot form a permission); public paths are not considered.
        """
        found = self._router.resolve(method.upper(), path)
        if found is None or found[1] is None:
            return None
        return f"{found[1][0]}:{found[1][1]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            method: str = scope["method"]
        elif scope_type == "websocket":
            method = "WEBSOCKET"
        elif scope_type == "lifespan":
            await self.app(scope, receive, send)
            return
        else:
            raise ValueError(f"AuthMiddleware cannot handle ASGI scope type {scope_type!r}")
        path: str = scope["path"]
        root_path = scope.get("root_path")
        if root_path:
            path = _route_path(path, root_path)
        if path in self._public or (
            self._public_prefixes and path.startswith(self._public_prefixes)
        ):
            await self.app(scope, receive, send)
            return

        found = self._router.resolve(method, path)
        target = None if found is None else found[1]
        action, resource = target if target is not None else (None, None)
        try:
            credential = self._credential(scope["headers"])
            if credential is None:
                raise AuthenticationError(self._missing_message)
            actor = await self._authenticate(credential)
            if not isinstance(actor, Actor):
                raise TypeError(f"authenticate returned {type(actor).__name__}, not an Actor")
        except AiaasError as exc:
            reason = f"authentication failed ({exc.code}): {exc.message}"
            await self._reject(scope, send, exc, method, path, action, resource, reason)
            return
        except Exception as exc:  # noqa: BLE001 -- an authenticator bug must not leak details
            # Only the type is logged: the exception's text may quote the credential.
            _log.error("authenticator raised %s; answering 500", type(exc).__name__)
            reason = f"authentication failed: the authenticator raised {type(exc).__name__}"
            await self._reject(scope, send, InternalError(), method, path, action, resource, reason)
            return

        previous = get_actor()
        set_actor(actor)
        try:
            if action is None or resource is None:
                if found is None:
                    denial = PermissionDeniedError(
                        "Permission denied: no access rule covers this route",
                        code="AUTH_ROUTE_UNMAPPED",
                    )
                    reason = "no route rule matches this method and path (default deny)"
                else:
                    denial = PermissionDeniedError(
                        "Permission denied: a path value is not a valid resource name"
                    )
                    reason = "a path value cannot form a permission segment (default deny)"
                await self._reject(
                    scope, send, denial, method, path, None, None, reason, actor=actor
                )
                return
            decision = self._policy.decide(actor, action, resource)
            if not decision.allowed:
                denial = PermissionDeniedError(
                    f"Permission denied: this request needs {action}:{resource}"
                )
                await self._reject(
                    scope,
                    send,
                    denial,
                    method,
                    path,
                    action,
                    resource,
                    decision.reason,
                    actor=actor,
                    rule=decision.rule,
                )
                return
            needed = found[0].scope if found is not None else None
            if needed is not None and not actor.has_scope(needed):
                denial = PermissionDeniedError(
                    f"Permission denied: this credential's scopes do not include {needed};"
                    " use a credential that has it",
                    code=_SCOPE_DENIED,
                )
                await self._reject(
                    scope,
                    send,
                    denial,
                    method,
                    path,
                    action,
                    resource,
                    f"the actor's scopes do not include {needed}",
                    actor=actor,
                    rule=decision.rule,
                )
                return
            if self._audit is not None:
                self._emit(
                    kind="authorization",
                    allowed=True,
                    reason=decision.reason,
                    actor=actor,
                    action=action,
                    resource=resource,
                    rule=decision.rule,
                    code=None,
                    method=method,
                    path=path,
                    request_id=get_request_id() or new_request_id(),
                )
            scope["aiaas.actor"] = actor
            state = scope.get("state")
            if isinstance(state, dict):
                state["actor"] = actor
            await self.app(scope, receive, send)
        finally:
            set_actor(previous)

    # ----------------------------------------------------------------- helpers

    def _header_invalid(self, message: str) -> AiaasError:
        if self._malformed_status == 401:
            return AuthenticationError(message, code="AUTH_HEADER_INVALID")
        return _header_invalid(message)

    def _credential(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        auth: bytes | None = None
        key: bytes | None = None
        for name, value in headers:
            if name == self._header:
                if auth is not None:
                    raise self._header_invalid("Send the Authorization header only once")
                auth = value
            elif name == self._api_key_header:
                if key is not None:
                    raise self._header_invalid("Send the API key header only once")
                key = value
        if auth is None:
            if key is None:
                return None
            return self._token(key, "API key")
        if key is not None:
            raise self._header_invalid(
                "Send either an Authorization header or an API key, not both"
            )
        if len(auth) > self._max:
            raise _HeaderTooLargeError(f"The Authorization header is longer than {self._max} bytes")
        scheme, _, rest = auth.partition(b" ")
        if scheme.lower() != b"bearer":
            if not scheme.isascii() or not scheme.isalnum():
                raise self._header_invalid(
                    "The Authorization header is malformed: use 'Authorization: Bearer <token>'"
                )
            raise AuthenticationError(
                "Unsupported authorization scheme: use 'Authorization: Bearer <token>'",
                code="AUTH_SCHEME_UNSUPPORTED",
            )
        return self._token(rest.lstrip(b" "), "bearer token")

    def _token(self, raw: bytes, what: str) -> str:
        if len(raw) > self._max:
            raise _HeaderTooLargeError(f"The {what} is longer than {self._max} bytes")
        if not raw:
            raise self._header_invalid(f"The {what} is empty")
        try:
            token = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._header_invalid(f"The {what} must be ASCII") from None
        if not _TOKEN_RE.fullmatch(token):
            raise self._header_invalid(
                f"The {what} is malformed: letters, digits and -._~+/ (then '=' padding) only"
            )
        return token

    async def _reject(  # noqa: PLR0917 -- private; every caller passes all of these
        self,
        scope: Scope,
        send: Send,
        exc: AiaasError,
        method: str,
        path: str,
        action: str | None,
        resource: str | None,
        reason: str,
        *,
        actor: Actor | None = None,
        rule: str | None = None,
    ) -> None:
        """Audit a failure or denial, then answer with the error body."""
        request_id = get_request_id() or new_request_id()
        if self._audit is not None:
            self._emit(
                kind="authentication" if actor is None else "authorization",
                allowed=False,
                reason=reason,
                actor=actor,
                action=action,
                resource=resource,
                rule=rule,
                code=exc.code,
                method=method,
                path=path,
                request_id=request_id,
            )
        renderer = self._renderers.for_path(path)
        if renderer is None:
            status, headers, body = error_response(
                exc, problem=self._problem, instance=path, request_id=request_id
            )
        else:
            status, headers, body = renderer(exc)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send(
                {"type": "websocket.close", "code": _WS_POLICY_VIOLATION, "reason": exc.code}
            )

    def _emit(
        self,
        *,
        kind: Literal["authentication", "authorization"],
        allowed: bool,
        reason: str,
        actor: Actor | None,
        action: str | None,
        resource: str | None,
        rule: str | None,
        code: str | None,
        method: str,
        path: str,
        request_id: str,
    ) -> None:
        assert self._audit is not None
        event = AuthAuditEvent(
            kind=kind,
            allowed=allowed,
            reason=reason,
            actor=actor,
            action=action,
            resource=resource,
            rule=rule,
            code=code,
            method=method,
            path=path,
            request_id=request_id,
            trace_id=get_trace_id(),
            timestamp=datetime.now(UTC),
        )
        try:
            self._audit(event)
        except Exception as exc:  # noqa: BLE001 -- audit must never take a request down
            _log.warning(
                "audit sink raised %s; auth audit event dropped", type(exc).__name__, exc_info=True
            )

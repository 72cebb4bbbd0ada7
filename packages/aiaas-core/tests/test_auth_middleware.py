"""AuthMiddleware: driven in-process with hand-built ASGI messages, and behind a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Iterable
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import (
    Actor,
    AuthenticationError,
    AuthMiddleware,
    Policy,
    PolicyRule,
    RateLimitedError,
    RouteRule,
    get_actor,
    request_context,
)
from aiaas_core._auth_middleware import AuthAuditEvent

ALICE = Actor("alice", ("app-team",))
OLGA = Actor("olga", ("platform-engineer",))
BILLING = Actor("billing-svc", ("read-only",), kind="api_key")
GHOST = Actor("ghost", (), kind="service")
ACTORS = {
    "alice-token": ALICE,
    "olga-token": OLGA,
    "billing-key.v1_x~y+z/0==": BILLING,
    "ghost-token": GHOST,
}
SECRET_TOKENS = [*ACTORS, "revoked-token", "boom-token", "weird-token", "limited-token"]

POLICY = Policy(
    [
        PolicyRule(effect="allow", roles=("platform-engineer",), permissions=("*",), id="r-ops"),
        PolicyRule(
            effect="allow",
            roles=("app-team", "read-only"),
            permissions=("environments:read",),
            id="r-read",
        ),
        PolicyRule(effect="allow", roles=("app-team",), permissions=("handoff:*",), id="r-handoff"),
        PolicyRule(
            effect="deny", roles=("app-team",), permissions=("handoff:production",), id="r-prod"
        ),
    ]
)
ROUTES = [
    RouteRule("GET", "/v1/environments", "environments:read"),
    RouteRule("GET", "/v1/environments/{environment}/handoff", "handoff:{environment}"),
    RouteRule(
        "post", "/v1/environments/{environment}/migrations/{migration}", "migrations:{environment}"
    ),
    RouteRule("*", "/v1/echo", "echo:any"),
    RouteRule("WEBSOCKET", "/v1/stream", "environments:read"),
]


class Authenticator:
    """Maps tokens to actors; records how often it was asked (never what)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, credential: str) -> Actor:
        self.calls += 1
        if credential == "revoked-token":
            raise AuthenticationError("API key revoked", code="API_KEY_REVOKED")
        if credential == "boom-token":
            raise RuntimeError(f"database said no for {credential}")
        if credential == "limited-token":
            raise RateLimitedError("Slow down", retry_after=2)
        if credential == "weird-token":
            return {"subject": "x"}  # type: ignore[return-value]
        try:
            return ACTORS[credential]
        except KeyError:
            raise AuthenticationError("Invalid credential", code="API_KEY_INVALID") from None


class InnerApp:
    """A tiny raw ASGI app that records what it saw and echoes the actor."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], Actor | None]] = []
        self.lifespan: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.lifespan.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.lifespan.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        actor = get_actor()
        self.seen.append((scope, actor))
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        state = scope.get("state") or {}
        body = json.dumps(
            {
                "subject": actor.subject if actor else None,
                "state_subject": state["actor"].subject if "actor" in state else None,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Response:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        start = messages[0]
        self.status: int = start.get("status", 0)
        self.headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
        self.body = b"".join(m.get("body", b"") for m in messages[1:])

    def json(self) -> Any:
        return json.loads(self.body)


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def call(
    app: Any,
    method: str = "GET",
    path: str = "/v1/environments",
    headers: Iterable[tuple[bytes, bytes]] = (),
    **scope_extra: Any,
) -> Response:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"accept", b"*/*"), *headers],
        "state": {},
    }
    scope.update(scope_extra)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return Response(messages)


async def websocket(
    app: Any, path: str, headers: Iterable[tuple[bytes, bytes]] = (), **scope_extra: Any
) -> list[dict[str, Any]]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "subprotocols": [],
    }
    scope.update(scope_extra)
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages


@pytest.fixture
def inner() -> InnerApp:
    return InnerApp()


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator()


@pytest.fixture
def audit() -> list[AuthAuditEvent]:
    return []


@pytest.fixture
def app(
    inner: InnerApp, authenticator: Authenticator, audit: list[AuthAuditEvent]
) -> AuthMiddleware:
    return AuthMiddleware(
        inner,
        authenticate=authenticator,
        policy=POLICY,
        rules=ROUTES,
        public_paths=("/health", "/ready", "/metrics", "/docs/*"),
        audit=audit.append,
    )


def assert_error(
    response: Response, schema: dict[str, object], status: int, code: str
) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    body = response.json()
    jsonschema.validate(body, schema)
    assert body["code"] == code
    return body


def assert_no_secret(events: list[AuthAuditEvent]) -> None:
    for event in events:
        text = json.dumps(event.to_dict()) + repr(event)
        for token in SECRET_TOKENS:
            assert token not in text


# --------------------------------------------------------------------------- public paths


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/docs/", "/docs/index.html"])
async def test_public_paths_skip_authentication(
    app: AuthMiddleware, inner: InnerApp, authenticator: Authenticator, audit: list[Any], path: str
) -> None:
    response = await call(app, path=path, headers=bearer("revoked-token"))
    assert response.status == 200
    assert response.json() == {"subject": None, "state_subject": None}
    assert authenticator.calls == 0
    assert audit == []
    assert "aiaas.actor" not in inner.seen[0][0]


async def test_public_paths_are_exact_unless_starred(
    app: AuthMiddleware, error_schema: Any
) -> None:
    for path in ("/healthz", "/health/", "/docs"):
        assert_error(await call(app, path=path), error_schema, 401, "AUTH_UNAUTHENTICATED")


# --------------------------------------------------------------------------- authentication


async def test_missing_credential_is_401_with_www_authenticate(
    app: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    response = await call(app, path="/v1/environments/staging/handoff")
    body = assert_error(response, error_schema, 401, "AUTH_UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == 'Bearer realm="aiaas"'
    assert body["error"] == (
        "Authentication required: send 'Authorization: Bearer <token>' or 'x-api-key: <key>'"
    )
    assert "actor" not in body
    assert inner.seen == []
    [event] = audit
    assert (event.kind, event.allowed, event.code, event.actor) == (
        "authentication",
        False,
        "AUTH_UNAUTHENTICATED",
        None,
    )
    # the route was known, so the audit record says what was attempted
    assert (event.action, event.resource, event.method, event.path) == (
        "handoff",
        "staging",
        "GET",
        "/v1/environments/staging/handoff",
    )
    assert event.request_id == body["request_id"]


async def test_rejected_credential_carries_the_authenticators_code(
    app: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    response = await call(app, headers=bearer("revoked-token"))
    body = assert_error(response, error_schema, 401, "API_KEY_REVOKED")
    assert body["error"] == "API key revoked"
    assert response.headers["www-authenticate"] == 'Bearer realm="aiaas"'
    assert inner.seen == []
    assert audit[0].reason == "authentication failed (API_KEY_REVOKED): API key revoked"
    assert_error(
        await call(app, headers=bearer("unknown-token")), error_schema, 401, "API_KEY_INVALID"
    )
    assert_no_secret(audit)


BAD_HEADERS = [
    ("basic scheme", [(b"authorization", b"Basic dXNlcjpwYXNz")], 401, "AUTH_SCHEME_UNSUPPORTED"),
    ("bare token", [(b"authorization", b"alice-token")], 400, "AUTH_HEADER_INVALID"),
    ("empty header", [(b"authorization", b"")], 400, "AUTH_HEADER_INVALID"),
    ("scheme only", [(b"authorization", b"Bearer")], 400, "AUTH_HEADER_INVALID"),
    ("empty token", [(b"authorization", b"Bearer   ")], 400, "AUTH_HEADER_INVALID"),
    (
        "latin-1 token",
        [(b"authorization", "Bearer t\u00f8ken".encode("latin-1"))],
        400,
        "AUTH_HEADER_INVALID",
    ),
    ("non-ascii scheme", [(b"authorization", b"\xff\xfe token")], 400, "AUTH_HEADER_INVALID"),
    ("space in token", [(b"authorization", b"Bearer alice token")], 400, "AUTH_HEADER_INVALID"),
    ("control char", [(b"authorization", b"Bearer alice\x00token")], 400, "AUTH_HEADER_INVALID"),
    ("padding inside", [(b"authorization", b"Bearer ab=cd")], 400, "AUTH_HEADER_INVALID"),
    ("api key spaces", [(b"x-api-key", b"a b")], 400, "AUTH_HEADER_INVALID"),
    ("api key empty", [(b"x-api-key", b"")], 400, "AUTH_HEADER_INVALID"),
    ("two authorizations", bearer("alice-token") * 2, 400, "AUTH_HEADER_INVALID"),
    ("two api keys", [(b"x-api-key", b"a"), (b"x-api-key", b"b")], 400, "AUTH_HEADER_INVALID"),
    (
        "both headers",
        [*bearer("alice-token"), (b"x-api-key", b"olga-token")],
        400,
        "AUTH_HEADER_INVALID",
    ),
    ("huge bearer", [(b"authorization", b"Bearer " + b"a" * 8200)], 431, "AUTH_HEADER_TOO_LARGE"),
    ("huge garbage", [(b"authorization", b"\xff" * 9000)], 431, "AUTH_HEADER_TOO_LARGE"),
    ("huge api key", [(b"x-api-key", b"k" * 8193)], 431, "AUTH_HEADER_TOO_LARGE"),
]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [case[1:] for case in BAD_HEADERS],
    ids=[case[0] for case in BAD_HEADERS],
)
async def test_garbled_credential_headers_are_rejected_before_authentication(  # noqa: PLR0917 -- fixtures
    app: AuthMiddleware,
    inner: InnerApp,
    authenticator: Authenticator,
    audit: list[AuthAuditEvent],
    error_schema: Any,
    headers: list[tuple[bytes, bytes]],
    status: int,
    code: str,
) -> None:
    response = await call(app, headers=headers)
    assert_error(response, error_schema, status, code)
    assert authenticator.calls == 0
    assert inner.seen == []
    [event] = audit
    assert (event.kind, event.allowed, event.code) == ("authentication", False, code)
    assert_no_secret(audit)
    for _, value in headers:
        if len(value) > 7:
            assert value not in response.body


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [case[1:] for case in BAD_HEADERS],
    ids=[case[0] for case in BAD_HEADERS],
)
async def test_malformed_credentials_can_answer_401(  # noqa: PLR0917 -- fixtures
    inner: InnerApp,
    authenticator: Authenticator,
    audit: list[AuthAuditEvent],
    error_schema: Any,
    headers: list[tuple[bytes, bytes]],
    status: int,
    code: str,
) -> None:
    """``malformed_credential_status=401``: a malformed credential is a rejected one (same code,
    with ``WWW-Authenticate``); the other rejections keep their status."""
    app = AuthMiddleware(
        inner,
        authenticate=authenticator,
        policy=POLICY,
        rules=ROUTES,
        audit=audit.append,
        malformed_credential_status=401,
    )
    response = await call(app, headers=headers)
    expected = 401 if code == "AUTH_HEADER_INVALID" else status
    body = assert_error(response, error_schema, expected, code)
    if expected == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="aiaas"'
        assert body["error"]  # the same message as the 400 would carry
    assert authenticator.calls == 0
    assert inner.seen == []
    assert [(e.kind, e.allowed, e.code) for e in audit] == [("authentication", False, code)]


@pytest.mark.parametrize("bad", [403, 500, "401", None, 401.0])
def test_malformed_credential_status_is_400_or_401(inner: InnerApp, bad: object) -> None:
    with pytest.raises(ValueError, match="malformed_credential_status must be 400 or 401"):
        AuthMiddleware(
            inner,
            authenticate=Authenticator(),
            policy=POLICY,
            rules=ROUTES,
            malformed_credential_status=bad,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "headers",
    [
        bearer("alice-token"),
        [(b"authorization", b"bearer alice-token")],
        [(b"authorization", b"BEARER   alice-token")],
        [(b"x-api-key", b"alice-token")],
    ],
)
async def test_accepted_credential_forms(
    app: AuthMiddleware, headers: list[tuple[bytes, bytes]]
) -> None:
    response = await call(app, headers=headers)
    assert response.status == 200
    assert response.json()["subject"] == "alice"


async def test_b64token_characters_are_accepted(app: AuthMiddleware) -> None:
    response = await call(app, headers=bearer("billing-key.v1_x~y+z/0=="))
    assert response.json()["subject"] == "billing-svc"


async def test_header_size_limit_is_configurable(
    inner: InnerApp, authenticator: Authenticator
) -> None:
    small = AuthMiddleware(
        inner, authenticate=authenticator, policy=POLICY, rules=ROUTES, max_header_bytes=18
    )
    # the limit is on the whole header value: "Bearer alice-token" is 18 bytes
    assert (await call(small, headers=bearer("alice-token"))).status == 200
    assert (await call(small, headers=bearer("alice-token1"))).status == 431
    assert (await call(small, headers=[(b"x-api-key", b"k" * 19)])).status == 431


async def test_custom_and_disabled_headers(
    inner: InnerApp, authenticator: Authenticator, error_schema: Any
) -> None:
    custom = AuthMiddleware(
        inner,
        authenticate=authenticator,
        policy=POLICY,
        rules=ROUTES,
        header="X-Auth",
        api_key_header=None,
    )
    ok = await call(custom, headers=[(b"x-auth", b"Bearer alice-token")])
    assert ok.json()["subject"] == "alice"
    # neither the standard header nor an API key header counts any more
    for headers in (bearer("alice-token"), [(b"x-api-key", b"alice-token")]):
        body = assert_error(
            await call(custom, headers=headers), error_schema, 401, "AUTH_UNAUTHENTICATED"
        )
        assert body["error"] == "Authentication required: send 'Authorization: Bearer <token>'"


async def test_authenticator_bugs_become_a_500_without_details(
    app: AuthMiddleware,
    inner: InnerApp,
    audit: list[AuthAuditEvent],
    error_schema: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="aiaas_core.auth"):
        response = await call(app, headers=bearer("boom-token"))
    body = assert_error(response, error_schema, 500, "INTERNAL_ERROR")
    assert b"database" not in response.body
    assert "authenticator raised RuntimeError" in caplog.text
    assert "boom-token" not in caplog.text
    assert audit[0].reason == "authentication failed: the authenticator raised RuntimeError"
    assert body["error"] == "Internal server error"

    response = await call(app, headers=bearer("weird-token"))
    assert_error(response, error_schema, 500, "INTERNAL_ERROR")
    assert audit[1].reason == "authentication failed: the authenticator raised TypeError"
    assert inner.seen == []
    assert_no_secret(audit)


async def test_other_aiaas_errors_from_the_authenticator_keep_their_status(
    app: AuthMiddleware, error_schema: Any
) -> None:
    response = await call(app, headers=bearer("limited-token"))
    assert_error(response, error_schema, 429, "RATE_LIMITED")
    assert response.headers["retry-after"] == "2"


# --------------------------------------------------------------------------- authorisation


async def test_allowed_request_reaches_the_app_with_the_actor(
    app: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent]
) -> None:
    response = await call(
        app, path="/v1/environments/staging/handoff", headers=bearer("alice-token")
    )
    assert response.status == 200
    assert response.json() == {"subject": "alice", "state_subject": "alice"}
    scope, actor_in_context = inner.seen[0]
    assert scope["aiaas.actor"] is ALICE
    assert actor_in_context is ALICE
    assert get_actor() is None  # restored after the request
    [event] = audit
    assert event.to_dict() | {"request_id": "x", "timestamp": "t"} == {
        "kind": "authorization",
        "allowed": True,
        "reason": "allowed by rule r-handoff (role app-team may handoff:*)",
        "actor": {"subject": "alice", "roles": ["app-team"], "kind": "user"},
        "action": "handoff",
        "resource": "staging",
        "rule": "r-handoff",
        "code": None,
        "method": "GET",
        "path": "/v1/environments/staging/handoff",
        "request_id": "x",
        "trace_id": None,
        "timestamp": "t",
    }
    assert event.to_dict()["timestamp"].endswith("Z")


async def test_the_previous_actor_is_restored(app: AuthMiddleware) -> None:
    outer = Actor("outer", ("x",))
    with request_context(actor=outer):
        assert (await call(app, headers=bearer("olga-token"))).json()["subject"] == "olga"
        assert get_actor() is outer
        await call(app, path="/v1/echo", headers=bearer("alice-token"))  # denied
        assert get_actor() is outer


async def test_scope_without_state_still_gets_the_actor(
    app: AuthMiddleware, inner: InnerApp
) -> None:
    response = await call(app, headers=bearer("alice-token"), state=None)
    assert response.json() == {"subject": "alice", "state_subject": None}
    assert inner.seen[0][0]["aiaas.actor"] is ALICE


async def test_policy_denial_is_403_naming_the_actor(
    app: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    response = await call(
        app, path="/v1/environments/production/handoff", headers=bearer("alice-token")
    )
    body = assert_error(response, error_schema, 403, "AUTH_ROLE_DENIED")
    assert body["actor"] == {"subject": "alice", "roles": ["app-team"]}
    assert body["error"] == "Permission denied: this request needs handoff:production"
    assert "r-prod" not in body["error"]
    assert inner.seen == []
    [event] = audit
    assert (event.kind, event.allowed, event.rule, event.code) == (
        "authorization",
        False,
        "r-prod",
        "AUTH_ROLE_DENIED",
    )
    assert event.reason == "denied by rule r-prod (role app-team may not handoff:production)"
    assert event.actor is ALICE
    assert event.request_id == body["request_id"]


async def test_default_deny_and_actor_without_roles(
    app: AuthMiddleware, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    body = assert_error(
        await call(
            app,
            method="POST",
            path="/v1/environments/dev/migrations/m1",
            headers=bearer("alice-token"),
        ),
        error_schema,
        403,
        "AUTH_ROLE_DENIED",
    )
    assert body["error"] == "Permission denied: this request needs migrations:dev"
    assert audit[-1].reason == "no rule allows migrations:dev for role app-team (default deny)"
    assert audit[-1].rule is None
    body = assert_error(
        await call(app, headers=bearer("ghost-token")), error_schema, 403, "AUTH_ROLE_DENIED"
    )
    assert "actor" not in body  # the schema needs at least one role to name an actor
    assert audit[-1].reason.endswith("for an actor with no roles (default deny)")


async def test_unmapped_routes_are_denied_even_to_superusers(
    app: AuthMiddleware, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    for method, path in [
        ("GET", "/v1/unknown"),
        ("GET", "/v1/environments/"),  # trailing slash is a different path
        ("POST", "/v1/environments"),  # method not mapped
        ("GET", "/v1/environments/a/b/handoff"),  # {param} is one segment
    ]:
        response = await call(app, method=method, path=path, headers=bearer("olga-token"))
        body = assert_error(response, error_schema, 403, "AUTH_ROUTE_UNMAPPED")
        assert body["actor"]["subject"] == "olga"
        assert audit[-1].reason == "no route rule matches this method and path (default deny)"
        assert (audit[-1].action, audit[-1].resource, audit[-1].rule) == (None, None, None)
    assert len(audit) == 4


async def test_unmapped_route_without_credential_is_401_not_403(
    app: AuthMiddleware, error_schema: Any
) -> None:
    assert_error(
        await call(app, path="/v1/secret-admin"), error_schema, 401, "AUTH_UNAUTHENTICATED"
    )


async def test_path_values_fill_the_permission(
    app: AuthMiddleware, audit: list[Any], error_schema: Any
) -> None:
    assert app.required_permission("GET", "/v1/environments/staging/handoff") == "handoff:staging"
    assert (
        app.required_permission("post", "/v1/environments/dev/migrations/0007") == "migrations:dev"
    )
    assert (
        await call(app, path="/v1/environments/dev/handoff", headers=bearer("alice-token"))
    ).status == 200
    # a value that cannot be a permission segment is denied whoever asks
    for value in ("bad name", "*", "-x", "a:b", "\u00e9t\u00e9", "x" * 129):
        path = f"/v1/environments/{value}/handoff"
        assert app.required_permission("GET", path) is None
        response = await call(app, path=path, headers=bearer("olga-token"))
        assert_error(response, error_schema, 403, "AUTH_ROLE_DENIED")
        assert audit[-1].reason == "a path value cannot form a permission segment (default deny)"


@given(st.text(alphabet=st.characters(blacklist_characters="/"), max_size=12))
def test_any_path_value_gives_its_permission_or_none(value: str) -> None:
    app = AuthMiddleware(InnerApp(), authenticate=Authenticator(), policy=POLICY, rules=ROUTES)
    permission = app.required_permission("GET", f"/v1/environments/{value}/handoff")
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
        assert permission == f"handoff:{value}"
    else:
        assert permission is None


async def test_head_is_covered_by_get_and_star_covers_every_method(
    app: AuthMiddleware, error_schema: Any
) -> None:
    assert (
        await call(app, method="HEAD", path="/v1/environments", headers=bearer("alice-token"))
    ).status == 200
    assert app.required_permission("HEAD", "/v1/environments/x/handoff") == "handoff:x"
    for method in ("GET", "PATCH", "PROPFIND", "HEAD"):
        assert app.required_permission(method, "/v1/echo") == "echo:any"
        assert (
            await call(app, method=method, path="/v1/echo", headers=bearer("olga-token"))
        ).status == 200
        response = await call(app, method=method, path="/v1/echo", headers=bearer("alice-token"))
        assert_error(response, error_schema, 403, "AUTH_ROLE_DENIED")
    assert app.required_permission("PROPFIND", "/v1/environments") is None


async def test_root_path_is_removed_before_matching(app: AuthMiddleware, error_schema: Any) -> None:
    response = await call(
        app, path="/api/v1/environments", root_path="/api", headers=bearer("alice-token")
    )
    assert response.status == 200
    assert (await call(app, path="/api/health", root_path="/api")).status == 200
    assert_error(
        await call(app, path="/api", root_path="/api", headers=bearer("olga-token")),
        error_schema,
        403,
        "AUTH_ROUTE_UNMAPPED",
    )
    assert_error(
        await call(
            app, path="/apiary/v1/environments", root_path="/api", headers=bearer("olga-token")
        ),
        error_schema,
        403,
        "AUTH_ROUTE_UNMAPPED",
    )
    # a path outside the root path is matched as it is
    response = await call(
        app, path="/v1/environments", root_path="/api", headers=bearer("alice-token")
    )
    assert response.status == 200


async def test_request_and_trace_ids_come_from_the_request_context(
    app: AuthMiddleware, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    with request_context("req-0001-abcdef", trace_id=trace):
        body = assert_error(
            await call(app, path="/v1/echo", headers=bearer("alice-token")),
            error_schema,
            403,
            "AUTH_ROLE_DENIED",
        )
        assert (await call(app, headers=bearer("alice-token"))).status == 200
    assert (body["request_id"], body["trace_id"]) == ("req-0001-abcdef", trace)
    assert [(e.request_id, e.trace_id) for e in audit] == [("req-0001-abcdef", trace)] * 2


async def test_audit_sink_failures_are_logged_and_requests_go_on(
    inner: InnerApp, authenticator: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_sink(event: AuthAuditEvent) -> None:
        raise OSError("audit queue is gone")

    app = AuthMiddleware(
        inner, authenticate=authenticator, policy=POLICY, rules=ROUTES, audit=broken_sink
    )
    with caplog.at_level(logging.WARNING, logger="aiaas_core.auth"):
        assert (await call(app, headers=bearer("alice-token"))).status == 200
        assert (await call(app)).status == 401
    assert caplog.text.count("audit sink raised OSError; auth audit event dropped") == 2


async def test_no_audit_sink_means_no_events(inner: InnerApp, authenticator: Authenticator) -> None:
    app = AuthMiddleware(inner, authenticate=authenticator, policy=POLICY, rules=ROUTES)
    assert (await call(app, headers=bearer("alice-token"))).status == 200
    assert (await call(app, path="/v1/echo", headers=bearer("alice-token"))).status == 403
    assert (await call(app)).status == 401


async def test_problem_details_rendering(inner: InnerApp, authenticator: Authenticator) -> None:
    app = AuthMiddleware(
        inner, authenticate=authenticator, policy=POLICY, rules=ROUTES, problem=True
    )
    response = await call(app, path="/v1/echo")
    assert response.status == 401
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert (doc["status"], doc["code"], doc["instance"]) == (
        401,
        "AUTH_UNAUTHENTICATED",
        "/v1/echo",
    )
    assert doc["type"] == "https://errors.aiaas.dev/auth-unauthenticated"


# --------------------------------------------------------------------------- other scope types


async def test_lifespan_passes_through(app: AuthMiddleware, inner: InnerApp) -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert inner.lifespan == ["startup", "shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_unknown_scope_types_are_refused(app: AuthMiddleware) -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not reached")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match="cannot handle ASGI scope type 'webtransport'"):
        await app({"type": "webtransport"}, receive, send)


async def test_websocket_allowed(
    app: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent]
) -> None:
    messages = await websocket(app, "/v1/stream", bearer("alice-token"))
    assert [m["type"] for m in messages] == ["websocket.accept", "websocket.close"]
    assert inner.seen[0][1] is ALICE
    assert (audit[0].method, audit[0].allowed) == ("WEBSOCKET", True)


async def test_websocket_rejections_close_with_policy_violation(
    app: AuthMiddleware, inner: InnerApp
) -> None:
    assert await websocket(app, "/v1/stream") == [
        {"type": "websocket.close", "code": 1008, "reason": "AUTH_UNAUTHENTICATED"}
    ]
    assert await websocket(app, "/v1/stream", bearer("ghost-token")) == [
        {"type": "websocket.close", "code": 1008, "reason": "AUTH_ROLE_DENIED"}
    ]
    assert await websocket(app, "/v1/environments", bearer("olga-token")) == [
        {"type": "websocket.close", "code": 1008, "reason": "AUTH_ROUTE_UNMAPPED"}
    ]
    assert inner.seen == []


async def test_websocket_rejection_as_http_response_when_supported(
    app: AuthMiddleware, error_schema: Any
) -> None:
    messages = await websocket(app, "/v1/stream", extensions={"websocket.http.response": {}})
    assert [m["type"] for m in messages] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert messages[0]["status"] == 401
    body = json.loads(messages[1]["body"])
    jsonschema.validate(body, error_schema)
    assert body["code"] == "AUTH_UNAUTHENTICATED"


async def test_public_websocket_passes(app: AuthMiddleware, inner: InnerApp) -> None:
    messages = await websocket(app, "/health")
    assert messages[0]["type"] == "websocket.accept"
    assert inner.seen[0][1] is None


# --------------------------------------------------------------------------- configuration


def test_route_templates_literal_first_then_declaration_order(
    inner: InnerApp, authenticator: Authenticator
) -> None:
    app = AuthMiddleware(
        inner,
        authenticate=authenticator,
        policy=POLICY,
        rules=[
            RouteRule("GET", "/v1/environments/{environment}", "environments:read"),
            RouteRule("GET", "/v1/environments/current", "current:read"),
            RouteRule("GET", "/v1/environments/{environment}/{item}", "items:{item}"),
            RouteRule("GET", "/v1/{kind}/{name}/{item}", "generic:{kind}-{name}.{item}"),
            RouteRule("GET", "/v1/handoff/{environment}", "handoff:env-{environment}"),
            RouteRule("GET", "/v1/static/latest", "static:latest"),
        ],
    )
    assert app.required_permission("GET", "/v1/environments/current") == "current:read"
    assert app.required_permission("GET", "/v1/environments/dev") == "environments:read"
    assert app.required_permission("GET", "/v1/environments/dev/logs") == "items:logs"
    assert app.required_permission("GET", "/v1/things/x/logs") == "generic:things-x.logs"
    assert app.required_permission("GET", "/v1/handoff/prod") == "handoff:env-prod"
    # inside a segment, a value only has to make the whole segment valid
    assert app.required_permission("GET", "/v1/handoff/-x") == "handoff:env--x"
    assert app.required_permission("GET", "/v1/static/latest") == "static:latest"
    assert app.required_permission("GET", "/v1/static") is None
    assert app.required_permission("DELETE", "/v1/environments/dev") is None


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("GE T", "/x", "a:b"), ValueError, "method must be an HTTP method, 'WEBSOCKET' or '\\*'"),
        ((5, "/x", "a:b"), TypeError, "method must be a string, got int"),
        (("GET", "x", "a:b"), ValueError, "path_template must start with '/'"),
        (("GET", b"/x", "a:b"), TypeError, "path_template must be a string, got bytes"),
        (("GET", "/v1/{a}/{a}", "a:b"), ValueError, "repeats the placeholder \\{a\\}"),
        (
            ("GET", "/v1/x{a}", "a:b"),
            ValueError,
            "segment 'x\\{a\\}' must be literal path characters",
        ),
        (("GET", "/v1/{a-b}", "a:b"), ValueError, "segment '\\{a-b\\}' must be literal"),
        (("GET", "/v1/a b", "a:b"), ValueError, "segment 'a b' must be literal"),
        (("GET", "/x", "ab"), ValueError, "permission 'ab' is not action:resource"),
        (
            ("GET", "/x/{a}", "x:{b}"),
            ValueError,
            "uses \\{b\\}, which the path template does not define \\(it has: a\\)",
        ),
        (("GET", "/x", "x:{b}"), ValueError, "\\(it has: no placeholders\\)"),
        (("GET", "/x", "x:*"), ValueError, "the resource '\\*' is not a concrete name"),
        (
            ("GET", "/x/{a}", "x:{a}*"),
            ValueError,
            "the resource '\\{a\\}\\*' is not a concrete name",
        ),
        (("GET", "/x/{a}", "{a:x"), ValueError, "the action '\\{a' is not a concrete name"),
        (("GET", "/x", 5), TypeError, "permission must be a string, got int"),
    ],
)
def test_route_rule_validation(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RouteRule(*args)


def test_route_rule_normalises_the_method() -> None:
    rule = RouteRule("delete", "/v1/keys/{key_id}", "keys:delete")
    assert rule == RouteRule("DELETE", "/v1/keys/{key_id}", "keys:delete")
    assert repr(rule) == (
        "RouteRule(method='DELETE', path_template='/v1/keys/{key_id}', permission='keys:delete',"
        " scope=None)"
    )


def test_overlapping_route_rules_are_rejected(
    inner: InnerApp, authenticator: Authenticator
) -> None:
    with pytest.raises(ValueError, match="cover the same requests; keep one"):
        AuthMiddleware(
            inner,
            authenticate=authenticator,
            policy=POLICY,
            rules=[RouteRule("GET", "/v1/{a}", "x:{a}"), RouteRule("get", "/v1/{b}", "y:y")],
        )
    with pytest.raises(TypeError, match="rules must be RouteRule objects, got tuple"):
        AuthMiddleware(
            inner, authenticate=authenticator, policy=POLICY, rules=[("GET", "/x", "a:b")]
        )  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"authenticate": "not callable"}, TypeError, "authenticate must be an async callable"),
        (
            {"policy": [PolicyRule(effect="allow", roles=("a",), permissions=("*",))]},
            TypeError,
            "policy must be a Policy, got list",
        ),
        ({"audit": "log"}, TypeError, "audit must be a callable"),
        ({"max_header_bytes": True}, TypeError, "max_header_bytes must be an integer"),
        ({"max_header_bytes": 8}, ValueError, "max_header_bytes must be at least 16, got 8"),
        (
            {"public_paths": ["health"]},
            ValueError,
            "public paths must start with '/', got 'health'",
        ),
        ({"public_paths": "health"}, ValueError, "public paths must start with '/', got 'health'"),
        (
            {"header": "bad header"},
            ValueError,
            "header must be an HTTP header name, got 'bad header'",
        ),
        ({"api_key_header": ""}, ValueError, "api_key_header must be an HTTP header name"),
        ({"api_key_header": "Authorization"}, ValueError, "must name different headers"),
    ],
)
def test_middleware_configuration_is_validated(
    inner: InnerApp,
    authenticator: Authenticator,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    options: dict[str, Any] = {"authenticate": authenticator, "policy": POLICY, "rules": ROUTES}
    options.update(kwargs)
    with pytest.raises(error, match=message):
        AuthMiddleware(inner, **options)


async def test_a_single_public_path_string_is_accepted(
    inner: InnerApp, authenticator: Authenticator
) -> None:
    app = AuthMiddleware(
        inner, authenticate=authenticator, policy=POLICY, rules=[], public_paths="/ping"
    )
    assert (await call(app, path="/ping")).status == 200
    assert (await call(app, path="/health")).status == 401
    assert (await call(app, path="/health", headers=bearer("olga-token"))).status == 403


# --------------------------------------------------------------------------- a real server


async def test_behind_a_real_uvicorn_server(error_schema: Any) -> None:
    import httpx
    import uvicorn

    inner = InnerApp()
    audit: list[AuthAuditEvent] = []
    app = AuthMiddleware(
        inner, authenticate=Authenticator(), policy=POLICY, rules=ROUTES, audit=audit.append
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            health = await client.get("/health")
            assert health.status_code == 200

            missing = await client.get("/v1/environments")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="aiaas"'
            jsonschema.validate(missing.json(), error_schema)

            ok = await client.get(
                "/v1/environments", headers={"Authorization": "Bearer alice-token"}
            )
            assert ok.status_code == 200
            assert ok.json() == {"subject": "alice", "state_subject": "alice"}

            via_key = await client.get(
                "/v1/environments", headers={"X-API-Key": "billing-key.v1_x~y+z/0=="}
            )
            assert via_key.json()["subject"] == "billing-svc"

            denied = await client.get(
                "/v1/environments/production/handoff",
                headers={"Authorization": "Bearer alice-token"},
            )
            assert denied.status_code == 403
            body = denied.json()
            jsonschema.validate(body, error_schema)
            assert (body["code"], body["actor"]["subject"]) == ("AUTH_ROLE_DENIED", "alice")

            huge = await client.get(
                "/v1/environments", headers={"Authorization": "Bearer " + "a" * 9000}
            )
            assert huge.status_code == 431
            assert huge.json()["code"] == "AUTH_HEADER_TOO_LARGE"

            # Concurrent requests for different actors never see each other's actor.
            tokens = ["alice-token", "olga-token", "billing-key.v1_x~y+z/0=="] * 10
            responses = await asyncio.gather(
                *(
                    client.get("/v1/environments", headers={"Authorization": f"Bearer {t}"})
                    for t in tokens
                )
            )
            assert [r.json()["subject"] for r in responses] == [ACTORS[t].subject for t in tokens]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
    assert inner.lifespan == ["startup", "shutdown"]
    assert sum(e.allowed for e in audit) == 32
    assert_no_secret(audit)


# --------------------------------------------------------------------------- route scopes

SCOPED_ROUTES = [
    RouteRule("POST", "/v1/embeddings", "embeddings:create", scope="embeddings:create"),
    RouteRule("GET", "/v1/models", "models:read", scope="models:read"),
    RouteRule("GET", "/v1/open", "models:read"),  # no scope: roles alone
]
SCOPED_POLICY = Policy(
    [
        PolicyRule(
            effect="allow",
            roles=("developer",),
            permissions=("embeddings:create", "models:read"),
            id="r-dev",
        )
    ]
)
SCOPED_ACTORS = {
    "reader-key": Actor("reader", ("developer",), kind="api_key", scopes=("models:read",)),
    "star-key": Actor("star", ("developer",), kind="api_key", scopes=("*",)),
    "plain-key": Actor("plain", ("developer",), kind="api_key"),
    "billing-key": Actor("billing", ("billing",), kind="api_key", scopes=("*",)),
}


async def scoped_authenticate(credential: str) -> Actor:
    try:
        return SCOPED_ACTORS[credential]
    except KeyError:
        raise AuthenticationError("Invalid credential", code="API_KEY_INVALID") from None


@pytest.fixture
def scoped(inner: InnerApp, audit: list[AuthAuditEvent]) -> AuthMiddleware:
    return AuthMiddleware(
        inner,
        authenticate=scoped_authenticate,
        policy=SCOPED_POLICY,
        rules=SCOPED_ROUTES,
        audit=audit.append,
    )


async def test_route_scopes_narrow_what_the_roles_allow(
    scoped: AuthMiddleware, inner: InnerApp, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    denied = await call(scoped, "POST", "/v1/embeddings", bearer("reader-key"))
    body = assert_error(denied, error_schema, 403, "AUTH_SCOPE_DENIED")
    assert "embeddings:create" in body["error"]
    assert inner.seen == []
    [event] = audit
    assert (event.kind, event.allowed, event.code, event.rule) == (
        "authorization",
        False,
        "AUTH_SCOPE_DENIED",
        "r-dev",
    )
    assert event.reason == "the actor's scopes do not include embeddings:create"
    # the scope it holds, '*', and no scopes at all (roles alone) all pass
    assert (await call(scoped, "GET", "/v1/models", bearer("reader-key"))).status == 200
    assert (await call(scoped, "POST", "/v1/embeddings", bearer("star-key"))).status == 200
    assert (await call(scoped, "POST", "/v1/embeddings", bearer("plain-key"))).status == 200
    # a rule without a scope: any scopes pass
    assert (await call(scoped, "GET", "/v1/open", bearer("reader-key"))).status == 200
    assert len(inner.seen) == 4


async def test_the_policy_is_checked_before_the_scope(
    scoped: AuthMiddleware, error_schema: Any
) -> None:
    # '*' scopes never widen the roles: billing may not create embeddings at all
    response = await call(scoped, "POST", "/v1/embeddings", bearer("billing-key"))
    assert_error(response, error_schema, 403, "AUTH_ROLE_DENIED")


@pytest.mark.parametrize("bad", ["", "*", " spaced", "x" * 129, "a b", 5])
def test_route_rule_scope_must_be_a_concrete_name(bad: Any) -> None:
    with pytest.raises(ValueError, match="scope must be a concrete scope name"):
        RouteRule("GET", "/v1/x", "x:read", scope=bad)


def test_route_rule_scope_defaults_to_none_and_is_kept() -> None:
    assert RouteRule("GET", "/v1/x", "x:read").scope is None
    assert RouteRule("GET", "/v1/x", "x:read", scope="x:read").scope == "x:read"


# --------------------------------------------------------------------------- error renderers


def _renderer(tag: str) -> Any:
    def render(exc: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = json.dumps({"renderer": tag, "code": exc.code, "message": exc.message}).encode()
        headers = [(b"content-type", b"application/json")]
        headers.extend((k.lower().encode(), v.encode()) for k, v in exc.headers.items())
        return exc.status, headers, body

    return render


async def test_error_renderers_answer_the_paths_under_their_prefix(
    inner: InnerApp, authenticator: Authenticator, audit: list[AuthAuditEvent], error_schema: Any
) -> None:
    app = AuthMiddleware(
        inner,
        authenticate=authenticator,
        policy=POLICY,
        rules=ROUTES,
        audit=audit.append,
        error_renderers={"/v1/": _renderer("api"), "/v1/environments/": _renderer("envs")},
    )
    anonymous = await call(app, path="/v1/echo")
    assert anonymous.status == 401
    assert anonymous.json() == {
        "renderer": "api",
        "code": "AUTH_UNAUTHENTICATED",
        "message": "Authentication required: send 'Authorization: Bearer <token>' or"
        " 'x-api-key: <key>'",
    }
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="aiaas"'
    denied = await call(
        app, path="/v1/environments/production/handoff", headers=bearer("alice-token")
    )
    assert (denied.status, denied.json()["renderer"]) == (403, "envs")  # the longest prefix
    assert denied.json()["code"] == "AUTH_ROLE_DENIED"
    elsewhere = await call(app, path="/admin", headers=bearer("alice-token"))
    assert_error(elsewhere, error_schema, 403, "AUTH_ROUTE_UNMAPPED")  # no prefix: shared body
    assert audit[-1].code == "AUTH_ROUTE_UNMAPPED"  # rendering changes nothing else


def test_error_renderers_are_checked(inner: InnerApp, authenticator: Authenticator) -> None:
    def make(renderers: Any) -> AuthMiddleware:
        return AuthMiddleware(
            inner,
            authenticate=authenticator,
            policy=POLICY,
            rules=ROUTES,
            error_renderers=renderers,
        )

    with pytest.raises(ValueError, match="path prefixes starting with '/'"):
        make({"v1/": _renderer("x")})
    with pytest.raises(TypeError, match="not callable"):
        make({"/v1/": "openai"})
    with pytest.raises(TypeError, match="must map path prefixes"):
        make([("/v1/", _renderer("x"))])
    assert make(None) is not None

"""Route resolvers: templates, the app's router, and what users may pass."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from aiaas_telemetry import RouterRoutes, TemplateRoutes, as_route_resolver


def scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}


def test_template_routes() -> None:
    routes = TemplateRoutes(
        [
            "/v1/items/{id}",
            "/v1/items/special",
            "/v1/items/{id}/parts/{part:int}",
            "/files/{rest:path}",
            "/u/{uid:uuid}",
            "/f/{x:float}",
            "/v1/items/{id}",  # duplicates are dropped
        ]
    )
    assert routes(scope("/v1/items/42")) == "/v1/items/{id}"
    assert routes(scope("/v1/items/special")) == "/v1/items/special"  # static wins
    assert routes(scope("/v1/items/42/parts/7")) == "/v1/items/{id}/parts/{part:int}"
    assert routes(scope("/v1/items/42/parts/x")) is None
    assert routes(scope("/files/a/b/c.txt")) == "/files/{rest:path}"
    assert routes(scope("/u/123e4567-e89b-12d3-a456-426614174000")) == "/u/{uid:uuid}"
    assert routes(scope("/u/nope")) is None
    assert routes(scope("/f/1.5")) == "/f/{x:float}"
    assert routes(scope("/v1/items/")) is None
    assert routes(scope("/v1/items/42/")) is None
    assert routes(scope("/other")) is None
    assert len(routes.templates) == 6
    assert "TemplateRoutes" in repr(routes)
    assert TemplateRoutes(["/a"])(scope("/b")) is None  # static only


@pytest.mark.parametrize(
    "template",
    ["no-slash", "/a/{id", "/a/{id}}", "/a/{id:weird}", "/a/{id}/{id}", "/a/{1x}"],
)
def test_bad_templates(template: str) -> None:
    with pytest.raises(ValueError, match="route template"):
        TemplateRoutes([template])


def test_template_must_be_strings() -> None:
    with pytest.raises(TypeError):
        as_route_resolver([1, 2])


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_router_routes_with_a_starlette_app() -> None:
    inner = Router(routes=[Route("/items/{id:int}", ok), Route("/health", ok)])
    app = Starlette(
        routes=[
            Route("/v1/things/{name}", ok, methods=["GET"]),
            Mount("/api", routes=[Route("/users/{uid}", ok)]),
            Mount("/inner", app=inner),
            Mount("/static", app=PlainTextResponse("x")),
        ]
    )
    resolve = as_route_resolver(app)
    assert isinstance(resolve, RouterRoutes)
    assert resolve(scope("/v1/things/abc")) == "/v1/things/{name}"
    assert resolve(scope("/v1/things/abc", "POST")) == "/v1/things/{name}"  # 405: partial
    assert resolve(scope("/api/users/7")) == "/api/users/{uid}"
    assert resolve(scope("/inner/items/3")) == "/inner/items/{id:int}"
    assert resolve(scope("/static/css/site.css")) == "/static/{path:path}"
    assert resolve(scope("/api/unknown")) == "/api/{path:path}"
    assert resolve(scope("/nowhere")) is None
    assert isinstance(as_route_resolver(app.router), RouterRoutes)


def test_router_routes_skip_routes_that_raise() -> None:
    class Weird:
        path = "/w"

        def matches(self, scope: Any) -> Any:
            raise RuntimeError("cannot judge")

    class Holder:
        def __init__(self) -> None:
            self.routes = [Weird(), Route("/ok", ok)]

    assert RouterRoutes(Holder())(scope("/ok")) == "/ok"
    with pytest.raises(TypeError, match="routes"):
        RouterRoutes(object())


def test_as_route_resolver() -> None:
    assert as_route_resolver(None) is None
    templates = TemplateRoutes(["/a"])
    assert as_route_resolver(templates) is templates

    def fn(scope: Any) -> str:
        return "/x"

    assert as_route_resolver(fn) is fn
    assert isinstance(as_route_resolver(("/a", "/b")), TemplateRoutes)
    with pytest.raises(TypeError, match="one string"):
        as_route_resolver("/a")
    with pytest.raises(TypeError, match="got int"):
        as_route_resolver(3)

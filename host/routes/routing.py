"""The routes' HTTP API (``/api/routes``); docs/control-plane.md#routes.

``GET /api/routes`` lists them (with each target's share and the targets now failing or
cooling down), ``GET``, ``PUT`` (create or replace, 201 or 200) and ``DELETE
/api/routes/{name}``. Each calls the `RouteStore` in a thread (synchronous SQLAlchemy); every
change is audited with the ``X-User-Id`` header as its actor.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control.routes import RouteStore
from ..openapi import protocol
from ..protocol import routes as rt
from .common import host, parse
from .registry import actor, call


def store(request: Request) -> RouteStore:
    return host(request).control.routes


def _json(model: Any, status: int = 200, **extra: Any) -> Response:
    return JSONResponse({**model.model_dump(mode="json"), **extra}, status_code=status)


@protocol(None, rt.RouteListOut)
async def list_routes(request: Request) -> Response:
    """List the routes, with the health of the targets now failing or cooling down."""
    routes = await call(store(request).list)
    return _json(rt.RouteListOut(data=routes), health=store(request).router.health())


@protocol(None, rt.RouteOut)
async def get_route(request: Request) -> Response:
    """One route."""
    return _json(await call(store(request).get, request.path_params["name"]))


@protocol(rt.RouteBody, rt.RouteOut)
async def put_route(request: Request) -> Response:
    """Create or replace a route (201 created, 200 replaced); weights are normalised."""
    body = await parse(request, rt.RouteBody)
    route, created = await call(
        store(request).put, request.path_params["name"], body, actor(request)
    )
    return _json(route, 201 if created else 200)


@protocol(None, rt.RouteOut)
async def delete_route(request: Request) -> Response:
    """Remove a route; audited."""
    return _json(await call(store(request).delete, request.path_params["name"], actor(request)))


routes = [
    Route("/api/routes", list_routes, methods=["GET"]),
    Route("/api/routes/{name:path}", get_route, methods=["GET"]),
    Route("/api/routes/{name:path}", put_route, methods=["PUT"]),
    Route("/api/routes/{name:path}", delete_route, methods=["DELETE"]),
]

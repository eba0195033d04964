"""The model registry's routes (``/api/models``, ``/api/audit``); docs/control-plane.md.

Each route parses its body (`host.protocol.registry`) and calls the `Registry` service in a
thread (synchronous SQLAlchemy; the event loop keeps serving inference meanwhile). Errors
answer in the OpenAI shape (host/errors.py). Who made a change is `actor`: the authenticated
subject, else the ``X-User-Id`` header, else ``anonymous``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import principal_of
from ..control.registry import ANONYMOUS, MAX_AUDIT, Registry
from ..errors import APIError
from ..openapi import protocol, query
from ..protocol import registry as reg
from .common import host, parse

T = TypeVar("T")

#: Longest actor name kept in the audit log.
MAX_ACTOR = 256


def actor(request: Request) -> str:
    """Who is changing the registry: the authenticated subject (``key:<id>``, ``jwt:<sub>``;
    host/auth.py), else the ``X-User-Id`` header, unverified, else ``anonymous``."""
    principal = principal_of(request)
    if principal is not None:
        return principal.subject[:MAX_ACTOR]
    user = request.headers.get("x-user-id", "").strip()
    return user[:MAX_ACTOR] if user else ANONYMOUS


async def call(method: Callable[..., T], *args: Any) -> T:
    """Run a `Registry` method in a worker thread (the event loop keeps serving)."""
    return await run_in_threadpool(method, *args)


def registry(request: Request) -> Registry:
    return host(request).control.registry


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise APIError(400, f"{name} must be one of {list(allowed)}", param=name)
    return value


def _version(request: Request) -> str | None:
    version = request.query_params.get("version")
    if version is not None and not version:
        raise APIError(400, "version must not be empty", param="version")
    return version


def _json(model: Any, status: int = 200) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


@protocol(
    None,
    reg.ModelListOut,
    query={
        "status": query(enum=reg.STATUSES),
        "task": query(),
        "provider": query(enum=reg.PROVIDERS),
    },
)
async def list_models(request: Request) -> Response:
    """List registered models (filters: status, task, provider)."""
    status = _choice(request, "status", reg.STATUSES)
    provider = _choice(request, "provider", reg.PROVIDERS)
    task = request.query_params.get("task")
    models = await call(registry(request).list_models, status, task, provider)
    return _json(reg.ModelListOut(data=models))


@protocol(reg.Registration, reg.RegisteredModelOut)
async def register(request: Request) -> Response:
    """Register a model version, or update the fields given (201 created, 200 updated)."""
    body = await parse(request, reg.Registration)
    model, created = await call(registry(request).register, body, actor(request))
    return _json(model, 201 if created else 200)


#: ``?version=`` of a registered model's routes (default: its latest version).
VERSION = {"version": query(description="default: the latest version")}


@protocol(None, reg.RegisteredModelOut, query=VERSION)
async def get_model(request: Request) -> Response:
    """One registered model (``?version=``; default: its latest version)."""
    model_id = request.path_params["model_id"]
    return _json(await call(registry(request).get, model_id, _version(request)))


@protocol(reg.ModelPatch, reg.RegisteredModelOut, query=VERSION)
async def patch_model(request: Request) -> Response:
    """Change a registered model's status, tags, cost or quality (``?version=``)."""
    model_id, version = request.path_params["model_id"], _version(request)
    body = await parse(request, reg.ModelPatch)
    changed = await call(registry(request).patch, model_id, version, body, actor(request))
    return _json(changed)


@protocol(None, reg.RegisteredModelOut, query=VERSION)
async def delete_model(request: Request) -> Response:
    """Remove a registration (``?version=``; default: the latest version); audited."""
    model_id, version = request.path_params["model_id"], _version(request)
    return _json(await call(registry(request).delete, model_id, version, actor(request)))


@protocol(
    None,
    reg.AuditListOut,
    query={
        "limit": query("integer", minimum=1, maximum=MAX_AUDIT),
        "model_id": query(),
        "kind": query(enum=("model", "route")),
    },
)
async def audit(request: Request) -> Response:
    """The registry's and the routes' changes, newest first (``?limit=``, ``?model_id=``,
    ``?kind=model|route``)."""
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT:
        raise APIError(400, f"limit must be an integer in [1, {MAX_AUDIT}]", param="limit")
    model_id = request.query_params.get("model_id")
    kind = _choice(request, "kind", ("model", "route"))
    rows = await call(registry(request).audit, int(raw), model_id, kind)
    return _json(reg.AuditListOut(data=rows))


routes = [
    Route("/api/models", list_models, methods=["GET"]),
    Route("/api/models", register, methods=["POST"]),
    Route("/api/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/api/models/{model_id:path}", patch_model, methods=["PATCH"]),
    Route("/api/models/{model_id:path}", delete_model, methods=["DELETE"]),
    Route("/api/audit", audit, methods=["GET"]),
]

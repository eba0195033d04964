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

from ..control import strategies
from ..control.routes import RouteStore
from ..errors import APIError
from ..openapi import protocol
from ..protocol import routes as rt
from .common import host, parse
from .registry import actor, call, registry


def store(request: Request) -> RouteStore:
    return host(request).control.routes


#: The window of the route comparison in GET /api/routes.
COMPARISON_HOURS = 24


def _json(model: Any, status: int = 200, **extra: Any) -> Response:
    return JSONResponse({**model.model_dump(mode="json"), **extra}, status_code=status)


@protocol(None, rt.RouteListOut)
async def list_routes(request: Request) -> Response:
    """List the routes, with the health of the targets now failing or cooling down, each
    route's shadow comparison (its challenger's agreement, latency and errors), and the
    comparison of what its arms answered in the last 24 hours (requests, errors, latency,
    cost) beside their users' feedback."""
    routes = await call(store(request).list)
    shadows = host(request).service.shadows
    plane = host(request).control
    await call(plane.writer.flush)
    arms = await call(plane.costs.by_route, COMPARISON_HOURS)
    feedback = plane.feedback.summary()
    for per_model in arms.values():
        for name, metrics in per_model.items():
            metrics["feedback"] = feedback.get(name)
    return _json(
        rt.RouteListOut(data=routes),
        health=store(request).router.health(),
        shadow=shadows.out() if shadows is not None else {},
        comparison={"hours": COMPARISON_HOURS, "routes": arms},
    )


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


@protocol(rt.SelectRequest, rt.SelectOut)
async def select_model(request: Request) -> Response:
    """The best active registered model for a task, by strategy or weights, with every
    candidate's score (docs/control-plane.md#strategies)."""
    body = await parse(request, rt.SelectRequest)
    models = await call(registry(request).list_models, "active", body.task_type, None)
    if body.safety_required or body.strategy == "safety-critical":
        models = [m for m in models if strategies.SAFE_TAG in m.tags]
    latencies = strategies.mean_latencies_ms(host(request).metrics.duration.collect())
    candidates = [strategies.candidate(m, latencies) for m in models]
    if body.max_cost_per_1k_tokens is not None:
        limit = body.max_cost_per_1k_tokens
        candidates = [
            c
            for c in candidates
            if c.cost_per_1k_tokens is not None and c.cost_per_1k_tokens <= limit
        ]
    if not candidates:
        raise APIError(
            404,
            f"no active registered model serves {body.task_type} within the constraints "
            "(safety_required, max_cost_per_1k_tokens); GET /api/models lists them",
            code="no_candidate",
            param="task_type",
        )
    given = (body.quality_weight, body.cost_weight, body.latency_weight)
    if any(w is not None for w in given):
        weights = (given[0] or 0.0, given[1] or 0.0, given[2] or 0.0)
    else:
        weights = strategies.STRATEGIES[body.strategy]
    if sum(weights) <= 0:
        raise APIError(400, "at least one weight must be > 0", param="quality_weight")
    scored = strategies.score(candidates, weights)
    chosen, reason = strategies.select(scored)
    out = [_scored(s) for s in scored]
    return _json(
        rt.SelectOut(
            task_type=body.task_type,
            strategy="custom" if any(w is not None for w in given) else body.strategy,
            weights=dict(zip(("quality", "cost", "latency"), weights, strict=True)),
            selected=_scored(chosen),
            reason=reason,
            candidates=out,
        )
    )


def _scored(s: strategies.Scored) -> rt.ScoredOut:
    c = s.candidate
    return rt.ScoredOut(
        model_id=c.model_id,
        version=c.version,
        quality=c.quality,
        cost_per_1k_tokens=c.cost_per_1k_tokens,
        latency_ms=None if c.latency_ms is None else round(c.latency_ms, 3),
        terms={"quality": s.quality, "cost_efficiency": s.cost_efficiency, "speed": s.speed},
        score=round(s.score, 6),
        measured=c.measured,
    )


routes = [
    Route("/api/models/select", select_model, methods=["POST"]),
    Route("/api/routes", list_routes, methods=["GET"]),
    Route("/api/routes/{name:path}", get_route, methods=["GET"]),
    Route("/api/routes/{name:path}", put_route, methods=["PUT"]),
    Route("/api/routes/{name:path}", delete_route, methods=["DELETE"]),
]

"""Operations routes: liveness, readiness, metrics, hardware, and the model cache."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import APIError
from .common import host


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Ready when every default model (first per task) is loaded or loads now."""
    h = host(request)
    failures = {}
    for task, name in h.defaults().items():
        try:
            await h.loader.get(name, task)
        except Exception as exc:  # reported, not raised: readiness is a state, not an error
            failures[f"{name}/{task}"] = getattr(exc, "message", str(exc))
    body = {
        "status": "ready" if not failures else "not_ready",
        "failures": failures,
        "resident": [f"{m['model']}/{m['task']}" for m in h.loader.resident()],
    }
    return JSONResponse(
        body,
        status_code=200 if not failures else 503,
        headers=None if not failures else {"Retry-After": "5"},
    )


async def metrics(request: Request) -> Response:
    return Response(
        host(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


async def hardware(request: Request) -> Response:
    return JSONResponse({"hardware": host(request).hardware.report()})


async def list_resident(request: Request) -> Response:
    h = host(request)
    return JSONResponse(
        {
            "resident": h.loader.resident(),
            "budget_bytes": h.loader.budget,
            "used_bytes": h.loader.used_bytes(),
            "models": [
                {
                    "name": m.name,
                    "skill": m.skill.name,
                    "tasks": list(m.tasks),
                    "aliases": list(m.aliases),
                    "pinned": m.pinned,
                    "checkpoint": m.location,
                }
                for m in h.catalog.models.values()
            ],
            "unavailable": h.catalog.errors,
            "broken_skills": h.registry.broken,
        }
    )


async def load(request: Request) -> Response:
    h = host(request)
    name, task = request.path_params["name"], request.query_params.get("task")
    loaded = await h.loader.get(name, task)
    return JSONResponse(
        {
            "loaded": f"{loaded.model.name}/{loaded.task}",
            "hardware": loaded.endpoint.hardware,
            "memory_bytes": loaded.endpoint.memory_bytes,
        }
    )


async def unload(request: Request) -> Response:
    count = await host(request).loader.unload(request.path_params["name"])
    if not count:
        raise APIError(404, f"model {request.path_params['name']!r} is not resident")
    return JSONResponse({"unloaded": count})


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/hardware", hardware, methods=["GET"]),
    Route("/admin/models", list_resident, methods=["GET"]),
    Route("/admin/models/{name:path}/load", load, methods=["POST"]),
    Route("/admin/models/{name:path}/unload", unload, methods=["POST"]),
]

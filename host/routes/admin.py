"""Operations routes: liveness, readiness, metrics, hardware, and the model cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfskills.skillset.runtime.errors import HFSkillsError

from ..errors import APIError, retry_after
from ..openapi import protocol, query
from .common import host

if TYPE_CHECKING:
    from ..app import Host


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def preload(h: Host) -> dict[str, str]:
    """Load the default model of every task and every task of every pinned model (the
    ``preload`` setting, at start-up); ``{"model/task": why}`` for each load that failed."""
    wanted = [(name, task) for task, name in h.defaults().items()]
    wanted += [(m.name, t) for m in h.catalog.models.values() if m.pinned for t in m.tasks]
    failures: dict[str, str] = {}
    for name, task in dict.fromkeys(wanted):
        try:
            await h.loader.get(name, task)
        except HFSkillsError as exc:  # reported by /ready; the model is tried again on use
            failures[f"{name}/{task}"] = exc.message
    return failures


def readiness(h: Host) -> dict[str, Any]:
    """What /ready answers, from what the host knows now: it loads and evicts nothing.

    Ready means the server can answer inference: start-up (and ``preload``, when on) has
    finished, and at least one catalog model is servable, i.e. its entry resolved and it has no
    failed preload that a later load has not mended. Models load on their first request, so
    without ``preload`` a checkpoint that cannot load is found then, not here.
    """
    resident = {f"{m['model']}/{m['task']}" for m in h.loader.resident()}
    failures = {
        key: why
        for key, why in getattr(h, "preload_failures", {}).items()
        if key not in resident  # loaded since: mended
    }
    failed = {key.split("/", 1)[0] for key in failures}
    servable = [name for name in h.catalog.models if name not in failed]
    reason = None
    if not getattr(h, "startup_complete", False):
        reason = "starting: models are still being preloaded"
    elif not h.catalog.models and h.catalog.on_demand is None:
        reason = "no model can be served: every catalog entry is unavailable (see unavailable)"
    elif not servable:
        reason = "no model can be served: every model failed to load at start-up (see failures)"
    return {
        "status": "not_ready" if reason else "ready",
        "reason": reason,
        "models": servable,
        "unavailable": dict(h.catalog.errors),
        "failures": failures,
        "resident": [f"{m['model']}/{m['task']}" for m in h.loader.resident()],
        "loading": [f"{name}/{task}" for name, task in h.loader.loading],
    }


async def ready(request: Request) -> Response:
    """200 when the server can serve, else 503 with the reason (see `readiness`)."""
    body = readiness(host(request))
    if body["reason"] is None:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers=retry_after(503))


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
                    "adapters": list(m.adapters),
                    "pinned": m.pinned,
                    "checkpoint": m.location,
                    "skill_path": str(m.skill.path),
                    # generated on the fly (host/generated.py): no built-in or --skills-dir skill
                    "skill_generated": m.skill.generated,
                    "on_demand": m.on_demand,
                }
                for m in h.catalog.models.values()
            ],
            "unavailable": h.catalog.errors,
            "on_demand_models": h.catalog.on_demand is not None,
            "broken_skills": h.registry.broken,
        }
    )


@protocol(None, query={"task": query(description="default: the model's first task")})
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

"""``GET /benchmark/summary``: the benchmark records (``bench_jsonl``: ``hfskills bench`` runs
and the automatic ones) aggregated per model, version and hardware (host/control/bench.py),
beside what the control plane knows of that version now: its users' feedback
(``POST /api/feedback``) and its cost per 1000 tokens at the benchmarks' mean tokens/s.

The file is read in a worker thread (the event loop keeps serving) and only its last
``MAX_READ_BYTES``. Filters: ``?model=``, ``?hardware=``, ``?source=cli|auto``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import bench
from ..errors import APIError
from ..openapi import protocol, query
from .common import host

if TYPE_CHECKING:
    from ..state import Host

SOURCES = ("cli", "auto")


def _cost_per_1k(profile: Any, tokens_per_s: float | None) -> float | None:
    """A local model's ``hardware_hourly_usd / (tokens_per_s * 3600 / 1000)``; a remote
    model's mean of its two prices; None without a price or a measurement."""
    if profile is None:
        return None
    provider, cost = profile
    if provider != "local":
        prices = [p for p in (cost.prompt_usd_per_1k, cost.completion_usd_per_1k) if p is not None]
        return round(sum(prices) / len(prices), 6) if prices else None
    if cost.hardware_hourly_usd is None or not tokens_per_s:
        return None
    return round(cost.hardware_hourly_usd / (tokens_per_s * 3600 / 1000), 6)


def _beside(h: Host, rows: list[dict[str, Any]]) -> None:
    """Each row's feedback and cost, for the version this host serves now."""
    plane = h.control
    feedback = getattr(plane, "feedback", None)
    tallies = feedback.summary() if feedback is not None else {}
    registry = plane.registry
    ids: dict[str, str] = getattr(registry, "ids", {})
    profiles: dict[str, Any] = getattr(registry, "profiles", {})
    for row in rows:
        model_id = ids.get(row["model"], row["model"])
        row["feedback"] = tallies.get(f"{model_id}@{row['version']}")
        current = registry.served.get(row["model"]) == row["version"]
        profile = profiles.get(row["model"], profiles.get(model_id)) if current else None
        row["cost_per_1k_tokens"] = _cost_per_1k(profile, row["tokens_per_s"]["mean"])


@protocol(None, query={"model": query(), "hardware": query(), "source": query(enum=SOURCES)})
async def summary(request: Request) -> Response:
    """Runs, last run, mean and p95 of the key metrics, failures, quality, feedback and cost
    per model, version and hardware."""
    h = host(request)
    path = bench.path_of(h.settings.bench_jsonl)
    source = request.query_params.get("source")
    if source is not None and source not in SOURCES:
        raise APIError(400, f"source must be one of {list(SOURCES)}", param="source")
    wanted = {k: request.query_params.get(k) for k in ("model", "hardware")}
    records = [
        r
        for r in await run_in_threadpool(bench.read, path)
        if all(v is None or r.get(k) == v for k, v in wanted.items())
        and (source is None or r.get("source", "cli") == source)
    ]
    rows = bench.summary(records)
    _beside(h, rows)
    return JSONResponse({"object": "list", "path": str(path), "data": rows})


routes = [Route("/benchmark/summary", summary, methods=["GET"])]

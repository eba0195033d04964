"""``GET /benchmark/summary``: the benchmark records (``bench_jsonl``: ``hfskills bench`` runs
and the automatic ones) aggregated per model, version and hardware (host/control/bench.py).

The file is read in a worker thread (the event loop keeps serving) and only its last
``MAX_READ_BYTES``. Filters: ``?model=``, ``?hardware=``, ``?source=cli|auto``.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import bench
from ..errors import APIError
from .common import host

SOURCES = ("cli", "auto")


async def summary(request: Request) -> Response:
    """Runs, last run, mean and p95 of the key metrics, failures and quality per model,
    version and hardware."""
    path = bench.path_of(host(request).settings.bench_jsonl)
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
    return JSONResponse({"object": "list", "path": str(path), "data": bench.summary(records)})


routes = [Route("/benchmark/summary", summary, methods=["GET"])]

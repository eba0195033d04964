"""The Starlette app, assembled: the `Host` (state.py), the routes, error handlers, middleware
and the lifespan. Nothing else lives here.

One warm request's whole path (docs/architecture.md tells it at length):

1. With authentication on, `auth.Authentication` answers 401/403 by credentials and role
   (``auth.py``); `middleware.BodyLimit` refuses bodies over ``max_body_bytes`` (413).
2. A route (``routes/``) parses its pydantic request model (``protocol/``) and hands it to the
   serving layer of its API family (``serving/``), which turns it into typed work: task, inputs,
   generation params, and a `RequestContext` (priority, deadline, disconnect watch, user).
   A ``model`` that names a route becomes the target its router chooses (``control/routing.py``,
   in memory), failing over to the next candidate when a target fails.
3. `InferenceService` (``inference.py``) takes a slot from the `Scheduler` (priority queue,
   per-model and global limits, 429/503), holds the model from the `ModelLoader` (LRU cache,
   single-flight load on first use), and awaits the model's worker within the deadline.
4. The worker (``workers.py``): a generation engine (torch `DecodeEngine`, OpenVINO GenAI, vLLM)
   batching continuously, or a `DynamicBatcher` running the skill's handler in the worker pool.
5. The serving layer writes the answer in its API's shape (JSON or SSE); any exception becomes
   that API's error body (``errors.py``).

With tracing on (``tracing.py``), an outermost middleware makes each request one trace, with a
span for each step above.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import ChainMap
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from hfskills.skillset.runtime.errors import HFSkillsError

from . import auth, errors, mcp_server, tracing
from .config import Settings
from .control.answer import AnswerHeaders
from .control.gate import DeprecationNotices
from .control.keys import KeyStore
from .headers import NotedHeaders
from .limits import KeyLimits
from .loader import freeze_heap
from .middleware import BodyLimit
from .openapi import openapi_route
from .routes import (
    admin,
    audio,
    bench,
    compat,
    costs,
    design,
    hf,
    keys,
    openai,
    registry,
    routing,
    scoring,
    switch,
    tokens,
)
from .state import Host


def build_app(settings: Settings) -> Starlette:
    traces = tracing.setup(settings.tracing)  # None: tracing off (host/tracing.py)
    host = Host(settings)
    mcp = mcp_server.build(settings)  # /mcp; None: off, or the mcp extra not installed

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        freeze_heap()
        if settings.preload:  # GET /ready reports the loads that failed (routes/admin.py)
            host.preload_failures = await admin.preload(host)
        host.shadows.start()  # writes the shadow records every few seconds
        host.startup_complete = True  # /ready may answer 200 from now on
        async with mcp_server.lifespan(mcp):  # the MCP session manager's task group
            yield
        host.executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(host.shadows.close)  # the last write
        host.control.close()
        if traces is not None:  # the spans still buffered are sent
            await asyncio.to_thread(traces.shutdown)

    routes = [
        *openai.routes,
        *audio.routes,
        *scoring.routes,  # /v1/rerank, /v2/rerank, vLLM's /score, TEI's /rerank and /predict
        *tokens.routes,  # /tokenize, /detokenize (vLLM's and TEI's), TEI's /decode
        *design.routes,  # /v1/infer/{model}, /v1/generate, /v1/embed, /v1/classify, /v1/detect
        *hf.routes,
        *admin.routes,
        *costs.routes,  # before the registry's /api/models/{model_id}
        *registry.routes,
        *routing.routes,
        *switch.routes,
        *bench.routes,
        *keys.routes,
        *compat.routes,  # POST /: TGI's and TEI's compat route (last: the root path)
    ]
    app = Starlette(
        routes=[
            *routes,
            openapi_route(routes, list(host.catalog.names)),
            *([mcp.route] if mcp is not None else []),  # MCP describes itself: not in OpenAPI
        ],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: errors.handle,
            HFSkillsError: errors.handle,
            errors.APIError: errors.handle,
            ValidationError: errors.handle,
            Exception: errors.handle,
        },
    )
    app.state.host = host
    app.state.tracing = traces
    app.add_middleware(DeprecationNotices, gate=host.control.gate)
    if host.service.limits is not None:  # per caller: concurrency and rates (host/limits.py)
        app.add_middleware(KeyLimits, limits=host.service.limits)
    app.add_middleware(NotedHeaders)  # x-ratelimit-*, X-HFSkills-Cache (host/headers.py)
    served, remote = host.control.registry.served, host.control.registry.remote
    versions = ChainMap(served, remote.versions) if remote is not None else served
    ids = host.control.registry.ids
    app.add_middleware(AnswerHeaders, versions=versions, ids=ids)  # local and remote models
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # 401/403 before anything reads the body; CORS outside it (a preflight has no credentials)
    auth.install(app, settings, KeyStore(host.control.engine), host.control.writer)
    if host.safety is not None:  # the hooks a request's key switches (its `safety`)
        host.safety.switches = auth.safety_switches
    if traces is not None:  # outermost: the request's server span covers everything
        tracer, excluded = tracing.tracer_of(traces), settings.tracing_excluded_paths
        app.add_middleware(tracing.Middleware, tracer=tracer, excluded=excluded)
    return app

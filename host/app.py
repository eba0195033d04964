"""The Starlette app: one `Host` wires discovery, catalog, hardware, loader and inference.

A request's whole path: a route (``routes/``) parses its pydantic model (``protocol/``) ->
`InferenceService` (``inference.py``) -> `ModelLoader` (``loader.py``: LRU cache, single-flight)
-> `HardwareManager` (``hardware.py``) -> the skill's ``init_<hw>`` and handler -> the route
writes the response in its API's format; errors go through ``errors.py``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hfskills.skillset.runtime.continuous import DecodeEngine
from hfskills.skillset.runtime.errors import HFSkillsError

from . import catalog as catalog_mod
from . import errors
from .config import Settings
from .discovery import discover
from .hardware import HardwareManager
from .inference import InferenceService
from .loader import Loaded, ModelLoader
from .metrics import Metrics
from .openapi import openapi_route
from .routes import admin, hf, openai
from .scheduler import Scheduler

log = logging.getLogger("hfskills.host")

#: Hardware where skills run torch modules (the decode engine's home).
TORCH_HARDWARE = ("cpu", "cuda", "rocm", "mps")


def freeze_heap() -> None:
    """Move what exists now (modules, the app, loaded models) out of the garbage collector's
    sight. A full collection walks every tracked object: with a few hundred thousand
    long-lived ones it paused serving ~100 ms at a time (measured: p99 122 -> 17 ms)."""
    gc.collect()
    gc.freeze()


def default_budget() -> int:
    """80% of the memory available now (Linux), else 8 GiB."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        available = 10 * 2**30
    return int(available * 0.8)


class Host:
    """Everything one server holds; routes reach it as ``request.app.state.host``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = discover(settings.skills_dirs)
        self.catalog = catalog_mod.build(settings, self.registry)
        self.metrics = Metrics()
        self.hardware = HardwareManager()
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="hfskills-worker")
        budget = settings.memory_budget_bytes
        self.loader = ModelLoader(
            self.catalog,
            self.hardware.load,
            self.executor,
            self.metrics,
            budget if budget is not None else default_budget(),
            prepare=self.prepare,
        )
        self.scheduler = Scheduler(
            self.metrics,
            max_concurrency=settings.max_concurrency,
            per_model=settings.max_concurrency_per_model,
            max_queue=settings.max_queue_per_model,
        )
        self.service = InferenceService(
            self.loader,
            self.executor,
            self.metrics,
            self.scheduler,
            max_inputs=settings.max_batch_inputs,
        )
        self.started = int(time.time())
        for name, why in self.catalog.errors.items():
            log.error("model %s is not served: %s", name, why)

    def prepare(self, loaded: Loaded) -> None:
        """Give a freshly loaded model its batching: its own engine's (GenAI, vLLM), else
        continuous for decoder generation on torch, dynamic for everything else. Its objects
        leave the collector's sight too."""
        freeze_heap()
        s = self.settings
        loaded.batching = {
            "max_batch": s.max_batch_size,
            "max_batch_tokens": s.max_batch_tokens,
            "max_wait_s": s.batch_wait_ms / 1000,
        }
        endpoint = loaded.endpoint
        if endpoint.engine is not None:  # OpenVINO GenAI or vLLM: batches continuously itself
            loaded.engine = endpoint.engine
        elif (
            s.continuous_batching
            and loaded.task == "text_generation"
            and loaded.model.skill.cls.family == "decoder"
            and endpoint.hardware in TORCH_HARDWARE
        ):
            loaded.engine = DecodeEngine(
                endpoint.model, endpoint.processor, endpoint.device, max_batch=s.max_batch_sequences
            )

    def defaults(self) -> dict[str, str]:
        """task -> the model the root TGI/TEI routes use: configured, else the first with it."""
        chosen: dict[str, str] = {}
        for model in self.catalog.models.values():
            for task in model.tasks:
                chosen.setdefault(task, model.name)
        for task, name in self.settings.default_models.items():
            model = self.catalog.get(name)
            if model is not None:
                chosen[task] = model.name
        return chosen


class BodyLimit:
    """Answer 413 for bodies over the limit, by Content-Length or while streaming in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(path, scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except TooLarge:
            await self._reject(path, scope, receive, send)

    async def _reject(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than the limit of {self.limit} bytes"
        await errors.error_response(path, 413, message, code="payload_too_large")(
            scope, receive, send
        )


class TooLarge(Exception):
    pass


def build_app(settings: Settings) -> Starlette:
    host = Host(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        freeze_heap()
        if settings.preload:
            for task, name in host.defaults().items():
                with contextlib.suppress(HFSkillsError):
                    await host.loader.get(name, task)
            for model in host.catalog.models.values():
                if model.pinned:
                    for task in model.tasks:
                        with contextlib.suppress(HFSkillsError):
                            await host.loader.get(model.name, task)
        yield
        host.executor.shutdown(wait=False, cancel_futures=True)

    routes = [*openai.routes, *hf.routes, *admin.routes]
    app = Starlette(
        routes=[*routes, openapi_route(routes)],
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
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app

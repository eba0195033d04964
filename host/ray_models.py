"""Ray Serve, one deployment per model (``hfskills serve --ray --ray-per-model``; docs/ray.md).

Policy: the app's replica (the ingress, host/ray_serve.py) keeps everything that reads a
request: parsing, auth, limits, routes, the safety pipeline, the serving layer. Each catalog
model is a Ray Serve deployment of its own (`ModelServer`), autoscaled by Ray on its own
ongoing requests, which holds the model's weights and its worker (the dynamic batcher, or the
generation engine) and nothing else. Between the two runs the worker contract of
host/workers.py: the ingress's loader connects a model (`connect`) instead of loading it, and
its `RayWorker` answers ``run(inputs, params, deadline)`` and ``stream(prompt, params,
deadline)`` through a Ray ``DeploymentHandle``: a call is one ``handle.run.remote(...)``, a
stream one ``handle.options(stream=True).stream.remote(...)`` whose items are the token
events. Ray does the placement, the routing between replicas and the scaling; nothing here
balances load.

A `ModelServer` replica is a one-model `ModelLoader` (the host's own, with its hardware choice,
its LoRA adapters and its memory budget), so a model loads, batches and generates as under
``hfskills serve``. The ingress loads only the model's processor (its tokenizer: the serving
layer decodes logprobs and renders chat deltas with it) and counts no memory for it: the
weights are on the model's replicas.

Deadlines cross as the seconds left (the two processes' clocks differ); a caller that leaves
cancels the Ray call, which cancels the model's work at its next token, as in one process.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from hfskills.skillset.runtime import Endpoint, torch_backend
from hfskills.skillset.runtime import checkpoint as checkpoints
from hfskills.skillset.runtime.generation import Event, event_of

from .catalog import ServedModel
from .config import Settings
from .workers import Params, Row

#: The hardware the ingress's loader reports for a model on its own deployment.
HARDWARE = "ray"


def deployment_name(model: str) -> str:
    """A model's deployment name (Ray's names: letters, digits, ``-_.``)."""
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model)


class ModelServer:
    """One catalog model on its replicas: a one-model loader and its workers (the module
    docstring). Ray calls `run` and `stream` from the ingress's `RayWorker`."""

    def __init__(self, settings: Settings, name: str) -> None:
        from . import catalog as catalog_mod
        from .discovery import discover
        from .hardware import HardwareManager
        from .loader import ModelLoader
        from .metrics import Metrics
        from .state import budget_of, policy_of

        registry = discover(settings.skills_dirs, builtin=settings.builtin_skills)
        model = catalog_mod.build(settings, registry).models[name]
        self.name = name
        one = catalog_mod.Catalog({name: model}, dict.fromkeys(model.names, name), {})
        self.loader = ModelLoader(
            one,
            HardwareManager().load,
            ThreadPoolExecutor(settings.workers, thread_name_prefix="hfskills-worker"),
            Metrics(),
            budget_of(settings),
            policy_of(settings),
        )

    async def load(self, task: str) -> dict[str, Any]:
        """Load the model for ``task`` (once per replica); where it runs."""
        loaded = await self.loader.get(self.name, task)
        endpoint = loaded.endpoint
        return {
            "hardware": endpoint.hardware,
            "device": endpoint.device,
            "dtype": endpoint.dtype,
            "memory_bytes": endpoint.memory_bytes,
        }

    async def run(self, task: str, inputs: list[Any], params: Params, left_s: float) -> list[Row]:
        deadline = asyncio.get_running_loop().time() + left_s
        async with self.loader.use(self.name, task) as loaded:
            return list(await loaded.worker.run(inputs, params, deadline))

    async def stream(
        self, task: str, prompt: Any, params: Params, left_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + left_s
        async with self.loader.use(self.name, task) as loaded:
            events = await loaded.worker.stream(prompt, params, deadline)
            async for event in events:
                yield event.as_dict()


class RayWorker:
    """The worker contract (host/workers.py) over a model's Ray Serve deployment."""

    def __init__(self, handle: Any, task: str) -> None:
        self.handle, self.task = handle, task

    async def run(self, inputs: list[Any], params: Params, deadline: float) -> list[Row]:
        response = self.handle.run.remote(self.task, inputs, params, _left(deadline))
        try:
            rows = await response
        except asyncio.CancelledError:
            response.cancel()  # the model's work stops at its next token
            raise
        except Exception as exc:
            raise _cause(exc) from None
        return [Row(*row) for row in rows]

    async def stream(self, prompt: Any, params: Params, deadline: float) -> AsyncIterator[Event]:
        events = self.handle.options(stream=True).stream.remote(
            self.task, prompt, params, _left(deadline)
        )
        try:
            first = await anext(events)  # refusals arrive here: a normal 4xx
        except BaseException as exc:
            events.cancel()
            if isinstance(exc, Exception):
                raise _cause(exc) from None
            raise
        return _events(first, events)

    def close(self) -> None:
        """The model's replicas keep their weights: Ray scales them, not the ingress."""


def _cause(exc: Exception) -> Exception:
    """The model's own error (an `HFSkillsError`: a 4xx, a context-length refusal...) out of
    Ray's wrapper, so the ingress answers it as one process would; else Ray's error."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


async def _events(first: dict[str, Any], rest: Any) -> AsyncIterator[Event]:
    try:
        yield event_of(first)
        async for item in rest:
            yield event_of(item)
    except Exception as exc:
        raise _cause(exc) from None
    finally:
        rest.cancel()


def _left(deadline: float) -> float:
    """Seconds left before ``deadline`` (the event loop's clock), at least a moment."""
    left = deadline - asyncio.get_running_loop().time()
    return max(left, 0.001) if left != float("inf") else 1e9


async def connect(
    model: ServedModel, task: str, app_name: str, executor: Executor
) -> tuple[Endpoint, None, RayWorker]:
    """A model on its own deployment: the ingress's endpoint (the processor only; no weights
    here) and worker, once the model's replica has loaded it. Call on the event loop."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment_name(model.name), app_name=app_name)
    started = time.perf_counter()
    try:
        where = await handle.load.remote(task)
    except Exception as exc:
        raise _cause(exc) from None
    skill = model.skill.cls
    ckpt = checkpoints.resolve(model.location, model.options.get("gguf_file"))
    loop = asyncio.get_running_loop()
    processor = await loop.run_in_executor(
        executor, torch_backend.load_processor, skill.processors[task], ckpt
    )
    endpoint = Endpoint(
        model=None,
        processor=processor,
        task=task,
        hardware=HARDWARE,
        device=f"{where['hardware']}:{where['device']}",
        dtype=where["dtype"],
        model_id=model.name,
        skill=model.skill.name,
        memory_bytes=0,  # on the model's replicas, under their own budget
    )
    endpoint.settings.update(ray=where, ray_connect_s=round(time.perf_counter() - started, 1))
    return endpoint, None, RayWorker(handle, task)

"""Loading models on demand into an LRU cache bounded by a memory budget.

- First request loads (in a worker thread); concurrent requests for a model that is loading
  wait for that same load (single-flight).
- After a load, least recently used endpoints are evicted until the cache fits the budget;
  pinned models are never evicted. An endpoint still serving a request is closed only when
  its last request finishes.
- A failed load fails the requests waiting on it with `ModelLoadError` (503) and is retried
  on the next request; other models keep serving.
- A loaded model gets its worker (`workers.create`: a generation engine or a dynamic batcher),
  and what the load created leaves the garbage collector's sight (`freeze_heap`).
- With ``on_demand_models``, a name that is in no catalog entry but is a local checkpoint path
  or a cached hub id is added to the catalog first (`admit`, once per name, in a worker
  thread), then loads like any model, under the same budget.
- A remote model (the registry's provider ``openai``, host/control/remote.py) "loads" as a
  client to its server: no weights, no memory, never evicted. When the catalog replaces or
  drops models (`Catalog.generation`), the next request first unloads what it held of them.
- On Ray Serve with a deployment per model, a model of ``ray_models`` "loads" as its
  deployment's handle (host/ray_models.py): its weights and memory are on its own replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hfskills.skillset.runtime import Endpoint, Handler
from hfskills.skillset.runtime.errors import HFSkillsError, ModelLoadError, UnsupportedTask

from . import tracing, workers
from .catalog import Catalog, ServedModel
from .control import remote
from .control.gate import Gate
from .metrics import Metrics

log = logging.getLogger("hfskills.host")


def freeze_heap() -> None:
    """Move what exists now (modules, the app, loaded models) out of the garbage collector's
    sight. A full collection walks every tracked object: with a few hundred thousand
    long-lived ones it paused serving ~100 ms at a time (measured: p99 122 -> 17 ms)."""
    gc.collect()
    gc.freeze()


#: Seconds between closing a model and the collection that frees it (`_release_soon`).
RELEASE_DELAY_S = 0.5


def release_memory() -> None:
    """Free what closing a model left: a full collection, the frozen objects included, then
    glibc's ``malloc_trim`` (freed heap pages back to the system; absent elsewhere); the
    survivors are frozen again. A closed model sits in reference cycles among the frozen
    objects: without the unfreeze it is never freed (measured, all-MiniLM-L6-v2, 91 MB
    resident: RSS freed 2.5 MB without, 57 MB with). The price is one full collection holding
    the GIL (0.25-0.6 s on 2 shared cores), once per model closed: an eviction, an unload or
    a switch, never a request."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Loaded:
    model: ServedModel
    task: str
    endpoint: Endpoint
    handler: Handler | None  # None: a remote model
    #: How its requests run: a generation engine or a dynamic batcher (workers.py), or a
    #: remote model's client (control/remote.py).
    worker: workers.Worker | remote.RemoteWorker
    loaded_at: float = field(default_factory=time.time)
    active: int = 0
    evicted: bool = False

    def close(self) -> None:
        self.worker.close()
        self.endpoint.close()  # closes the endpoint's own engine (GenAI, vLLM)

    @property
    def key(self) -> tuple[str, str]:
        return (self.model.name, self.task)


class ModelLoader:
    def __init__(
        self,
        catalog: Catalog,
        load: Callable[[ServedModel, str], Endpoint],
        executor: Executor,
        metrics: Metrics,
        budget_bytes: int,
        policy: workers.Policy | None = None,
    ) -> None:
        self.catalog, self._load, self.executor = catalog, load, executor
        self.metrics, self.budget = metrics, budget_bytes
        self.policy = policy or workers.Policy()
        self.cache: OrderedDict[tuple[str, str], Loaded] = OrderedDict()
        self.loading: dict[tuple[str, str], asyncio.Future[Loaded]] = {}
        self.admitting: dict[str, asyncio.Future[None]] = {}
        self.hits = self.misses = 0
        self._release_pending = False
        self.generation = catalog.generation  # the catalog this cache was filled from
        #: The registry's gate (host/control/gate.py): refuses a retired model, notes a
        #: deprecated one; one dict lookup per request.
        self.gate: Gate | None = None
        #: On Ray Serve with a deployment per model (host/ray_models.py): the application's
        #: name and the models whose weights are on their own deployments, not here.
        self.ray_app: str | None = None
        self.ray_models: frozenset[str] = frozenset()

    def resolve(self, name: str, task: str | None = None) -> tuple[ServedModel, str]:
        """The model behind a name or alias, and the task (default: its first)."""
        model = self.catalog.get(name)
        if model is None:
            hint = ""
            if self.catalog.on_demand is None and name.startswith(("/", ".", "~")):
                hint = " (a local checkpoint path is served only with on_demand_models on)"
            raise UnknownModel(
                f"model {name!r} does not exist; GET /v1/models lists the models{hint}",
                param="model",
            )
        if self.gate is not None:
            self.gate.check(model.name)
        task = task or model.tasks[0]
        if task not in model.tasks:
            raise UnsupportedTask(
                f"model {model.name!r} does not serve {task}; it serves {list(model.tasks)}",
                param="model",
            )
        return model, task

    async def admit(self, name: str) -> None:
        """With ``on_demand_models``: make a name that no entry serves known when it is a local
        checkpoint path or a cached hub id (resolved once, in a worker thread: it reads files
        and may generate a skill). Names that are no checkpoint stay unknown (404 later).
        First, when the catalog replaced or dropped models, what the cache held of them goes."""
        if self.generation != self.catalog.generation:
            await self._drop_replaced()
        if self.catalog.on_demand is None or self.catalog.get(name) is not None:
            return
        if name not in self.admitting:
            self.admitting[name] = asyncio.ensure_future(self._admit(name))
        await asyncio.shield(self.admitting[name])

    async def _admit(self, name: str) -> None:
        resolve = self.catalog.on_demand
        assert resolve is not None
        try:
            model = await tracing.in_thread(self.executor, resolve, name)
            if model is not None and self.catalog.get(name) is None:
                self.catalog.add(model)
                log.info(
                    "serving %s on demand (%s: %s) from %s%s",
                    model.name,
                    model.skill.name,
                    ", ".join(model.tasks),
                    model.location,
                    model.skill.note,
                )
        except HFSkillsError as exc:
            raise UnknownModel(exc.message, param="model") from None
        finally:
            self.admitting.pop(name, None)

    @contextlib.asynccontextmanager
    async def use(self, name: str, task: str | None = None) -> AsyncIterator[Loaded]:
        """Hold a loaded endpoint for the duration of one request."""
        loaded = await self.get(name, task)
        loaded.active += 1
        try:
            yield loaded
        finally:
            loaded.active -= 1
            if loaded.evicted and loaded.active == 0:
                await self._close(loaded)

    async def get(self, name: str, task: str | None = None) -> Loaded:
        await self.admit(name)
        model, task = self.resolve(name, task)
        key = (model.name, task)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.hits += 1
            self._update_ratio()
            return self.cache[key]
        self.misses += 1
        self._update_ratio()
        # a request that finds its model absent waits in a "load" span (the load's log lines
        # carry the trace of the request that started it)
        with tracing.span("load", model=model.name, task=task, joined=key in self.loading):
            if key not in self.loading:
                future: asyncio.Future[Loaded] = asyncio.get_running_loop().create_future()
                self.loading[key] = future
                asyncio.get_running_loop().create_task(self._load_into(model, task, future))
            return await asyncio.shield(self.loading[key])

    async def _drop_replaced(self) -> None:
        """Unload what the catalog replaced or no longer holds (remote models)."""
        self.generation = self.catalog.generation
        for key, item in list(self.cache.items()):
            if self.catalog.models.get(key[0]) is not item.model:
                await self.unload_key(key, reason="catalog")

    def is_loading(self, name: str) -> bool:
        return any(key[0] == name for key in self.loading)

    async def _load_into(
        self, model: ServedModel, task: str, future: asyncio.Future[Loaded]
    ) -> None:
        key = (model.name, task)
        start = time.perf_counter()
        try:
            if model.remote is not None:  # a client to its server (control/remote.py)
                endpoint, handler, worker = remote.connect(model, task)
            elif model.name in self.ray_models:  # its own Ray Serve deployment
                from . import ray_models

                assert self.ray_app is not None
                endpoint, handler, worker = await ray_models.connect(
                    model, task, self.ray_app, self.executor
                )
            else:
                endpoint = await tracing.in_thread(self.executor, self._load, model, task)
                handler = model.skill.cls().handler(endpoint)
                worker = workers.create(
                    endpoint, handler, model.skill.cls.family, self.executor, self.policy
                )
        except HFSkillsError as exc:
            self.metrics.loads.labels(model=model.name, status="failed").inc()
            log.error("load of %s/%s failed: %s", model.name, task, exc.message)
            future.set_exception(
                ModelLoadError(f"model {model.name!r} failed to load: {exc.message}")
            )
        except Exception as exc:  # a broken checkpoint or skill: the request gets a clear 503
            self.metrics.loads.labels(model=model.name, status="failed").inc()
            log.exception("load of %s/%s failed", model.name, task)
            future.set_exception(ModelLoadError(f"model {model.name!r} failed to load: {exc}"))
        else:
            loaded = Loaded(model, task, endpoint, handler, worker)
            freeze_heap()
            self.cache[key] = loaded
            self.metrics.loads.labels(model=model.name, status="ok").inc()
            log.info(
                "loaded %s/%s on %s in %.1f s (%.1f MiB)",
                model.name,
                task,
                endpoint.hardware,
                time.perf_counter() - start,
                endpoint.memory_bytes / 2**20,
            )
            await self._evict_to_fit(keep=key)
            self._update_memory()
            future.set_result(loaded)
        finally:
            self.loading.pop(key, None)
            if future.done() and future.exception() is not None:
                future.exception()  # retrieved: no "exception never retrieved" warning

    def used_bytes(self) -> int:
        return sum(item.endpoint.memory_bytes for item in self.cache.values())

    async def _evict_to_fit(self, keep: tuple[str, str]) -> None:
        for key in list(self.cache):
            if self.used_bytes() <= self.budget:
                return
            item = self.cache[key]
            if key == keep or item.model.pinned or item.model.remote is not None:
                continue
            await self.unload_key(key, reason="memory budget")
        if self.used_bytes() > self.budget:
            log.warning(
                "cache holds %d B over its budget of %d B (pinned or the newest model)",
                self.used_bytes(),
                self.budget,
            )

    async def unload_key(self, key: tuple[str, str], reason: str = "admin") -> bool:
        item = self.cache.pop(key, None)
        if item is None:
            return False
        item.evicted = True
        self.metrics.evictions.labels(model=item.model.name, reason=reason).inc()
        log.info("evicted %s/%s (%s)", *key, reason)
        if item.active == 0:
            await self._close(item)
        self._update_memory()
        return True

    async def unload(self, name: str) -> int:
        model, _ = self.resolve(name)
        keys = [k for k in self.cache if k[0] == model.name]
        for key in keys:
            await self.unload_key(key)
        return len(keys)

    async def _close(self, item: Loaded) -> None:
        await tracing.in_thread(self.executor, item.close)
        if item.model.remote is None:  # a remote model is a client: nothing much to free
            self._release_soon()

    def _release_soon(self) -> None:
        """`release_memory` once the closed model is garbage: ``RELEASE_DELAY_S`` later, when
        the frames that closed it (an eviction inside another model's load) have returned; a
        collection while they still held it would freeze it again, for good."""
        if self._release_pending:
            return
        self._release_pending = True
        loop = asyncio.get_running_loop()

        def release() -> None:
            self._release_pending = False
            loop.run_in_executor(self.executor, release_memory)

        loop.call_later(RELEASE_DELAY_S, release)

    async def release(self) -> None:
        """Free closed models' memory now (`release_memory`, in a worker thread)."""
        await asyncio.get_running_loop().run_in_executor(self.executor, release_memory)

    def resident(self) -> list[dict[str, Any]]:
        return [
            {
                "model": item.model.name,
                "task": item.task,
                "hardware": item.endpoint.hardware,
                "device": item.endpoint.device,
                "dtype": item.endpoint.dtype,
                "memory_bytes": item.endpoint.memory_bytes,
                "pinned": item.model.pinned,
                "on_demand": item.model.on_demand,
                "active_requests": item.active,
                "loaded_at": int(item.loaded_at),
            }
            for item in reversed(self.cache.values())  # most recently used first
        ]

    def _update_ratio(self) -> None:
        total = self.hits + self.misses
        self.metrics.cache_hit_ratio.set(self.hits / total if total else 0.0)

    def _update_memory(self) -> None:
        per_hw: dict[str, int] = {}
        for item in self.cache.values():
            per_hw[item.endpoint.hardware] = (
                per_hw.get(item.endpoint.hardware, 0) + item.endpoint.memory_bytes
            )
        for hw in {*per_hw, "cpu"}:
            self.metrics.memory.labels(hardware=hw).set(per_hw.get(hw, 0))


class UnknownModel(HFSkillsError):
    code = "model_not_found"
    status = 404

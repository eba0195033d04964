"""Switching a route to another registered version of its model, at run time
(``POST /model/switch/{version}``; docs/control-plane.md#switching-versions).

The policy, step by step (each step measured and reported in a `SwitchOut`):

1. **Resolve.** The route (404 ``route_not_found``); the model whose version switches (the
   body's ``model_id``, else the one model the route's targets are versions of: 400 when they
   are versions of several, 409 when the route targets no version of the one given); the
   catalog entry registered as ``model_id@version`` (404 ``model_not_found`` when no such
   version is registered, 404 ``model_not_served`` when this host's catalog does not serve it;
   409 when it is retired or deprecated, or when it already is the route's only version).
2. **Load and warm.** The loader loads the new version (for the tasks the old one has resident,
   else its first task) and one small real inference runs through its worker (a one-token
   generation, a one-input embedding...). A failure answers 424 ``switch_failed`` with the
   load's first line and leaves the route unchanged; a version loaded only for this switch is
   unloaded again.
3. **Swap.** The route is written (`RouteStore.put`, audited as ``route.switch`` with the
   caller as actor): the route's targets that are versions of the model become one target,
   ``model_id@version``, at their summed weight in the first one's place; fallbacks and the
   challenger stay. The router's snapshot swap inside that write is the atomic step: a request
   routed before it runs on the old version, every request routed after it on the new one.
4. **Drain.** Wait until the old version's requests have ended (those holding or waiting for
   its scheduler slot, and those holding it in the loader), at most ``switch_drain_timeout_s``.
5. **Unload.** The old version leaves the model cache, unless it is pinned or another route
   still targets it (or has it as challenger); still busy past the drain timeout, it closes when
   its last request ends. Freed memory is measured, not estimated: the loader's resident bytes
   and the process's RSS (psutil when installed, else ``/proc/self/statm``) before and after,
   the RSS after the loader closed it (`loader.release_memory`: a full garbage collection,
   frozen objects included, and glibc's ``malloc_trim``, so that freed heap goes back to the
   system).

One switch at a time per route (a second answers 409). Once the route has changed, the drain
and the unload run to their end even when the client goes away. The old version stays in the
catalog: a request that names it directly loads it again (retire it to stop that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from hfskills.skillset.runtime.errors import HFSkillsError, first_line
from hfskills.skillset.runtime.generation import GenerationParams

from ..protocol.routes import RouteBody, RouteTarget, TargetOut
from ..protocol.switch import SwitchOut
from .registry import Conflict, Invalid
from .routes import RouteNotFound

if TYPE_CHECKING:
    from ..loader import ModelLoader
    from ..scheduler import Scheduler
    from ..workers import Params
    from . import ControlPlane

log = logging.getLogger("hfskills.host")

#: The audit action of a route written by a switch.
ACTION = "route.switch"
#: How often the drain looks at the old version's requests (seconds).
POLL_S = 0.01


class SwitchFailed(HFSkillsError):
    """The new version did not load or did not answer its warm-up; the route is unchanged."""

    code = "switch_failed"
    status = 424


class NotServed(HFSkillsError):
    code = "model_not_served"
    status = 404


def warm_input(task: str) -> tuple[Any, Params] | None:
    """One small real input and its parameters for ``task``'s warm-up (None: none known, the
    version is loaded but not warmed)."""
    if task in ("text_generation", "text2text_generation"):
        return "Hello", GenerationParams(max_new_tokens=1)
    if task in ("text_embedding", "text_classification", "token_classification"):
        return "hello", {}
    if task == "question_answering":
        return {"question": "Who answered?", "context": "Ann answered."}, {}
    return None


def rss_bytes() -> tuple[int | None, str | None]:
    """The process's resident set size and where it was read (None: not measurable here)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return int(psutil.Process().memory_info().rss), "psutil"
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE"), "/proc/self/statm"
    except (OSError, ValueError, IndexError):
        return None, None


@dataclass
class Switcher:
    control: ControlPlane
    loader: ModelLoader
    scheduler: Scheduler
    drain_timeout_s: float
    request_timeout_s: float
    #: Routes being switched now.
    busy: set[str] = field(default_factory=set)

    async def switch(self, route: str, version: str, model_id: str | None, actor: str) -> SwitchOut:
        if route in self.busy:
            raise Conflict(f"route {route!r} is being switched already; try again", param="route")
        self.busy.add(route)
        try:
            return await self._switch(route, version, model_id, actor)
        finally:
            self.busy.discard(route)

    async def _switch(
        self, route: str, version: str, model_id: str | None, actor: str
    ) -> SwitchOut:
        started = time.perf_counter()
        registry, store = self.control.registry, self.control.routes
        try:
            current = await run_in_threadpool(store.get, route)
        except RouteNotFound as error:  # 404, about the body's field
            raise RouteNotFound(error.message, param="route") from None
        served = [store.resolve(t.model) for t in current.targets]
        ids = [registry.ids.get(s, s) if s is not None else None for s in served]
        targeted = sorted({i for i in ids if i is not None})
        if model_id is None:
            if len(targeted) != 1:
                raise Invalid(
                    f"route {route!r} targets versions of the models {targeted}; give "
                    "model_id: the one whose version switches",
                    param="model_id",
                )
            model_id = targeted[0]
        elif model_id not in targeted:
            raise Conflict(
                f"route {route!r} targets no version of model {model_id!r} (it targets "
                f"{targeted}); PUT /api/routes/{route} changes its targets",
                param="model_id",
            )
        new = await self._served(model_id, version)
        old = [s for s, i in zip(served, ids, strict=True) if i == model_id and s != new]
        old = [s for s in dict.fromkeys(old) if s is not None]
        if not old:
            raise Conflict(
                f"route {route!r} already sends model {model_id!r} to version {version} only",
                param="version",
            )
        tasks = self._tasks(new, old)

        # 2. load and warm: nothing has changed yet, a failure leaves the route as it was
        resident = {key for key in self.loader.cache if key[0] == new}
        already = {(new, task) for task in tasks} <= resident
        load_start = time.perf_counter()
        try:
            for task in tasks:
                await self.loader.get(new, task)
            loaded_ms = _ms(load_start)
            warm_start = time.perf_counter()
            warmed = [await self._warm(new, task) for task in tasks]
            warmed_ms = _ms(warm_start) if any(warmed) else None
        except HFSkillsError as error:
            await self._unload_new(new, resident)
            raise SwitchFailed(
                f"switch of route {route!r} to {model_id}@{version} ({new!r}) failed: "
                f"{first_line(error)}; the route is unchanged",
                param="version",
            ) from None

        # 3. the swap: one write; the router's snapshot is replaced whole inside it
        body = RouteBody(
            targets=_switched(current.targets, ids, model_id, f"{model_id}@{version}"),
            fallbacks=current.fallbacks,
            challenger=current.challenger,
        )
        try:
            after, _ = await run_in_threadpool(store.put, route, body, actor, "api", ACTION)
        except HFSkillsError:  # e.g. the database is unreachable: the route is unchanged
            await self._unload_new(new, resident)
            raise
        swapped = time.perf_counter()
        log.info(
            "route %s switched: model %s %s -> %s@%s (%s) by %s",
            route,
            model_id,
            [f"{model_id}@{registry.served.get(s)}" for s in old],
            model_id,
            version,
            new,
            actor,
        )
        # 4-5. drain and unload, to the end even if the client leaves
        finish = asyncio.ensure_future(self._retire(old, swapped))
        report = await asyncio.shield(finish)
        return SwitchOut(
            route=route,
            model_id=model_id,
            from_=[f"{model_id}@{registry.served.get(s)}" for s in old],
            to=f"{model_id}@{version}",
            served=new,
            targets=[TargetOut(**t.model_dump()) for t in after.targets],
            already_loaded=already,
            loaded_ms=loaded_ms,
            warmed=any(warmed),
            warmed_ms=warmed_ms,
            total_ms=_ms(started),
            **report,
        )

    async def _unload_new(self, new: str, resident: set[tuple[str, str]]) -> None:
        """A switch that failed before the swap unloads what it loaded for itself."""
        for key in [k for k in self.loader.cache if k[0] == new and k not in resident]:
            await self.loader.unload_key(key, reason="switch")

    async def _served(self, model_id: str, version: str) -> str:
        """The served name registered as ``model_id@version``, refused when it cannot be a
        route's target."""
        registry = self.control.registry
        new = registry.keys.get((model_id, version))
        if new is None:
            await run_in_threadpool(registry.get, model_id, version)  # 404 model_not_found
            raise NotServed(
                f"model {model_id!r} version {version} is registered, but this host's catalog "
                "does not serve it (a [[models]] entry with this model_id and version serves it)",
                param="version",
            )
        status = registry.gate.status(new)
        if status is not None:
            raise Conflict(
                f"model {model_id!r} version {version} ({new!r}) is {status}; a route never "
                f"sends requests to a {status} version",
                param="version",
            )
        return new

    def _tasks(self, new: str, old: list[str]) -> list[str]:
        """The new version's tasks to load: those the old versions have resident, else the
        model's first."""
        model = self.loader.catalog.models[new]
        used = [task for name, task in self.loader.cache if name in old]
        tasks = [task for task in dict.fromkeys(used) if task in model.tasks]
        return tasks or [model.tasks[0]]

    async def _warm(self, name: str, task: str) -> bool:
        """One small real inference through the loaded worker (False: no warm-up input is
        known for the task)."""
        given = warm_input(task)
        if given is None:
            log.info("switch: %s/%s loaded; no warm-up input for %s", name, task, task)
            return False
        item, params = given
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        async with self.loader.use(name, task) as loaded:
            try:
                await loaded.worker.run([item], params, deadline)
            except HFSkillsError:
                raise
            except Exception as error:  # the model's own failure: the switch's error
                raise SwitchFailed(f"its warm-up failed: {first_line(error)}") from error
        return True

    def in_flight(self, name: str) -> int:
        """Requests on a served model now: holding or waiting for its scheduler slot, or
        holding it in the loader."""
        gate = self.scheduler.gates.get(name)
        queued = gate.active + len(gate.waiters) if gate is not None else 0
        held = sum(item.active for key, item in self.loader.cache.items() if key[0] == name)
        return max(queued, held)

    def _kept(self, name: str) -> str | None:
        """Why an old version stays loaded (None: it is unloaded)."""
        model = self.loader.catalog.models.get(name)
        if model is not None and model.pinned:
            return "pinned"
        router = self.control.router
        for route in router.names():
            plan = router.get(route)
            if plan is not None and (name in plan.targets or name == plan.challenger):
                return f"route {route!r} still targets it"
        return None

    async def _retire(self, old: list[str], swapped: float) -> dict[str, Any]:
        """Drain the old versions' requests, unload them, and measure what that freed
        (``swapped``: when the route changed, `time.perf_counter`)."""
        await asyncio.sleep(0)  # requests routed just before the swap reach their slot
        at_swap = sum(self.in_flight(name) for name in old)
        deadline = time.perf_counter() + self.drain_timeout_s
        while any(self.in_flight(n) for n in old) and time.perf_counter() < deadline:
            await asyncio.sleep(POLL_S)
        drained_ms = _ms(swapped)
        drained = not any(self.in_flight(n) for n in old)
        kept = {name: why for name in old if (why := self._kept(name)) is not None}
        unload_start = time.perf_counter()
        resident_before = self.loader.used_bytes()
        rss_before, source = rss_bytes()
        unloaded = []
        for name in old:
            if name in kept:
                continue
            keys = [key for key in self.loader.cache if key[0] == name]
            for key in keys:
                await self.loader.unload_key(key, reason="switch")
            if keys:
                unloaded.append(name)
        if unloaded:
            await self.loader.release()  # now, to measure what was freed
        resident_after = self.loader.used_bytes()
        rss_after, _ = rss_bytes()
        return {
            "in_flight_at_swap": at_swap,
            "drained": drained,
            "drained_ms": drained_ms,
            "unloaded": unloaded,
            "kept": kept,
            "resident_bytes_before": resident_before,
            "resident_bytes_after": resident_after,
            "freed_resident_bytes": resident_before - resident_after,
            "rss_bytes_before": rss_before,
            "rss_bytes_after": rss_after,
            "freed_rss_bytes": (
                rss_before - rss_after if rss_before is not None and rss_after is not None else None
            ),
            "rss_source": source,
            "unload_ms": _ms(unload_start),
        }


def _switched(
    targets: list[TargetOut], ids: list[str | None], model_id: str, new: str
) -> list[RouteTarget]:
    """The route's targets with every version of ``model_id`` replaced by ``new``, at their
    summed weight in the first one's place."""
    weight = sum(t.weight for t, i in zip(targets, ids, strict=True) if i == model_id)
    out: list[RouteTarget] = []
    for target, model in zip(targets, ids, strict=True):
        if model != model_id:
            out.append(RouteTarget(model=target.model, weight=target.weight))
        elif not any(t.model == new for t in out):
            out.append(RouteTarget(model=new, weight=weight))
    return out


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)

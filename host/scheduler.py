"""Admission control: priority queues, bounded waits, and concurrency limits.

Each model has a gate: at most ``max_concurrency_per_model`` requests run (the batchers
then form batches from them), and at most ``max_queue_per_model`` wait, served by priority
(``X-Priority: high | normal | low``) then arrival. A full queue answers 429 (503 while the
model is still loading), both with ``Retry-After``; a request still waiting at its deadline
(``X-Request-Timeout`` or ``request_timeout_s``, which bound the whole request) answers 503.
A global gate bounds all models together; because every model's own limit is lower, one
slow model cannot take every slot. ``queue_depth{priority}`` counts the waiting requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hfskills.skillset.runtime.errors import HFSkillsError

from . import tracing
from .metrics import Metrics

PRIORITIES = ("high", "normal", "low")


class Overloaded(HFSkillsError):
    code = "overloaded"
    status = 429


class Busy(HFSkillsError):
    """Waiting is pointless now: the queue is full while the model loads, or the wait ran out."""

    code = "unavailable"
    status = 503


@dataclass(frozen=True)
class RequestContext:
    """What a request brings to the core: its priority, its deadline (the event loop's clock;
    it bounds queueing and execution together), and an awaitable that completes when its
    client goes away (None: never watched). ``user`` and ``draw`` place it on a route
    (host/control/routing.py): a known user keeps their arm; an anonymous request uses its
    own uniform ``draw``, one for all the runs it makes."""

    priority: str = "normal"
    timeout_s: float = 300.0
    deadline: float = float("inf")
    disconnected: Callable[[], Awaitable[Any]] | None = None
    user: str | None = None
    draw: float = field(default_factory=random.random)
    #: ``model: "auto"``'s strategy (``X-HFSkills-Strategy``; None: balanced), and its own
    #: (quality, cost, latency) weights (``X-HFSkills-Weights``; None: the strategy's).
    strategy: str | None = None
    weights: tuple[float, float, float] | None = None
    #: Who asked: ``client``; the host's own ``shadow`` copies and ``bench`` runs are never
    #: billed nor counted as traffic (host/control/calls.py).
    origin: str = "client"
    #: The route whose target this run is (set by the core while it tries a route's targets).
    route: str | None = None
    #: Who per-key limits count (host/limits.py's `caller_id`; None: anonymous), and the
    #: response cache's use (``Cache-Control``, host/cache.py): ``use``, ``refresh``
    #: (no-cache: no lookup, the answer is stored) or ``off`` (no-store).
    caller: str | None = None
    cache: str = "use"

    @classmethod
    def start(
        cls,
        priority: str = "normal",
        timeout_s: float = 300.0,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
        user: str | None = None,
        strategy: str | None = None,
        origin: str = "client",
        weights: tuple[float, float, float] | None = None,
    ) -> RequestContext:
        """A context whose deadline is ``timeout_s`` from now (call on the event loop)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        return cls(
            priority,
            timeout_s,
            deadline,
            disconnected,
            user,
            strategy=strategy,
            origin=origin,
            weights=weights,
        )

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


class Gate:
    """At most ``limit`` holders; up to ``max_queue`` waiters, by (priority, arrival)."""

    def __init__(self, limit: int, max_queue: int, on_wait: Callable[[str, int], None]) -> None:
        self.limit, self.max_queue, self.on_wait = limit, max_queue, on_wait
        self.active = 0
        self.waiters: list[tuple[int, int, asyncio.Future[None], str]] = []
        self._order = itertools.count()

    async def acquire(self, ctx: RequestContext, full: Callable[[], HFSkillsError]) -> None:
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return
        if len(self.waiters) >= self.max_queue:
            raise full()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (PRIORITIES.index(ctx.priority), next(self._order), future, ctx.priority)
        heapq.heappush(self.waiters, entry)
        self.on_wait(ctx.priority, +1)
        try:
            await asyncio.wait_for(asyncio.shield(future), ctx.remaining())
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we gave up: pass the slot on
            else:
                future.cancel()
                self.waiters.remove(entry)
                heapq.heapify(self.waiters)
                self.on_wait(ctx.priority, -1)
            if isinstance(exc, TimeoutError):
                raise Busy(f"waited {ctx.timeout_s:g} s for a free slot; try again later") from None
            raise

    def release(self) -> None:
        self.active -= 1
        while self.waiters:
            _, _, future, priority = heapq.heappop(self.waiters)
            self.on_wait(priority, -1)
            if not future.done():
                self.active += 1
                future.set_result(None)
                return


class Scheduler:
    def __init__(
        self, metrics: Metrics, *, max_concurrency: int, per_model: int, max_queue: int
    ) -> None:
        self.metrics, self.per_model, self.max_queue = metrics, per_model, max_queue
        self.waiting = dict.fromkeys(PRIORITIES, 0)
        self.global_gate = Gate(max_concurrency, 1_000_000, self._count)
        self.gates: dict[str, Gate] = {}

    def _count(self, priority: str, delta: int) -> None:
        self.waiting[priority] += delta
        self.metrics.queue_depth.labels(priority=priority).set(self.waiting[priority])

    @contextlib.asynccontextmanager
    async def slot(
        self, model: str, ctx: RequestContext, loading: Callable[[], bool]
    ) -> AsyncIterator[None]:
        """Hold one of ``model``'s slots (and a global one) for the request's duration."""
        gate = self.gates.setdefault(model, Gate(self.per_model, self.max_queue, self._count))

        def full() -> HFSkillsError:
            if loading():
                return Busy(f"model {model!r} is loading and its queue is full; try again shortly")
            return Overloaded(
                f"model {model!r} is at capacity ({gate.limit} running, "
                f"{len(gate.waiters)} waiting); try again shortly"
            )

        with tracing.span("queue", model=model, priority=ctx.priority):  # the wait for slots
            await gate.acquire(ctx, full)
            try:
                await self.global_gate.acquire(ctx, full)
            except BaseException:
                gate.release()
                raise
        try:
            yield
        finally:
            self.global_gate.release()
            gate.release()

"""The request core: admission, the model, its worker, the deadline, the client, the log line.

`run` and `open_stream` are the only ways a request reaches a model. Each takes a slot from
the `Scheduler` (priority queue, limits), holds its model from the `ModelLoader` (loading it on
first use), and hands the inputs to the model's worker (`workers.py`: a generation engine or a
dynamic batcher). Every request ends: by its deadline (`RequestContext.deadline`, from
``request_timeout_s`` or ``X-Request-Timeout``; the work is cancelled and the client gets 504),
or when its client goes away (a non-streaming request is watched for the disconnect and its
work cancelled at the next token; a stream stops when its consumer leaves). A model's own
failure answers 424 with its first line. Each request writes one JSON log line and its metrics,
with the status ``ok``, ``error``, ``timeout`` or ``cancelled``.

A request whose model names a route (host/control/routing.py) runs on the target the router
chooses from its in-memory snapshot; a target that fails (load error, 424, 5xx) is counted
and the next candidate tried (`_routed`). Whoever answers is noted for the
``X-HFSkills-Model`` and ``X-HFSkills-Route`` headers (host/control/answer.py). A route's
challenger gets a copy of a sampled share of its requests after the answer (`_shadow`; a
stream's copy once the stream has ended). A client's request passes the safety pipeline's
hooks (host/safety): its inputs before routing (`Guard.pre`), its answer after (`Guard.post`),
a stream's text as it flows (`Guard.during`).

Around each model call (`_run`, `_open`): a client's per-request limits (limits.py: input size,
max tokens; the model's rates), the model's circuit breaker (breakers.py: 503 at once while it
is open; a route treats an open target as a failing one), and the response cache (cache.py: a
deterministic call answered again without the model, never billed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hfskills.skillset.runtime.errors import HFSkillsError, InferenceError, first_line
from hfskills.skillset.runtime.generation import (
    Event,
    FinalEvent,
    GenerationParams,
    TokenEvent,
    generated_tokens,
)

from . import tracing
from .auth import check_model
from .breakers import Breakers, CircuitOpen, Ticket
from .cache import ResponseCache, cacheable
from .catalog import ServedModel
from .control import answer, shadow
from .control.calls import CLIENT, SHADOW, Call
from .control.ledger import Hold, Ledger
from .control.routing import Plan, Router
from .control.strategies import AUTO, Auto
from .errors import APIError, ClientGone, DeadlineExceeded
from .headers import note as note_header
from .limits import Limits
from .loader import Loaded, ModelLoader
from .metrics import Metrics
from .scheduler import RequestContext, Scheduler
from .workers import BatchWorker, Params

if TYPE_CHECKING:
    from .safety.pipeline import Guard, Safety

log = logging.getLogger("hfskills.requests")

T = TypeVar("T")


@dataclass
class Outcome:
    """What a request produced, for the route and for the log line."""

    results: list[Any]
    loaded: Loaded
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The route that chose the model, None when the request named the model.
    route: str | None = None
    #: Answered by the response cache (host/cache.py), not by the model.
    cached: bool = False
    #: The inputs the model got (the safety pipeline's ``pre`` stage may redact them).
    inputs: list[Any] | None = None

    def model_name(self, asked: str) -> str:
        """What the response's ``model`` says: the name asked for, or, when a route chose,
        the served model that answered."""
        return self.loaded.model.name if self.route is not None else asked


@dataclass
class Stream:
    """An opened token stream: iterate `events` exactly once."""

    loaded: Loaded
    events: AsyncIterator[Event]
    route: str | None = None
    #: The prompt the model got (the safety pipeline's ``pre`` stage may redact it).
    prompt: Any = None

    def model_name(self, asked: str) -> str:
        return self.loaded.model.name if self.route is not None else asked


R = TypeVar("R", Outcome, Stream)


class InferenceService:
    def __init__(
        self, loader: ModelLoader, metrics: Metrics, scheduler: Scheduler, max_inputs: int = 256
    ) -> None:
        self.loader, self.metrics, self.scheduler = loader, metrics, scheduler
        self.max_inputs = max_inputs
        #: The routes' in-memory snapshot and health (host/control/routing.py), and
        #: ``model: "auto"``'s ranking (host/control/strategies.py).
        self.router: Router | None = None
        self.auto: Auto | None = None
        #: Shadow traffic's records (host/control/shadow.py) and the copies running.
        self.shadows: shadow.ShadowRecords | None = None
        self._copies: set[asyncio.Task[None]] = set()
        #: Costs, budgets and events per call (host/control/ledger.py), and whoever else
        #: watches calls end (e.g. automatic benchmarking): each gets every `Call`.
        self.ledger: Ledger | None = None
        self.observers: list[Callable[[Call], None]] = []
        #: A client's limits (limits.py), each model's circuit breaker (breakers.py), the
        #: response cache (cache.py); None: off.
        self.limits: Limits | None = None
        self.breakers: Breakers | None = None
        self.cache: ResponseCache | None = None
        #: The safety pipeline's hooks (host/safety): a client's inputs before the model, a
        #: stream's text as it flows, an answer's text after; None: none configured.
        self.safety: Safety | None = None

    # -- the two entry points -----------------------------------------------------------------
    async def run(
        self,
        name: str,
        task: str | None,
        inputs: list[Any],
        params: Params,
        ctx: RequestContext,
    ) -> Outcome:
        """One request's inputs through the model (or the target its route chooses); results
        in input order."""
        check_model(name, self.loader.catalog.get(name))  # a key limited to models: 403
        guard = self._guard(name, task, ctx)
        if guard is not None:  # safety's pre stage: reject (400), or redact and continue
            inputs = await guard.pre(inputs)
        plan = self._routing(name, task, ctx)
        if plan is None:
            outcome = await self._run(name, task, inputs, params, ctx)
            return await self._checked(guard, inputs, outcome)
        started = time.perf_counter()
        outcome = await self._routed(plan, ctx, lambda t, c: self._run(t, task, inputs, params, c))
        if plan.challenger is not None and random.random() < plan.sample and not outcome.cached:
            elapsed = time.perf_counter() - started
            self._shadow(plan, outcome.results, elapsed, task, inputs, params, ctx)
        return await self._checked(guard, inputs, outcome)

    async def open_stream(
        self,
        name: str,
        task: str | None,
        prompt: Any,
        params: Params,
        ctx: RequestContext,
    ) -> Stream:
        """Admit, validate and start now (errors become a normal 4xx); stream tokens later.
        A route fails over while the stream opens, never once tokens flow."""
        check_model(name, self.loader.catalog.get(name))
        guard = self._guard(name, task, ctx)
        if guard is not None:
            prompt = (await guard.pre([prompt]))[0]
        plan = self._routing(name, task, ctx)
        if plan is None:
            return self._watched(guard, prompt, await self._open(name, task, prompt, params, ctx))
        started = time.perf_counter()
        stream = await self._routed(plan, ctx, lambda t, c: self._open(t, task, prompt, params, c))
        if plan.challenger is not None and random.random() < plan.sample:
            stream.events = self._copied_at_end(
                stream.events, plan, started, task, prompt, params, ctx
            )
        return self._watched(guard, prompt, stream)

    # -- how a request runs ---------------------------------------------------------------------
    def _guard(self, name: str, task: str | None, ctx: RequestContext) -> Guard | None:
        """The safety hooks on for this request (None: none, or not a client's request)."""
        return self.safety.guard(name, task, ctx) if self.safety is not None else None

    async def _checked(self, guard: Guard | None, inputs: list[Any], outcome: Outcome) -> Outcome:
        """Safety's post stage on the answer (reject, or redact)."""
        outcome.inputs = inputs
        return outcome if guard is None else await guard.post(outcome)

    def _watched(self, guard: Guard | None, prompt: Any, stream: Stream) -> Stream:
        """Safety's during stage on the stream's text (it may only stop it)."""
        stream.prompt = prompt
        if guard is not None:
            guard.during(stream)
        return stream

    def _routing(self, name: str, task: str | None, ctx: RequestContext) -> Plan | None:
        """`_plan`, in the request's "route" span."""
        with tracing.span("route", model=name) as routing:
            plan = self._plan(name, task, ctx)
            if plan is not None:
                routing.set_attribute("hfskills.route", plan.name)
            return plan

    def _plan(self, name: str, task: str | None, ctx: RequestContext) -> Plan | None:
        """The route ``name`` names, ``auto``'s ranking, or None: a model (from memory)."""
        if self.router is None:
            return None
        if name == AUTO and self.auto is not None and self.loader.catalog.get(name) is None:
            plan = self.auto.plan(task, ctx.strategy, ctx.weights)
            if plan is None:
                raise APIError(
                    404,
                    f"model 'auto': no active model here serves {task}",
                    code="model_not_found",
                    param="model",
                )
            return plan
        return self.router.get(name)

    async def _routed(
        self,
        plan: Plan,
        ctx: RequestContext,
        attempt: Callable[[str, RequestContext], Awaitable[R]],
    ) -> R:
        """The route's candidates in order (the user's arm, the fallbacks, the other arms)
        until one answers. A target's failure is counted (cooldowns) and the next is tried; a
        request's own error (4xx) answers at once, and a passed deadline ends the request."""
        assert self.router is not None
        failure: BaseException | None = None
        routed = dataclasses.replace(ctx, route=plan.name)
        for target in self.router.candidates(plan, ctx.user, ctx.draw):
            try:
                result = await attempt(target, routed)
            except DeadlineExceeded as error:
                self.router.failed(target, error)
                raise
            except (HFSkillsError, APIError) as error:
                if isinstance(error, ClientGone) or not (
                    error.status >= 500 or error.status == 424
                ):
                    raise
                if not isinstance(error, CircuitOpen):  # an open breaker is no new failure
                    self.router.failed(target, error)
                log.warning(
                    json.dumps(
                        {
                            "event": "route_failover",
                            "route": plan.name,
                            "target": target,
                            "status": error.status,
                            "error": error.message,
                        }
                    )
                )
                failure = error
                continue
            self.router.succeeded(target)
            result.route = plan.name
            answer.note(result.loaded.model.name, plan.name)
            return result
        assert failure is not None  # candidates() is never empty
        raise failure

    def _shadow(
        self,
        plan: Plan,
        champion: list[Any],
        champion_s: float,
        task: str | None,
        inputs: list[Any],
        params: Params,
        ctx: RequestContext,
    ) -> None:
        """Copy the request to the route's challenger in the background (control/shadow.py):
        after the answer, at low priority, compared and recorded, never answering."""
        challenger = plan.challenger
        assert challenger is not None and self.shadows is not None
        records = self.shadows
        records.copied(plan.name, challenger)

        async def copy() -> None:
            answer.forget()  # this task's notes never reach the champion's response
            shadow_ctx = RequestContext.start("low", ctx.timeout_s, origin=SHADOW)
            start = time.perf_counter()
            try:
                result = await self._run(challenger, task, inputs, params, shadow_ctx)
            except Exception as error:  # the challenger's failure is recorded, nothing more
                records.failed(plan.name, challenger, getattr(error, "message", str(error)))
                return
            same = shadow.agree(champion, result.results)
            records.compared(plan.name, challenger, same, champion_s, time.perf_counter() - start)

        running = asyncio.get_running_loop().create_task(copy())
        self._copies.add(running)  # held until done (the loop keeps weak references)
        running.add_done_callback(self._copies.discard)

    async def _copied_at_end(
        self,
        events: AsyncIterator[Event],
        plan: Plan,
        started: float,
        task: str | None,
        prompt: Any,
        params: Params,
        ctx: RequestContext,
    ) -> AsyncIterator[Event]:
        """A routed stream's events; once it has ended whole, its text is the champion's
        answer the challenger's copy is compared with (`_shadow`)."""
        try:
            async for event in events:
                yield event
                if isinstance(event, FinalEvent):
                    elapsed = time.perf_counter() - started
                    champion = [{"text": event.generated_text}]
                    self._shadow(plan, champion, elapsed, task, [prompt], params, ctx)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _run(
        self,
        name: str,
        task: str | None,
        inputs: list[Any],
        params: Params,
        ctx: RequestContext,
    ) -> Outcome:
        params = self._within_limits(inputs, self._adapter(name, params), ctx)
        keyed = self._cache_key(name, task, inputs, params, ctx)
        if keyed is not None and ctx.cache == "use":
            hit = self._cached(name, *keyed)
            if hit is not None:
                return hit
        ticket = self._admit_model(name, ctx)  # 503 while its breaker is open; its rates: 429
        start = time.perf_counter()
        hardware, status, usage = "none", "error", (0, 0)
        label = self.metric_name(name)
        hold: Hold | None = None
        failure: BaseException | None = None
        try:
            if len(inputs) > self.max_inputs:
                raise APIError(413, f"at most {self.max_inputs} inputs per request", param="inputs")

            async def work() -> Outcome:
                nonlocal hardware, label, hold
                await self.loader.admit(name)  # an on-demand model joins the catalog first
                label = self.metric_name(name)
                if self.ledger is not None:  # its price, its budget reserved (429 if over)
                    hold = self.ledger.plan(label, task, inputs, params, ctx)
                async with self._slot(name, ctx), self.loader.use(name, task) as loaded:
                    hardware = loaded.endpoint.hardware
                    if self.ledger is not None:
                        self.ledger.started(hold, hardware)
                    with (
                        self.metrics.request_running(label),
                        _as_inference_errors(loaded),
                        tracing.span(
                            _work(loaded), model=label, hardware=hardware, inputs=len(inputs)
                        ),
                    ):
                        rows = await loaded.worker.run(inputs, params, ctx.deadline)
                    answer.note(loaded.model.name)
                    return _outcome(loaded, rows)

            outcome = await _bounded(work(), ctx)
            usage = (outcome.prompt_tokens, outcome.completion_tokens)
            if outcome.completion_tokens:
                self.metrics.generated.labels(model=label).inc(outcome.completion_tokens)
            status = "ok"
            if keyed is not None and self.cache is not None:
                self.cache.put(keyed[0], outcome.results, usage)
            return outcome
        except DeadlineExceeded:
            status = "timeout"
            raise
        except (ClientGone, asyncio.CancelledError):
            status = "cancelled"
            raise
        except Exception as error:
            failure = error
            raise
        finally:
            if ticket is not None:
                ticket.end(status, failure)
            self._record(label, task, hardware, len(inputs), usage, start, status, ctx, hold)

    async def _open(
        self,
        name: str,
        task: str | None,
        prompt: Any,
        params: Params,
        ctx: RequestContext,
    ) -> Stream:
        params = self._within_limits([prompt], self._adapter(name, params), ctx)
        ticket = self._admit_model(name, ctx)  # 503 while its breaker is open; its rates: 429
        arrived = time.perf_counter()
        stack = contextlib.AsyncExitStack()
        hold: Hold | None = None
        generation: Any = tracing.NOOP  # the "engine" span, ended with the stream

        async def start() -> tuple[Loaded, AsyncIterator[Event]]:
            nonlocal hold, generation
            await self.loader.admit(name)
            if self.ledger is not None:
                hold = self.ledger.plan(self.metric_name(name), task, [prompt], params, ctx)
            await stack.enter_async_context(self._slot(name, ctx))
            loaded = await stack.enter_async_context(self.loader.use(name, task))
            stack.enter_context(self.metrics.request_running(loaded.model.name))
            if self.ledger is not None:
                self.ledger.started(hold, loaded.endpoint.hardware)
            generation = tracing.start(
                "engine", model=loaded.model.name, hardware=loaded.endpoint.hardware, stream=True
            )
            stack.callback(generation.end)
            with _as_inference_errors(loaded), tracing.current(generation):
                return loaded, await loaded.worker.stream(prompt, params, ctx.deadline)

        try:
            loaded, events = await _bounded(start(), ctx)
        except BaseException as error:
            await stack.aclose()
            status = "timeout" if isinstance(error, DeadlineExceeded) else "error"
            if ticket is not None:
                ticket.end(status, error)
            if hold is not None:  # the reservation is released, the failure recorded
                self._record(
                    self.metric_name(name), task, "none", 1, (0, 0), arrived, status, ctx, hold
                )
            raise
        if ticket is not None:  # the breaker hears how the stream ends
            events = _reported(events, ticket)
        answer.note(loaded.model.name)
        return Stream(loaded, self._events(loaded, events, stack, arrived, ctx, hold, generation))

    def _adapter(self, name: str, params: Params) -> Params:
        """A request that names a LoRA adapter runs its base model with that adapter; one that
        names it in its params (TGI's ``adapter_id``) must name one of its model's."""
        asked = params.adapter if isinstance(params, GenerationParams) else None
        if asked is not None:
            model = self.loader.catalog.get(name)
            have = sorted(model.adapters) if model is not None else []
            if asked not in have or self.loader.catalog.adapter(name) not in (None, asked):
                raise APIError(
                    422,
                    f"adapter_id: {name!r} has no LoRA adapter {asked!r}"
                    + (f"; its adapters: {have}" if have else " (it serves no adapters)"),
                    param="adapter_id",
                )
            return params
        adapter = self.loader.catalog.adapter(name)
        if adapter is None:
            return params
        if isinstance(params, GenerationParams):
            return params.model_copy(update={"adapter": adapter})
        return {**params, "adapter": adapter}

    def _slot(self, name: str, ctx: RequestContext) -> contextlib.AbstractAsyncContextManager[None]:
        model, _ = self.loader.resolve(name)
        return self.scheduler.slot(model.name, ctx, lambda: self.loader.is_loading(model.name))

    async def _events(
        self,
        loaded: Loaded,
        events: AsyncIterator[Event],
        stack: contextlib.AsyncExitStack,
        arrived: float,
        ctx: RequestContext,
        hold: Hold | None,
        generation: Any = tracing.NOOP,
    ) -> AsyncIterator[Event]:
        """The stream's events, with its metrics (tokens, time to first token, inter-token
        latency), its log line, and its slot and model released when it ends (and its
        ``engine`` span: one span for the whole stream, the first token an event in it)."""
        model = loaded.model.name
        status, generated, prompt_tokens = "cancelled", 0, 0
        last = arrived
        try:
            with _as_inference_errors(loaded):
                async for event in events:
                    if isinstance(event, TokenEvent):
                        now = time.perf_counter()
                        if generated == 0:
                            self.metrics.first_token(model, now - arrived)
                            generation.add_event("first_token")
                        else:
                            self.metrics.inter_token(model, now - last)
                        generated, last = generated + 1, now
                        self.metrics.generated.labels(model=model).inc()
                    else:
                        prompt_tokens, status = event.prompt_tokens, "ok"
                        if event.completion_tokens is not None:  # a remote's usage (no ids)
                            generated = event.completion_tokens
                    yield event
        except DeadlineExceeded:
            status = "timeout"
            raise
        except Exception:
            status = "error"
            raise
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            generation.set_attribute("hfskills.completion_tokens", generated)
            generation.set_attribute("hfskills.status", status)
            await stack.aclose()
            self._record(
                model,
                loaded.task,
                loaded.endpoint.hardware,
                1,
                (prompt_tokens, generated),
                arrived,
                status,
                ctx,
                hold,
            )

    # -- around a model call: limits, breakers, the response cache ------------------------------
    def _within_limits(self, inputs: list[Any], params: Params, ctx: RequestContext) -> Params:
        """A client's call within the per-request limits (input size 413, max tokens 400)."""
        if self.limits is None or ctx.origin != CLIENT:
            return params
        return self.limits.checked(inputs, params)

    def _admit_model(self, name: str, ctx: RequestContext) -> Ticket | None:
        """A model call's admission: its circuit breaker (`CircuitOpen`, 503, while open) and,
        for a client, the model's rate limits (429); the ticket reports how the call went."""
        model = self.loader.catalog.get(name)
        if model is None:  # unknown (404 later), or on demand and not admitted yet
            return None
        ticket = self.breakers.enter(model.name, ctx.timeout_s) if self.breakers else None
        if self.limits is not None and ctx.origin == CLIENT:
            try:
                self.limits.admit_model(model.name)
            except BaseException:
                if ticket is not None:
                    ticket.end("cancelled")  # no call was made
                raise
        return ticket

    def _cache_key(
        self, name: str, task: str | None, inputs: list[Any], params: Params, ctx: RequestContext
    ) -> tuple[bytes, ServedModel, str] | None:
        """A client's deterministic call's response cache key (host/cache.py), else None."""
        if self.cache is None or ctx.origin != CLIENT or ctx.cache == "off":
            return None
        model = self.loader.catalog.get(name)
        if model is None or not inputs or len(inputs) > self.max_inputs:
            return None
        task = task or model.tasks[0]
        if not cacheable(task, params):
            return None
        digest = self.cache.key_of(model, task, inputs, params)
        return (digest, model, task) if digest is not None else None

    def _cached(self, name: str, digest: bytes, model: ServedModel, task: str) -> Outcome | None:
        """The stored answer while its model is resident (its tokenizer may render the
        answer), else None (a miss). A hit is no model call: not recorded, not billed."""
        assert self.cache is not None
        self.loader.resolve(name, task)  # a retired model, or a task it lacks: 4xx, cached or not
        loaded = self.loader.cache.get((model.name, task))
        entry = None
        if loaded is None or loaded.evicted:
            self.cache.counted(model.name, hit=False)
        else:
            entry = self.cache.get(digest, model.name)
        note_header("x-hfskills-cache", "hit" if entry is not None else "miss")
        if entry is None or loaded is None:
            return None
        answer.note(model.name)
        results = self.cache.results(entry)
        hit = {"event": "cache_hit", "model": model.name, "task": task, "batch_size": len(results)}
        log.info(json.dumps(hit))
        return Outcome(results, loaded, entry.prompt_tokens, entry.completion_tokens, cached=True)

    # -- bookkeeping ----------------------------------------------------------------------------
    def metric_name(self, name: str) -> str:
        """Series are per served model: aliases fold into it, unknown names into one label; a
        LoRA adapter is a model of its own (its requests, tokens and costs)."""
        model = self.loader.catalog.get(name)
        if model is None:
            return "unknown"
        return name if name in model.adapters else model.name

    def _record(
        self,
        name: str,
        task: str | None,
        hardware: str,
        batch: int,
        usage: tuple[int, int],
        start: float,
        status: str,
        ctx: RequestContext,
        hold: Hold | None,
    ) -> None:
        """The call's metrics and log line; its `Call` to the ledger and the observers."""
        latency = time.perf_counter() - start
        tokens = usage[0] + usage[1]
        if status == "ok" and self.auto is not None:
            self.auto.observe(name, latency)  # speed, for model "auto"
        call = Call(
            request_id=answer.request_id() or "",
            model=name,
            version=hold.version if hold is not None else None,
            task=task,
            hardware=hardware,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            latency_s=latency,
            status=status,
            route=ctx.route,
            user=ctx.user,
            origin=ctx.origin,
            at=time.time(),
        )
        if self.ledger is not None:
            _quietly(self.ledger.finished, hold, call)
        if self.limits is not None and ctx.origin == CLIENT:  # tokens per minute, once spent
            self.limits.used(ctx.caller, name, tokens)
        for watch in self.observers:
            _quietly(watch, call)
        self.metrics.requests.labels(model=name, hardware=hardware, status=status).inc()
        self.metrics.duration.labels(model=name, hardware=hardware).observe(latency)
        if tokens:
            self.metrics.tokens.labels(model=name).inc(tokens)
        log.info(
            json.dumps(
                {
                    "event": "request",
                    "model": name,
                    "task": task,
                    "hardware": hardware,
                    "batch_size": batch,
                    "tokens": tokens,
                    "latency_ms": round(latency * 1000, 2),
                    "status": status,
                }
            )
        )


def _work(loaded: Loaded) -> str:
    """The span of a model's work: ``batch`` (a dynamic batcher's, whose forward passes are
    its ``forward`` children) or ``engine`` (a generation engine's, or a remote model's)."""
    return "batch" if isinstance(loaded.worker, BatchWorker) else "engine"


async def _reported(events: AsyncIterator[Event], ticket: Ticket) -> AsyncIterator[Event]:
    """A stream's events; how they end (whole, a failure, or the consumer leaving) goes to the
    model's circuit breaker."""
    try:
        async for event in events:
            yield event
    except BaseException as error:
        ticket.end("timeout" if isinstance(error, DeadlineExceeded) else "error", error)
        raise
    else:
        ticket.end("ok")
    finally:
        ticket.end("cancelled")  # left early (no-op once ended)
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]


def _quietly(fn: Callable[..., None], *args: Any) -> None:
    """Accounts and observers never fail a request: their error is logged."""
    try:
        fn(*args)
    except Exception:
        log.exception("keeping the accounts of a call failed")


def _outcome(loaded: Loaded, rows: list[Any]) -> Outcome:
    """Results and usage: prompt tokens per input, generated tokens from generation results."""
    outcome = Outcome([row.result for row in rows], loaded)
    for row in rows:
        outcome.prompt_tokens += row.prompt_tokens
        if isinstance(row.result, dict) and "token_ids" in row.result:
            outcome.completion_tokens += generated_tokens(row.result)
    return outcome


#: How long past its deadline a request's work may take to report it itself (the scheduler
#: answers 503 "waited", workers 504) before the backstop below cancels it (e.g. a long load).
BACKSTOP_S = 1.0


async def _bounded(work: Awaitable[T], ctx: RequestContext) -> T:
    """``work`` within the request's deadline, cancelled if its client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(ctx.disconnected()) if ctx.disconnected else None
    waiting = {task} if watcher is None else {task, watcher}
    timeout = None if ctx.deadline == float("inf") else ctx.remaining() + BACKSTOP_S
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel(task)
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    if task in done:
        return task.result()
    await _cancel(task)
    if watcher is not None and watcher in done:
        raise ClientGone("the client closed the connection; the request was cancelled")
    raise DeadlineExceeded()


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until its clean-up (cancelling the model's work) has run."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


@contextlib.contextmanager
def _as_inference_errors(loaded: Loaded) -> Iterator[None]:
    """A model's own failure (not a refused input) answers 424 with its first line, logged."""
    try:
        yield
    except HFSkillsError:
        raise
    except Exception as exc:
        log.exception("%s/%s failed", loaded.model.name, loaded.task)
        raise InferenceError(f"{loaded.task} failed: {first_line(exc)}") from exc

"""Running skills for requests: admission, batching, worker threads, streams, metrics, logs.

A request first takes a slot from the `Scheduler` (priority queue, limits, deadline), then its
model from the `ModelLoader`. Decoder generation on torch goes to the model's continuous-
batching `DecodeEngine`; every other task goes through the model's `DynamicBatcher`, whose
batches run in the worker pool under the endpoint's lock (fast tokenizers are not thread-safe).
Nothing runs on the event loop. A stream's consumer that goes away (a client disconnect)
cancels its sequence, so no tokens are generated for nobody. Each request writes one JSON log
line and its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from hfskills.skillset.runtime.errors import (
    HFSkillsError,
    InferenceError,
    InvalidInput,
    UnsupportedTask,
    first_line,
)

from .batching import DynamicBatcher, GenerationStream
from .errors import APIError
from .loader import Loaded, ModelLoader
from .metrics import Metrics
from .scheduler import RequestContext, Scheduler

log = logging.getLogger("hfskills.requests")

DEFAULT_CONTEXT = RequestContext()


@dataclass
class Outcome:
    """What a request produced, for the route and for the log line."""

    results: list[Any]
    loaded: Loaded
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Stream:
    """An opened token stream: iterate `events` exactly once."""

    loaded: Loaded
    events: AsyncIterator[dict[str, Any]]


class InferenceService:
    def __init__(
        self,
        loader: ModelLoader,
        executor: Executor,
        metrics: Metrics,
        scheduler: Scheduler,
        max_inputs: int = 256,
    ) -> None:
        self.loader, self.executor, self.metrics = loader, executor, metrics
        self.scheduler, self.max_inputs = scheduler, max_inputs

    # -- the two entry points -----------------------------------------------------------------
    async def run(
        self,
        name: str,
        task: str | None,
        inputs: list[Any],
        params: dict[str, Any],
        *,
        ctx: RequestContext = DEFAULT_CONTEXT,
        count_tokens: bool = False,
    ) -> Outcome:
        """One request's inputs through the model; results in input order."""
        start = time.perf_counter()
        hardware, status, tokens = "none", "error", 0
        label = self.metric_name(name)
        try:
            if len(inputs) > self.max_inputs:
                raise APIError(413, f"at most {self.max_inputs} inputs per request", param="inputs")
            async with self._slot(name, ctx), self.loader.use(name, task) as loaded:
                hardware = loaded.endpoint.hardware
                outcome = await self._run(loaded, inputs, params, count_tokens)
                tokens = outcome.prompt_tokens + outcome.completion_tokens
                if outcome.completion_tokens:
                    self.metrics.generated.labels(model=label).inc(outcome.completion_tokens)
                status = "ok"
                return outcome
        finally:
            self._record(label, task, hardware, len(inputs), tokens, start, status)

    async def open_stream(
        self,
        name: str,
        task: str | None,
        prompt: Any,
        params: dict[str, Any],
        *,
        ctx: RequestContext = DEFAULT_CONTEXT,
    ) -> Stream:
        """Admit, validate and start now (errors become a normal 4xx); stream tokens later."""
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self._slot(name, ctx))
            loaded = await stack.enter_async_context(self.loader.use(name, task))
            if loaded.engine is not None:
                generation = GenerationStream(loaded.engine, prompt, params)
                stack.callback(generation.cancel)
                first = await generation.first()
                events = _chain(first, generation.rest())
            else:
                events = await self._thread_stream(loaded, prompt, params)
        except BaseException:
            await stack.aclose()
            raise
        return Stream(loaded, self._events(loaded, events, stack))

    # -- how a request runs ---------------------------------------------------------------------
    def _slot(self, name: str, ctx: RequestContext) -> contextlib.AbstractAsyncContextManager[None]:
        model, _ = self.loader.resolve(name)
        return self.scheduler.slot(model.name, ctx, lambda: self.loader.is_loading(model.name))

    async def _run(
        self, loaded: Loaded, inputs: list[Any], params: dict[str, Any], count_tokens: bool
    ) -> Outcome:
        if loaded.engine is not None:
            results = await asyncio.gather(
                *(GenerationStream(loaded.engine, item, params).result() for item in inputs)
            )
            rows = [(result, 0) for result in results]
        else:
            check_params(loaded, params)
            rows = await self.batcher(loaded, count_tokens).submit(inputs, params)
        outcome = Outcome(
            [result for result, _ in rows], loaded, prompt_tokens=sum(n for _, n in rows)
        )
        for item in outcome.results:
            if isinstance(item, dict) and "token_ids" in item:
                outcome.prompt_tokens += int(item.get("prompt_tokens", 0))
                outcome.completion_tokens += len(item["token_ids"])
        return outcome

    def batcher(self, loaded: Loaded, count_tokens: bool) -> DynamicBatcher:
        """The model's batcher for requests that do (or do not) count their prompt tokens."""
        key = "count" if count_tokens else "plain"
        if key not in loaded.batchers:

            async def run(inputs: list[Any], params: dict[str, Any]) -> list[tuple[Any, int]]:
                return await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._call, loaded, inputs, params, count_tokens
                )

            loaded.batchers[key] = DynamicBatcher(run, **loaded.batching)
        return loaded.batchers[key]

    def _call(
        self, loaded: Loaded, inputs: list[Any], params: dict[str, Any], count_tokens: bool
    ) -> list[tuple[Any, int]]:
        """One batch in a worker thread: (result, prompt tokens) per input."""
        with loaded.lock, _as_inference_errors(loaded):
            results = loaded.handler(inputs, **params)
            counts = (
                _count_tokens(loaded.endpoint.processor, inputs)
                if count_tokens
                else [0] * len(inputs)
            )
        return list(zip(results, counts, strict=True))

    async def _thread_stream(
        self, loaded: Loaded, prompt: Any, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """A skill's own ``handler.stream`` (no engine): pumped by a thread of its own."""
        stream_fn = getattr(loaded.handler, "stream", None)
        if stream_fn is None:
            raise UnsupportedTask(f"{loaded.task} on {loaded.model.name!r} does not stream")

        def start() -> Iterator[dict[str, Any]]:
            check_params(loaded, params)
            with loaded.lock:
                iterator = stream_fn(prompt, **params)
                first = next(iterator)  # runs the encoding and parameter checks
            return _prepend(first, iterator)

        iterator = await asyncio.get_running_loop().run_in_executor(self.executor, start)
        return pump(iterator)

    async def _events(
        self,
        loaded: Loaded,
        events: AsyncIterator[dict[str, Any]],
        stack: contextlib.AsyncExitStack,
    ) -> AsyncIterator[dict[str, Any]]:
        start = time.perf_counter()
        status, generated, prompt_tokens = "cancelled", 0, 0
        try:
            async for event in _mapped(loaded, events):
                if event.get("token_id") is not None:
                    generated += 1
                    self.metrics.generated.labels(model=loaded.model.name).inc()
                if event.get("finish_reason") is not None:
                    prompt_tokens = int(event.get("prompt_tokens", 0))
                    status = "ok"
                yield event
        except Exception:
            status = "error"
            raise
        finally:
            await stack.aclose()
            self._record(
                loaded.model.name,
                loaded.task,
                loaded.endpoint.hardware,
                1,
                prompt_tokens + generated,
                start,
                status,
            )

    # -- bookkeeping ----------------------------------------------------------------------------
    def metric_name(self, name: str) -> str:
        """Series are per served model: aliases fold into it, unknown names into one label."""
        model = self.loader.catalog.get(name)
        return model.name if model is not None else "unknown"

    def _record(
        self,
        name: str,
        task: str | None,
        hardware: str,
        batch: int,
        tokens: int,
        start: float,
        status: str,
    ) -> None:
        latency = time.perf_counter() - start
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


async def _chain(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event


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


def check_params(loaded: Loaded, params: dict[str, Any]) -> None:
    """Refuse parameters the task's handler does not take (before touching the model)."""
    signature = _signature(loaded.handler)
    try:
        signature.bind([], **params)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p != "inputs"]
        raise InvalidInput(f"{loaded.task}: {exc}; parameters accepted: {accepted}") from None


@functools.lru_cache(maxsize=256)
def _signature(handler: Any) -> inspect.Signature:
    return inspect.signature(handler)  # computed once per loaded handler, not per request


def _count_tokens(processor: Any, inputs: list[Any]) -> list[int]:
    """Prompt tokens of each text (or token-id) input, for usage counts."""
    if all(isinstance(x, list) for x in inputs):
        return [len(x) for x in inputs]
    if callable(processor) and all(isinstance(x, str) for x in inputs):
        return [len(ids) for ids in processor(inputs)["input_ids"]]
    return [0] * len(inputs)


async def _mapped(loaded: Loaded, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A stream's events, with a model failure midway turned into an `InferenceError`."""
    with _as_inference_errors(loaded):
        async for event in events:
            yield event


def _prepend(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield first
        yield from rest
    finally:
        rest.close()


async def pump(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    """Consume a blocking iterator in a thread of its own; stop it when the consumer leaves."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        try:
            for item in iterator:
                put("item", item)
                if stop.is_set():
                    break
        except BaseException as exc:
            put("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # same thread as the iteration: safe, and it cancels generation
            put("end", None)

    threading.Thread(target=run, name="hfskills-stream", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()

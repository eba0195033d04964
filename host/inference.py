"""Running skills for requests: worker threads, streaming, metrics and one log line each.

Inference never runs on the event loop: batch calls go to the worker pool, and a stream is
pumped by a thread of its own into an asyncio queue. When the consumer goes away (a client
disconnects), the pump closes the skill's iterator, which stops generation at the next token.
Calls into one endpoint are serialised by its lock (fast tokenizers are not thread-safe);
token streams hold it only while their prompt is encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hfskills.skillset.runtime.errors import (
    HFSkillsError,
    InferenceError,
    InvalidInput,
    UnsupportedTask,
)

from .errors import APIError
from .loader import Loaded, ModelLoader
from .metrics import Metrics

log = logging.getLogger("hfskills.requests")


@dataclass
class Outcome:
    """What a request produced, for the route and for the log line."""

    results: list[Any]
    loaded: Loaded
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Stream:
    """An opened token stream: iterate `events()` exactly once."""

    loaded: Loaded
    events: AsyncIterator[dict[str, Any]]
    prompt_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class InferenceService:
    def __init__(
        self, loader: ModelLoader, executor: Executor, metrics: Metrics, max_inputs: int = 256
    ) -> None:
        self.loader, self.executor, self.metrics = loader, executor, metrics
        self.max_inputs = max_inputs

    def _call(
        self, loaded: Loaded, inputs: list[Any], params: dict[str, Any], count_tokens: bool
    ) -> tuple[list[Any], int]:
        check_params(loaded, params)
        with loaded.lock, _as_inference_errors(loaded):
            results = loaded.handler(inputs, **params)
            tokens = _count_tokens(loaded.endpoint.processor, inputs) if count_tokens else 0
        return results, tokens

    async def run(
        self,
        name: str,
        task: str | None,
        inputs: list[Any],
        params: dict[str, Any],
        *,
        count_tokens: bool = False,
    ) -> Outcome:
        """One batch through the model's handler; results in input order."""
        start = time.perf_counter()
        hardware, status, tokens = "none", "error", 0
        label = self.metric_name(name)
        try:
            if len(inputs) > self.max_inputs:
                raise APIError(413, f"at most {self.max_inputs} inputs per request", param="inputs")
            async with self.loader.use(name, task) as loaded:
                hardware = loaded.endpoint.hardware
                results, counted = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._call, loaded, inputs, params, count_tokens
                )
                outcome = Outcome(results, loaded, prompt_tokens=counted)
                for item in results:
                    if isinstance(item, dict) and "token_ids" in item:
                        outcome.prompt_tokens += int(item.get("prompt_tokens", 0))
                        outcome.completion_tokens += len(item["token_ids"])
                tokens = outcome.prompt_tokens + outcome.completion_tokens
                if outcome.completion_tokens:
                    self.metrics.generated.labels(model=loaded.model.name).inc(
                        outcome.completion_tokens
                    )
                status = "ok"
                return outcome
        finally:
            self._record(label, task, hardware, len(inputs), tokens, start, status)

    async def open_stream(
        self, name: str, task: str | None, prompt: Any, params: dict[str, Any]
    ) -> Stream:
        """Validate and encode now (errors become a normal 4xx); stream tokens later."""
        stack = contextlib.AsyncExitStack()
        loaded = await stack.enter_async_context(self.loader.use(name, task))
        try:
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
        except BaseException:
            await stack.aclose()
            raise
        return Stream(loaded, self._events(loaded, iterator, stack))

    async def _events(
        self, loaded: Loaded, iterator: Iterator[dict[str, Any]], stack: contextlib.AsyncExitStack
    ) -> AsyncIterator[dict[str, Any]]:
        start = time.perf_counter()
        status, generated, prompt_tokens = "cancelled", 0, 0
        try:
            async for event in _mapped(loaded, pump(iterator)):
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


@contextlib.contextmanager
def _as_inference_errors(loaded: Loaded) -> Iterator[None]:
    """A model's own failure (not a refused input) answers 424 with its first line, logged."""
    try:
        yield
    except HFSkillsError:
        raise
    except Exception as exc:
        log.exception("%s/%s failed", loaded.model.name, loaded.task)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InferenceError(f"{loaded.task} failed: {first}") from exc


def check_params(loaded: Loaded, params: dict[str, Any]) -> None:
    """Refuse parameters the task's handler does not take (before touching the model)."""
    try:
        inspect.signature(loaded.handler).bind([], **params)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(loaded.handler).parameters if p != "inputs"]
        raise InvalidInput(f"{loaded.task}: {exc}; parameters accepted: {accepted}") from None


def _count_tokens(processor: Any, inputs: list[Any]) -> int:
    """Prompt tokens of text (or token-id) inputs, for usage counts."""
    if all(isinstance(x, list) for x in inputs):
        return sum(len(x) for x in inputs)
    if callable(processor) and all(isinstance(x, str) for x in inputs):
        return sum(len(ids) for ids in processor(inputs)["input_ids"])
    return 0


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

"""A loaded model's worker: the one place that decides how a model's requests run.

The policy (`create`), stated once:

- an endpoint that brings its own generation engine (OpenVINO GenAI, vLLM): an `EngineWorker`
  over it, since that engine batches continuously itself;
- decoder text generation on torch hardware, with ``continuous_batching`` on: an
  `EngineWorker` over a torch `DecodeEngine` that the worker owns (and closes);
- every other task: a `BatchWorker`, whose `DynamicBatcher` forms batches that run in the
  worker pool: a `Staged` handler's prepare and finish under the processor's lock (fast
  tokenizers are not thread-safe), its forward under the model's, so they overlap; a plain
  handler under both. A handler's own ``.stream`` (seq2seq generation on torch) streams
  through a thread of its own.

Every worker answers ``run(inputs, params, deadline)`` with one `Row` per input, in order, and
``stream(prompt, params, deadline)`` with an async iterator of token events whose first event
has already arrived (so a refused prompt is a normal 4xx before any byte is sent). Cancelling
``run`` or leaving the iterator cancels the model's work at its next token; a request past its
deadline ends with `DeadlineExceeded`. Nothing here runs on the event loop but bookkeeping.
Work goes to threads (the pool, the forward lanes, a stream's pump) with the context it was
handed over in (`tracing.in_thread`, `tracing.bound`): its log lines carry the request's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, NamedTuple

from hfskills.skillset.runtime import Endpoint, Handler, Prepared, Staged
from hfskills.skillset.runtime.continuous import DecodeEngine
from hfskills.skillset.runtime.engines import GenerationEngine
from hfskills.skillset.runtime.errors import InvalidInput, UnsupportedTask
from hfskills.skillset.runtime.generation import Event, GenerationParams, event_of

from . import tracing
from .batching import DynamicBatcher, GenerationStream, Stages, estimate_tokens, expire_at
from .errors import DeadlineExceeded

#: Hardware where skills run torch modules (the torch decode engine's home).
TORCH_HARDWARE = ("cpu", "cuda", "rocm", "mps")


#: A request's parameters: typed generation params from the serving layer, or a handler's
#: keyword parameters (a single-pass task's, e.g. ``{"normalize": False}``).
Params = dict[str, Any] | GenerationParams


def as_kwargs(params: Params) -> dict[str, Any]:
    """A handler's keyword parameters (generation params without their defaults)."""
    if isinstance(params, GenerationParams):
        return params.model_dump(exclude_defaults=True)
    return params


class Row(NamedTuple):
    """One input's result and the prompt tokens it used (for usage and metrics)."""

    result: Any
    prompt_tokens: int


@dataclass(frozen=True)
class Policy:
    """The settings that shape workers (from `Settings`)."""

    continuous_batching: bool = True
    max_batch_sequences: int = 32
    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    batch_wait_s: float = 0.0


class EngineWorker:
    """Requests go to a continuous-batching generation engine, one sequence per input."""

    def __init__(self, engine: GenerationEngine, owned: bool) -> None:
        self.engine, self.owned = engine, owned

    async def run(self, inputs: list[Any], params: Params, deadline: float) -> list[Row]:
        streams = [GenerationStream(self.engine, item, params, deadline) for item in inputs]
        try:
            results = await asyncio.gather(*(s.result() for s in streams))
        finally:
            for stream in streams:  # a caller that left (or failed) stops every sequence
                stream.cancel()
        return [Row(r, int(r.get("prompt_tokens", 0))) for r in results]

    async def stream(self, prompt: Any, params: Params, deadline: float) -> AsyncIterator[Event]:
        generation = GenerationStream(self.engine, prompt, params, deadline)
        try:
            first = await generation.first()
        except BaseException:
            generation.cancel()
            raise
        return _chain(first, generation.rest())

    def close(self) -> None:
        if self.owned:  # an endpoint's own engine is closed with the endpoint
            self.engine.close()


class BatchWorker:
    """Single-pass tasks through a dynamic batcher; a handler's ``.stream`` through a thread.

    A `Staged` handler runs as a pipeline: prepare (per request, under the processor lock)
    gives real token counts for batching and usage; forward holds the model lock; finish
    (under the processor lock again: fast tokenizers are not thread-safe, and finish may
    decode) overlaps the next batch's forward. A plain handler runs whole under both locks.
    """

    def __init__(
        self, endpoint: Endpoint, handler: Handler, executor: Executor, policy: Policy
    ) -> None:
        self.endpoint, self.handler, self.executor = endpoint, handler, executor
        self.lock = threading.Lock()  # the model
        self.processor_lock = threading.Lock()  # the tokenizer / processor
        self.staged = isinstance(handler, Staged)
        #: the handler's parameters, read once (kept here: a module-level cache of handlers
        #: would keep every unloaded model's weights alive)
        self.signature = inspect.signature(handler)
        self.lanes: _Lanes | None = None
        if self.staged:
            count, threads = forward_lanes(endpoint)
            self.lanes = _Lanes(count, threads, f"hfskills-{endpoint.task}")
        stages = (
            Stages(self._prepare, self._forward, self._finish)
            if self.staged
            else Stages(self._wrap, self._call, self._results)
        )
        self.batcher = DynamicBatcher(
            stages,
            max_batch=policy.max_batch_size,
            max_batch_tokens=policy.max_batch_tokens,
            max_wait_s=policy.batch_wait_s,
            # one batch more than there are lanes: queued, it starts the moment a lane frees
            forwards=len(self.lanes.threads) + 1 if self.lanes else 1,
            same_length=self.staged and handler.same_length,  # type: ignore[attr-defined]
        )

    async def run(self, inputs: list[Any], params: Params, deadline: float) -> list[Row]:
        params = as_kwargs(params)
        check_params(self.endpoint.task, self.handler, params, self.signature)
        try:
            async with asyncio.timeout_at(deadline):
                done = await self.batcher.submit(inputs, params)
        except TimeoutError:
            raise DeadlineExceeded() from None
        if self.staged:  # usage: the real token counts from prepare
            return [Row(result, item.tokens) for result, item in done]
        return [Row(result, _prompt_tokens(result)) for result, _ in done]

    async def _thread(self, fn: Any, *args: Any) -> Any:
        return await tracing.in_thread(self.executor, fn, *args)

    # -- a staged handler: each stage in a worker thread, under its own lock --------------------

    async def _prepare(self, inputs: list[Any], params: dict[str, Any]) -> list[Prepared]:
        return await self._thread(
            self._locked, self.processor_lock, self.handler.run_prepare, inputs, params
        )

    async def _forward(self, items: list[Prepared], params: dict[str, Any]) -> Any:
        assert self.lanes is not None
        return await asyncio.wrap_future(self.lanes.submit(self.handler.run_forward, items, params))

    async def _finish(
        self, items: list[Prepared], output: Any, params: dict[str, Any]
    ) -> list[Any]:
        return await self._thread(
            self._locked, self.processor_lock, self.handler.run_finish, items, output, params
        )

    @staticmethod
    def _locked(lock: threading.Lock, fn: Any, *args: Any) -> Any:
        with lock:
            return fn(*args)

    # -- a plain handler: one call per batch -----------------------------------------------------

    async def _wrap(self, inputs: list[Any], params: dict[str, Any]) -> list[Prepared]:
        return [Prepared(x, estimate_tokens(x)) for x in inputs]

    async def _call(self, items: list[Prepared], params: dict[str, Any]) -> list[Any]:
        return await self._thread(self._call_locked, [item.features for item in items], params)

    def _call_locked(self, inputs: list[Any], params: dict[str, Any]) -> list[Any]:
        with self.processor_lock, self.lock:
            return self.handler(inputs, **params)

    async def _results(
        self, items: list[Prepared], output: list[Any], params: dict[str, Any]
    ) -> list[Any]:
        if len(output) != len(items):
            raise RuntimeError(
                f"the handler returned {len(output)} results for {len(items)} inputs"
            )
        return output

    async def stream(self, prompt: Any, params: Params, deadline: float) -> AsyncIterator[Event]:
        params = as_kwargs(params)
        stream_fn = getattr(self.handler, "stream", None)
        if stream_fn is None:
            raise UnsupportedTask(f"{self.endpoint.task} on this model does not stream")
        check_params(self.endpoint.task, self.handler, params, self.signature)

        def start() -> Iterator[dict[str, Any]]:
            with self.lock:
                iterator = stream_fn(prompt, **params)
                first = next(iterator)  # runs the encoding and parameter checks
            return _prepend(first, iterator)

        iterator = await tracing.in_thread(self.executor, start)
        return _typed(pump(iterator, deadline))

    def close(self) -> None:
        if self.lanes is not None:
            self.lanes.close()


class _Lanes:
    """A `BatchWorker`'s forward threads, each running one forward pass at a time with its own
    count of torch intra-op threads. A batch queued while every lane is busy starts the moment
    one frees, with no trip through the event loop (which may be busy answering requests)."""

    def __init__(self, count: int, threads: int, name: str) -> None:
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        ready = threading.Barrier(count + 1)
        self.threads = [
            threading.Thread(
                target=self._serve, args=(threads, ready), name=f"{name}-lane{i}", daemon=True
            )
            for i in range(count)
        ]
        previous = _intra_op_threads(None) if threads else 0
        for thread in self.threads:
            thread.start()
        ready.wait()
        if threads:  # torch's setting is also the default of threads started later: restored
            _intra_op_threads(previous)

    def _serve(self, threads: int, ready: threading.Barrier) -> None:
        if threads:
            _intra_op_threads(threads)
        ready.wait()
        while (job := self.jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller left while it was queued
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.jobs.put((future, tracing.bound(fn, *args)))  # in the caller's context
        return future

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


Worker = EngineWorker | BatchWorker


def create(
    endpoint: Endpoint, handler: Handler, family: str, executor: Executor, policy: Policy
) -> Worker:
    """The worker for a freshly loaded model (the policy in the module docstring)."""
    if endpoint.engine is not None:
        return EngineWorker(endpoint.engine, owned=False)
    if (
        policy.continuous_batching
        and endpoint.task == "text_generation"
        and family == "decoder"
        and endpoint.hardware in TORCH_HARDWARE
    ):
        engine = DecodeEngine(
            endpoint.model,
            endpoint.processor,
            endpoint.device,
            max_batch=policy.max_batch_sequences,
        )
        return EngineWorker(engine, owned=True)
    return BatchWorker(endpoint, handler, executor, policy)


def check_params(
    task: str, handler: Handler, params: dict[str, Any], signature: inspect.Signature | None = None
) -> None:
    """Refuse parameters the task's handler does not take (before touching the model);
    ``signature``: the handler's, when the caller has read it already."""
    signature = signature or inspect.signature(handler)
    try:
        signature.bind([], **params)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p != "inputs"]
        raise InvalidInput(f"{task}: {exc}; parameters accepted: {accepted}") from None


def forward_lanes(endpoint: Endpoint) -> tuple[int, int]:
    """How many forward passes of a staged model run at once, and the torch intra-op threads
    of each (0: leave torch's setting alone). Torch on the CPU: two lanes of half the threads.
    Its threads meet at a barrier after every operation, so one thread that loses its core
    (to the event loop, the tokenizer, another process) stalls them all; two independent
    lanes keep the cores busy whatever the other does (measured in docs/performance.md).
    Elsewhere one lane."""
    if endpoint.hardware != "cpu":
        return 1, 0
    threads = _intra_op_threads(None)
    return (2, threads // 2) if threads >= 2 else (1, 0)


def _intra_op_threads(count: int | None) -> int:
    """Torch's intra-op threads for the calling thread (and for threads started later): set
    to ``count`` unless it is None; the value before."""
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    return previous


def _prompt_tokens(result: Any) -> int:
    """Prompt tokens a plain handler reports in its result (generation results do)."""
    return int(result.get("prompt_tokens", 0)) if isinstance(result, dict) else 0


async def _typed(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Event]:
    """A skill stream's JSON events (``handler.stream``), typed as the engines' are."""
    try:
        async for event in events:
            yield event_of(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in rest:
        yield event


def _prepend(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield first
        yield from rest
    finally:
        rest.close()


async def pump(iterator: Iterator[Any], deadline: float) -> AsyncIterator[Any]:
    """Consume a blocking iterator in a thread of its own; stop it when the consumer leaves or
    the deadline passes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    break
                put("item", item)
        except BaseException as exc:
            put("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # same thread as the iteration: safe, and it cancels generation
            put("end", None)

    threading.Thread(target=tracing.bound(run), name="hfskills-stream", daemon=True).start()
    timer = expire_at(deadline, lambda: (stop.set(), queue.put_nowait(("error", None))))
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value if value is not None else DeadlineExceeded()
            yield value
    finally:
        timer.cancel()
        stop.set()

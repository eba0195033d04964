"""Batching in front of the skills: a dynamic batcher for single-pass tasks, and the asyncio
side of continuous batching for decoder generation.

`DynamicBatcher` (one per model and task) runs a handler's three stages (`Stages`: prepare ->
forward -> finish, see `hfskills.skillset.runtime.staged`) as a pipeline:

- prepare: each request's inputs are prepared (tokenized) as they arrive; requests that arrive
  together are prepared in one call. Each input gets its real token count. A request whose
  inputs fail to prepare fails alone, before it joins any batch.
- forward: when the model is free, the next batch is formed from the prepared requests, as
  TEI's queue does, by real tokens: the oldest request waiting (so none starves), joined by
  the requests nearest to it in length (so short inputs are not padded to long ones), within
  ``max_batch`` inputs and ``max_batch_tokens`` padded tokens (longest input x rows). Only
  requests with equal parameters share a batch; a caller that left is dropped before its batch
  forms.
- finish: post-processing of one batch runs while the next batch's forward runs.

If a batch fails, each request in it is retried alone, so a poisoned input fails only its own
request.

Tracing (host/tracing.py): the batcher's tasks start in an empty context, not in the context of
the request that happened to start them; a prepare call or a batch runs under its oldest
request's trace (`tracing.attached`), so the worker threads it hands work to log that trace id.

`GenerationStream` feeds one request into a generation engine (the torch `DecodeEngine`,
GenAI, vLLM) and turns its events into an async iterator; leaving the iterator early
cancels the sequence.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hfskills.skillset.runtime.engines import DONE, GenerationEngine, Sequence
from hfskills.skillset.runtime.errors import HFSkillsError
from hfskills.skillset.runtime.generation import Event, FinalEvent, GenerationParams
from hfskills.skillset.runtime.staged import Prepared, by_tokens

from . import tracing
from .errors import DeadlineExceeded


def estimate_tokens(item: Any) -> int:
    """A size for inputs of a handler without a prepare stage: ~4 characters a token for
    text, the length of a token-id list, one slot for anything else (images, audio)."""
    if isinstance(item, str):
        return len(item) // 4 + 2
    if isinstance(item, list | tuple):
        return len(item)
    return 1


@dataclass(frozen=True)
class Stages:
    """How one batch runs, each stage off the event loop (a worker thread):
    ``prepare(inputs, params) -> list[Prepared]`` (one per input, with its token count),
    ``forward(items, params) -> output`` (holds the model), and
    ``finish(items, output, params) -> list`` (one result per item)."""

    prepare: Callable[[list[Any], dict[str, Any]], Awaitable[list[Prepared]]]
    forward: Callable[[list[Prepared], dict[str, Any]], Awaitable[Any]]
    finish: Callable[[list[Prepared], Any, dict[str, Any]], Awaitable[list[Any]]]


@dataclass(eq=False)
class _Arrival:
    """A request waiting to be prepared."""

    inputs: list[Any]
    params: dict[str, Any]
    key: str
    future: asyncio.Future[list[Prepared]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: Its request's span, the trace its prepare runs under (None: tracing off).
    trace: tracing.Parent | None = field(default_factory=tracing.parent)


@dataclass(eq=False)
class _Pending:
    """A prepared request (or a part of a large one) waiting for its batch."""

    items: list[Prepared]
    params: dict[str, Any]
    key: str
    length: int = 0  # its longest input, in tokens
    real: int = 0  # its tokens, all inputs
    future: asyncio.Future[list[Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: Its request's span, where its batch's "forward" span goes (None: tracing off).
    trace: tracing.Parent | None = field(default_factory=tracing.parent)

    def __post_init__(self) -> None:
        self.length = max(item.tokens for item in self.items)
        self.real = sum(item.tokens for item in self.items)


class DynamicBatcher:
    #: batches past their forward (finishing) that may wait at once, per forward dispatched
    finishing_limit = 2
    #: a forward pass's fixed cost, in padded tokens' worth of work (measured for
    #: all-MiniLM-L6-v2 on 2 CPU cores: see docs/performance.md)
    overhead_tokens = 64

    def __init__(
        self,
        stages: Stages,
        *,
        max_batch: int = 32,
        max_batch_tokens: int = 8192,
        max_wait_s: float = 0.005,
        forwards: int = 1,
        same_length: bool = False,
    ) -> None:
        self.stages, self.max_batch, self.max_tokens = stages, max_batch, max_batch_tokens
        #: batches hold inputs of one token count only (a `Staged` handler's ``same_length``)
        self.same_length = same_length
        self.max_wait = max_wait_s
        self.forwards = forwards  # batches dispatched to forward at once (running or queued)
        self.arrivals: list[_Arrival] = []
        self.pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._preparer: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # batches in forward or finish
        self._forwarding = 0
        self._forward_free = asyncio.Event()
        self.batches = 0  # forward passes run (for tests and metrics)
        self.prepare_calls = 0  # prepare stages run (requests arriving together share one)
        #: the last batches' shapes: (rows, longest input in tokens, real tokens)
        self.shapes: deque[tuple[int, int, int]] = deque(maxlen=4096)

    async def submit(self, inputs: list[Any], params: dict[str, Any]) -> list[tuple[Any, Prepared]]:
        """``(result, prepared input)`` for each of ``inputs``, in order; a large request is
        split across batches."""
        key = json.dumps(params, sort_keys=True, default=str)
        items = await self._prepared(inputs, params, key)
        groups = by_tokens(items) if self.same_length else [list(range(len(items)))]
        order = [row for rows in groups for row in rows]
        parts = [
            _Pending([items[row] for row in rows[i : i + self.max_batch]], params, key)
            for rows in groups
            for i in range(0, len(rows), self.max_batch)
        ]
        self.pending.extend(parts)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._loop(),
                context=contextvars.Context(),  # no request's (module docstring)
            )
        try:
            done = await asyncio.gather(*(p.future for p in parts))
        finally:
            for part in parts:  # a cancelled caller leaves the queue
                if part in self.pending:
                    self.pending.remove(part)
        results: list[Any] = [None] * len(items)
        for row, result in zip(order, (r for chunk in done for r in chunk), strict=True):
            results[row] = result
        return list(zip(results, items, strict=True))

    # -- prepare: requests that arrive together are prepared in one call ------------------------

    async def _prepared(
        self, inputs: list[Any], params: dict[str, Any], key: str
    ) -> list[Prepared]:
        arrival = _Arrival(inputs, params, key)
        self.arrivals.append(arrival)
        if self._preparer is None or self._preparer.done():
            self._preparer = asyncio.get_running_loop().create_task(
                self._prepare_loop(), context=contextvars.Context()
            )
        try:
            return await arrival.future
        finally:
            if arrival in self.arrivals:
                self.arrivals.remove(arrival)

    async def _prepare_loop(self) -> None:
        while self.arrivals:
            taken = [a for a in self.arrivals if not a.future.done()]
            self.arrivals = []
            groups: dict[str, list[_Arrival]] = {}
            for arrival in taken:
                groups.setdefault(arrival.key, []).append(arrival)
            for group in groups.values():
                await self._prepare_group([a for a in group if not a.future.done()])

    async def _prepare_group(self, group: list[_Arrival]) -> None:
        if not group:
            return
        if len(group) > 1:
            try:
                self.prepare_calls += 1
                with tracing.attached(group[0].trace):
                    items = await self.stages.prepare(
                        [x for a in group for x in a.inputs], group[0].params
                    )
            except Exception:
                pass  # one request's input is bad: prepare each alone, below
            else:
                offset = 0
                for arrival in group:
                    _settle(arrival.future, items[offset : offset + len(arrival.inputs)])
                    offset += len(arrival.inputs)
                return
        for arrival in group:
            if arrival.future.done():
                continue
            try:
                self.prepare_calls += 1
                with tracing.attached(arrival.trace):
                    prepared = await self.stages.prepare(arrival.inputs, arrival.params)
                _settle(arrival.future, prepared)
            except Exception as exc:
                _settle(arrival.future, exc)

    # -- forward and finish --------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # parts whose caller left (cancelled futures) never run, and never stall the loop
            self.pending = [p for p in self.pending if not p.future.done()]
            if not self.pending:
                return
            if self._forwarding >= self.forwards or len(self._running) >= self.forwards * (
                1 + self.finishing_limit
            ):  # the batch forms when a forward ends: from every request that arrived meanwhile
                self._forward_free.clear()
                await self._forward_free.wait()
                continue
            first = self.pending[0]
            deadline = loop.time() + self.max_wait
            while self._size(first.key) < self.max_batch and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            group = self._take(first.key)
            if group:
                self._forwarding += 1
                task = loop.create_task(self._run_group(group))
                self._running.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._forward_free.set()

    def _forward_ended(self) -> None:
        self._forwarding -= 1
        self._forward_free.set()

    def _size(self, key: str) -> int:
        return sum(len(p.items) for p in self.pending if p.key == key)

    def _take(self, key: str) -> list[_Pending]:
        """One batch: the oldest request waiting with these parameters, then, one at a time,
        whichever neighbour in length adds the fewest padding tokens, while the batch's
        efficiency (real tokens / (padded tokens + ``overhead_tokens``)) does not drop, within
        ``max_batch`` inputs and ``max_batch_tokens`` padded tokens."""
        same = [p for p in self.pending if p.key == key and not p.future.done()]
        if not same:
            return []
        anchor = same[0]
        if self.same_length:  # parts are of one length each (submit): join only that length
            same = [p for p in same if p.length == anchor.length]
        ordered = sorted(same, key=lambda p: p.length)  # stable: equal lengths by arrival
        lo = hi = next(i for i, p in enumerate(ordered) if p is anchor)
        rows, longest, real = len(anchor.items), anchor.length, anchor.real
        while True:
            options = []
            if lo > 0:  # a shorter request: its own padding
                shorter = ordered[lo - 1]
                options.append((len(shorter.items) * (longest - shorter.length), -1, shorter))
            if hi + 1 < len(ordered):  # a longer one: every row so far grows to its length
                longer = ordered[hi + 1]
                options.append((rows * (longer.length - longest), 1, longer))
            for _, side, part in sorted(options, key=lambda o: o[:2]):
                size, length = rows + len(part.items), max(longest, part.length)
                padded = size * length
                if (
                    size <= self.max_batch
                    and padded <= self.max_tokens
                    and (real + part.real) * (self.overhead_tokens + rows * longest)
                    >= real * (self.overhead_tokens + padded)
                ):
                    rows, longest, real = size, length, real + part.real
                    lo, hi = (lo - 1, hi) if side < 0 else (lo, hi + 1)
                    break
            else:
                break
        group = ordered[lo : hi + 1]
        for part in group:
            self.pending.remove(part)
        group.sort(key=same.index)  # arrival order within the batch
        return group

    async def _run_group(self, group: list[_Pending]) -> None:
        """Forward, then finish, which overlaps the next batch's forward; under the trace of
        the batch's oldest request (its first: arrival order)."""
        with tracing.attached(group[0].trace):
            await self._run(group)

    async def _run(self, group: list[_Pending]) -> None:
        items = [item for part in group for item in part.items]
        params = group[0].params
        self.batches += 1
        shape = (len(items), max(p.length for p in group), sum(item.tokens for item in items))
        self.shapes.append(shape)
        started = tracing.now()
        try:
            output = await self.stages.forward(items, params)
        except Exception as exc:
            self._forward_ended()
            await self._isolate(group, exc)
            return
        except BaseException:
            self._forward_ended()
            raise
        self._forward_ended()
        rows, padded = shape[0], shape[0] * shape[1]
        tracing.record((p.trace for p in group), "forward", started, rows=rows, padded=padded)
        try:
            results = await self.stages.finish(items, output, params)
        except Exception as exc:
            await self._isolate(group, exc)
            return
        offset = 0
        for part in group:
            _settle(part.future, results[offset : offset + len(part.items)])
            offset += len(part.items)

    async def _isolate(self, group: list[_Pending], exc: Exception) -> None:
        """A batch failed: each request alone, so only the poisoned one fails."""
        if len(group) == 1:
            _settle(group[0].future, exc)
            return
        for part in group:
            if part.future.done():
                continue
            try:
                with tracing.attached(part.trace):
                    output = await self.stages.forward(part.items, part.params)
                    _settle(part.future, await self.stages.finish(part.items, output, part.params))
            except Exception as own:
                _settle(part.future, own)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


def expire_at(deadline: float, callback: Callable[[], Any]) -> asyncio.TimerHandle:
    """Call ``callback`` on the event loop at ``deadline`` (the loop's clock) unless cancelled."""
    return asyncio.get_running_loop().call_at(deadline, callback)


class GenerationStream:
    """One request in a generation engine (torch, GenAI, vLLM), as an async iterator of events.
    Leaving the iterator, `cancel`, or the deadline passing stops the sequence at its next
    token; past the deadline the consumer gets `DeadlineExceeded`."""

    def __init__(
        self,
        engine: GenerationEngine,
        prompt: Any,
        params: dict[str, Any] | GenerationParams,
        deadline: float | None = None,
    ) -> None:
        settings = (  # typed by the serving layer, or a dict to check now (before queueing)
            params if isinstance(params, GenerationParams) else GenerationParams.parse(params)
        )
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sequence: Sequence = engine.submit(
            prompt,
            settings,
            sink=lambda item: loop.call_soon_threadsafe(self.queue.put_nowait, item),
        )
        self.timer = expire_at(deadline, self._expire) if deadline is not None else None

    def _expire(self) -> None:
        self.sequence.cancelled.set()
        self.queue.put_nowait(DeadlineExceeded())

    async def first(self) -> Event:
        """The first event (raises the request's error, e.g. an invalid prompt)."""
        item = await self.queue.get()
        if isinstance(item, BaseException):
            self.cancel()
            raise item
        if item is DONE:
            raise HFSkillsError("generation ended before its first token")
        return item

    async def rest(self) -> AsyncIterator[Event]:
        try:
            while (item := await self.queue.get()) is not DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()  # a consumer that left stops its sequence

    def cancel(self) -> None:
        self.sequence.cancelled.set()
        if self.timer is not None:
            self.timer.cancel()

    async def result(self) -> dict[str, Any]:
        """Run to the end: the batch handler's result for this prompt."""
        try:
            last = await self.first()
            async for event in self.rest():
                last = event
            if not isinstance(last, FinalEvent):
                raise HFSkillsError("generation ended without a final event")
            return last.result()
        finally:
            self.cancel()

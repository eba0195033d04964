"""Batching in front of the skills: a dynamic batcher for single-pass tasks, and the asyncio
side of continuous batching for decoder generation.

`DynamicBatcher` (one per model and task): concurrent requests wait up to ``max_wait_s`` for
company, are grouped by length (so short inputs are not padded to long ones), cut into batches
of at most ``max_batch`` inputs and ``max_batch_tokens`` estimated tokens, and run as one
handler call each; every caller gets its own rows back. Only requests with equal parameters
share a batch. If a batch fails, each request in it is retried alone, so a poisoned input fails
only its own request.

`GenerationStream` feeds one request into a generation engine (the torch `DecodeEngine`,
GenAI, vLLM) and turns its events into an async iterator; leaving the iterator early
cancels the sequence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hfskills.skillset.runtime.engines import DONE, GenerationEngine, Sequence
from hfskills.skillset.runtime.errors import HFSkillsError
from hfskills.skillset.runtime.generation import GenerationParams, result_of

from .errors import DeadlineExceeded

#: A call that runs one batch in a worker thread: (inputs, params) -> results.
RunBatch = Callable[[list[Any], dict[str, Any]], Awaitable[list[Any]]]


def estimate_tokens(item: Any) -> int:
    """A cheap size for grouping and the token budget: ~4 characters a token for text."""
    if isinstance(item, str):
        return len(item) // 4 + 2
    if isinstance(item, list | tuple):
        return len(item)
    return 1  # images, audio: one slot each


@dataclass
class _Pending:
    inputs: list[Any]
    params: dict[str, Any]
    key: str
    future: asyncio.Future[list[Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DynamicBatcher:
    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch: int = 32,
        max_batch_tokens: int = 8192,
        max_wait_s: float = 0.005,
    ) -> None:
        self.run, self.max_batch, self.max_tokens = run, max_batch, max_batch_tokens
        self.max_wait = max_wait_s
        self.pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # forward passes run (for tests and metrics)

    async def submit(self, inputs: list[Any], params: dict[str, Any]) -> list[Any]:
        """Results for ``inputs`` in order; a large request is split across batches."""
        key = json.dumps(params, sort_keys=True, default=str)
        parts = [
            _Pending(inputs[i : i + self.max_batch], params, key)
            for i in range(0, len(inputs), self.max_batch)
        ]
        self.pending.extend(parts)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        try:
            done = await asyncio.gather(*(p.future for p in parts))
        finally:
            for part in parts:  # a cancelled caller leaves the queue
                if part in self.pending:
                    self.pending.remove(part)
        return [row for chunk in done for row in chunk]

    async def _loop(self) -> None:
        while True:
            # parts whose caller left (cancelled futures) never run, and never stall the loop
            self.pending = [p for p in self.pending if not p.future.done()]
            if not self.pending:
                return
            first = self.pending[0]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait
            while self._size(first.key) < self.max_batch and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            group = self._take(first.key)
            if group:
                await self._run_group(group)

    def _size(self, key: str) -> int:
        return sum(len(p.inputs) for p in self.pending if p.key == key)

    def _take(self, key: str) -> list[_Pending]:
        """Requests for one batch: same parameters, shortest first, within both limits."""
        same = sorted(
            (p for p in self.pending if p.key == key and not p.future.done()),
            key=lambda p: max(map(estimate_tokens, p.inputs)),
        )
        group: list[_Pending] = []
        count = tokens = 0
        for part in same:
            size = len(part.inputs)
            cost = size * max(map(estimate_tokens, part.inputs))
            if group and (count + size > self.max_batch or tokens + cost > self.max_tokens):
                break
            group.append(part)
            count, tokens = count + size, tokens + cost
        for part in group:
            self.pending.remove(part)
        return group

    async def _run_group(self, group: list[_Pending]) -> None:
        inputs = [item for part in group for item in part.inputs]
        self.batches += 1
        try:
            results = await self.run(inputs, group[0].params)
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0].future, exc)
                return
            for part in group:  # isolate the failure: each request alone
                try:
                    _settle(part.future, await self.run(part.inputs, part.params))
                except Exception as own:
                    _settle(part.future, own)
            return
        offset = 0
        for part in group:
            _settle(part.future, results[offset : offset + len(part.inputs)])
            offset += len(part.inputs)


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
        params: dict[str, Any],
        deadline: float | None = None,
    ) -> None:
        settings = GenerationParams.parse(params)  # refuse bad params before queueing
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

    async def first(self) -> dict[str, Any]:
        """The first event (raises the request's error, e.g. an invalid prompt)."""
        item = await self.queue.get()
        if isinstance(item, BaseException):
            self.cancel()
            raise item
        if item is DONE:
            raise HFSkillsError("generation ended before its first token")
        return item

    async def rest(self) -> AsyncIterator[dict[str, Any]]:
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
        try:
            last = await self.first()
            async for event in self.rest():
                last = event
            return result_of(last)
        finally:
            self.cancel()

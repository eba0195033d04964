"""Automatic benchmarking: every ``auto_bench_every`` client calls to a model, a small fixed
prompt set runs on it in the background and its record is appended to the benchmark JSONL.

Policy:

- `AutoBench.observe` watches every call's end (`Call`, host/control/calls.py) on the event
  loop, in O(1): it counts the ``client`` calls per served model (the host's own ``shadow`` and
  ``bench`` calls never count) and, at the N-th, schedules one run with asyncio and returns.
  A model whose run is still going is not started again (its count restarts).
- A run goes through the host's own `InferenceService` at ``low`` priority with origin
  ``bench`` (never billed, never counted as traffic): the fixed prompts (`bench.PROMPTS`) at
  once, generation streamed (greedy, `MAX_NEW_TOKENS` tokens, EOS ignored: TTFT, TPOT, ITL),
  embeddings and classification as plain calls. Other tasks are not benchmarked.
- The record (``source: "auto"``) has the CLI's fields and vLLM's metric names; the file is
  written in a worker thread. Then the measured tokens/s is handed to the cost tracking
  (the control plane's ``costs.throughput``) when the host has it; at start the newest figure
  per (model, hardware) in the JSONL is handed over too (`seed`).
- A run's failure is recorded in its record (``failed``, ``errors``) and logged; it never
  reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfskills.skillset.runtime.generation import FinalEvent, GenerationParams, TokenEvent

from . import answer, bench

if TYPE_CHECKING:
    from ..inference import InferenceService
    from .calls import Call

log = logging.getLogger("hfskills.bench")

#: Tokens each generation prompt of an automatic run generates.
MAX_NEW_TOKENS = 16
TASKS = ("text_generation", "text_embedding", "text_classification")


class AutoBench:
    def __init__(
        self,
        service: InferenceService,
        every: int,
        path: Path,
        versions: Mapping[str, str],
        timeout_s: float = 300.0,
        throughput: Any | None = None,
    ) -> None:
        """``throughput``: the cost tracking's measured tokens/s (host/control/costs.py
        `Throughput`, with ``set(model, hardware, tokens_per_s)``), when the host has one."""
        self.service, self.every, self.path = service, every, path
        self.versions, self.timeout_s = versions, timeout_s
        self.throughput = throughput
        self.counts: dict[str, int] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        #: The records written since the start (newest last), for tests and logs.
        self.runs = 0

    def observe(self, call: Call) -> None:
        """Count a call; at every N-th client call to a model, schedule a run on it (O(1))."""
        if self.every <= 0 or call.origin != "client" or call.task not in TASKS:
            return
        if call.model not in self.versions and self.service.loader.catalog.get(call.model) is None:
            return  # "unknown": a name no model answers to
        count = self.counts.get(call.model, 0) + 1
        if count < self.every:
            self.counts[call.model] = count
            return
        self.counts[call.model] = 0
        if call.model in self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._run(call.model, call.task, call.version))
        self.running[call.model] = task
        task.add_done_callback(lambda _: self.running.pop(call.model, None))

    async def _run(self, model: str, task: str, version: str | None) -> None:
        answer.forget()  # a background task: nothing it does reaches the triggering response
        try:
            record = await self.measure(model, task, version)
            await asyncio.to_thread(bench.append, self.path, record)
            self.runs += 1
            log.info(
                json.dumps(
                    {
                        "event": "auto_bench",
                        "model": model,
                        "hardware": record["hardware"],
                        "tokens_per_s": record["tokens_per_s"],
                        "completed": record["completed"],
                        "failed": record["failed"],
                    }
                )
            )
            self._feed(record)
        except Exception:
            log.exception("automatic benchmark of %s failed", model)

    def seed(self) -> None:
        """At start: the newest tokens/s the JSONL holds per (model, hardware), for costs (so
        ``hfskills bench`` runs written before the start count)."""
        if self.throughput is None:
            return
        for (model, hardware), tps in bench.latest_throughput(self.path).items():
            self.throughput.set(model, hardware, tps)

    def _feed(self, record: dict[str, Any]) -> None:
        """Hand a run's measured tokens/s to the cost tracking, when the host has it."""
        tps, hardware = record.get("tokens_per_s"), record.get("hardware")
        if self.throughput is not None and tps and hardware and record["completed"]:
            self.throughput.set(record["model"], hardware, tps)

    async def measure(self, model: str, task: str, version: str | None) -> dict[str, Any]:
        """One run of the fixed prompts on ``model``: its record."""
        loader = self.service.loader
        peak = loader.used_bytes()
        where: dict[str, Any] = {"hardware": None, "memory": None}
        start = time.perf_counter()
        samples = await asyncio.gather(*(self._one(model, task, p, where) for p in bench.PROMPTS))
        duration = time.perf_counter() - start
        peak = max(peak, loader.used_bytes())
        generation = task == "text_generation"
        return {
            "timestamp": bench.now(),
            "source": "auto",
            "model": model,
            "version": version or self.versions.get(model),
            "hardware": where["hardware"],
            "task": task,
            "backend": "in-process",
            "base_url": None,
            "num_prompts": len(bench.PROMPTS),
            "max_concurrency": len(bench.PROMPTS),
            "max_seconds": self.timeout_s,
            "stopped_by_time": False,
            "max_tokens": MAX_NEW_TOKENS if generation else None,
            **bench.metrics(samples, duration),
            "peak_memory_bytes": peak,
            "model_memory_bytes": where["memory"],
            "trigger": {"every": self.every},
        }

    async def _one(self, model: str, task: str, prompt: str, where: dict[str, Any]) -> bench.Sample:
        from ..scheduler import RequestContext

        ctx = RequestContext.start("low", self.timeout_s, origin="bench")
        start = time.perf_counter()
        try:
            if task == "text_generation":
                return await self._stream(model, prompt, ctx, start, where)
            outcome = await self.service.run(model, task, [prompt], {}, ctx)
        except Exception as error:
            message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            return bench.Sample(False, time.perf_counter() - start, error=str(message)[:200])
        where.update(hardware=outcome.loaded.endpoint.hardware)
        where.update(memory=outcome.loaded.endpoint.memory_bytes)
        return bench.Sample(True, time.perf_counter() - start, prompt_tokens=outcome.prompt_tokens)

    async def _stream(
        self, model: str, prompt: str, ctx: Any, start: float, where: dict[str, Any]
    ) -> bench.Sample:
        params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, ignore_eos=True)
        stream = await self.service.open_stream(model, "text_generation", prompt, params, ctx)
        where.update(hardware=stream.loaded.endpoint.hardware)
        where.update(memory=stream.loaded.endpoint.memory_bytes)
        ttft: float | None = None
        last, generated, prompt_tokens = start, 0, 0
        itl: list[float] = []
        async for event in stream.events:
            if isinstance(event, TokenEvent):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - start
                else:
                    itl.append(now - last)
                last, generated = now, generated + 1
            elif isinstance(event, FinalEvent):
                prompt_tokens = event.prompt_tokens
                generated = max(generated, len(event.token_ids))
        latency = time.perf_counter() - start
        return bench.Sample(True, latency, prompt_tokens, generated, ttft, itl)

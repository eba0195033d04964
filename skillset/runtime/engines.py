"""The generation-engine contract: what continuous-batching engines share.

An engine owns one decoder model and batches every request submitted to it: the torch
`DecodeEngine` (continuous.py), OpenVINO GenAI (genai.py) and vLLM (vllm_engine.py). Each
takes a prompt (a string or chat messages) with `GenerationParams` and reports a `Sequence`'s
events: one ``{"token_id", "text", "finish_reason": None}`` per token, then the final event
from `TokenText.final` (whole text, ids, why it ended, prompt tokens), then `DONE`; a failure
is an exception followed by `DONE`. Setting ``sequence.cancelled`` stops the sequence at its
next token. The host streams from any engine the same way, and `handler` turns one into a
skill's batch handler with ``.stream``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .generation import GenerationParams, result_of

DONE = object()


@dataclass
class Sequence:
    """One request in an engine: its prompt, parameters, text state and event queue."""

    prompt: Any
    params: GenerationParams
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Where the engine sends events; a queue by default, an event loop's callback in a server.
    sink: Any = None
    text: Any = None  # the TokenText that turns its ids into streamed text
    generator: Any = None  # torch.Generator for seeded sampling (torch engine)
    history: Any = None  # prompt + generated ids (torch engine's repetition penalty)
    handle: Any = None  # the engine's own handle (GenAI's GenerationHandle, vLLM's request)

    def put(self, item: Any) -> None:
        (self.sink or self.events.put)(item)

    def stream(self) -> Iterator[dict[str, Any]]:
        """Events as `TextGenerator.stream` yields them; closing it cancels the sequence."""
        try:
            while (item := self.events.get()) is not DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancelled.set()

    def result(self) -> dict[str, Any]:
        """Run to the end; the same dict a batch handler returns for this prompt."""
        last: dict[str, Any] = {}
        for event in self.stream():
            last = event
        return result_of(last)


class GenerationEngine(Protocol):
    def submit(
        self, prompt: Any, params: GenerationParams, sink: Callable[[Any], None] | None = None
    ) -> Sequence: ...

    def close(self) -> None: ...

    @property
    def load(self) -> int: ...


def handler(engine: GenerationEngine) -> Callable[..., list[dict[str, Any]]]:
    """A skill's text-generation handler over an engine: a batch is submitted at once (the
    engine batches it), and ``handler.stream(prompt, **params)`` yields one prompt's events."""

    def run(inputs: list[Any], **params: Any) -> list[dict[str, Any]]:
        settings = GenerationParams.parse(params)
        sequences = [engine.submit(prompt, settings) for prompt in inputs]
        return [sequence.result() for sequence in sequences]

    def stream(prompt: Any, **params: Any) -> Iterator[dict[str, Any]]:
        return engine.submit(prompt, GenerationParams.parse(params)).stream()

    run.stream = stream  # type: ignore[attr-defined]
    return run

"""The generation-engine contract: what continuous-batching engines share.

An engine owns one decoder model and batches every request submitted to it: the torch
`DecodeEngine` (continuous.py), OpenVINO GenAI (genai.py) and vLLM (vllm_engine.py). Each
takes a prompt (a string or chat messages) with `GenerationParams` and reports a `Sequence`'s
events: one `TokenEvent` per token, then the `FinalEvent` from `TokenText.final` (whole text,
ids, why it ended, prompt tokens), then `DONE`; a failure is an exception followed by `DONE`.
A skill's ``handler.stream`` yields the same events as JSON-ready dicts (``as_dict``).
Setting ``sequence.cancelled`` stops the sequence at its next token. The host streams from
any engine the same way, and `handler` turns one into a skill's batch handler with
``.stream``. Every engine checks the prompt plus ``max_new_tokens`` against the model's
context when a sequence starts (`GenerationParams.fit`), and a sequence the runtime refuses to
start fails alone, with an error, instead of waiting forever.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import HFSkillsError, InferenceError, InvalidInput, first_line
from .generation import (
    Event,
    FinalEvent,
    GenerationParams,
    checked_ids,
    prompt_texts,
    token_ids,
)

log = logging.getLogger("hfskills.runtime")

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
    echo: int = 0  # prompt ids still to come back before generated ones (GenAI's echo)
    generator: Any = None  # torch.Generator for seeded sampling (torch engine)
    history: Any = None  # prompt + generated ids (torch engine's repetition penalty)
    handle: Any = None  # the engine's own handle (GenAI's GenerationHandle, vLLM's request)
    guide: Any = None  # constraints.Guide: the grammar that masks its tokens (torch engine)

    def put(self, item: Any) -> None:
        (self.sink or self.events.put)(item)

    def stream(self) -> Iterator[Event]:
        """The sequence's typed events; closing the iterator cancels the sequence."""
        try:
            while (item := self.events.get()) is not DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancelled.set()

    def result(self) -> dict[str, Any]:
        """Run to the end; the same dict a batch handler returns for this prompt."""
        for event in self.stream():
            if isinstance(event, FinalEvent):
                return event.result()
        raise InferenceError("generation ended without a final event")


class GenerationEngine(Protocol):
    def submit(
        self, prompt: Any, params: GenerationParams, sink: Callable[[Any], None] | None = None
    ) -> Sequence: ...

    def close(self) -> None: ...

    @property
    def load(self) -> int: ...


def prompt_ids(tokenizer: Any, prompt: Any, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """A prompt (a string, chat messages through the chat template with ``tools``, or token
    ids already) as token ids: every engine renders and tokenizes it the same way, so prompts
    and usage counts match."""
    if token_ids(prompt):
        return checked_ids(tokenizer, prompt)
    ids = list(tokenizer(prompt_texts(tokenizer, [prompt], tools)[0])["input_ids"])
    if not ids:
        raise InvalidInput("a prompt must not be empty", param="inputs")
    return ids


class EngineThread:
    """One thread that owns a model and runs the engine loop: admit waiting sequences (each
    through `_start`), then `_step` while any run; a failed step fails its sequences, not the
    engine. Subclasses set their attributes, then call ``super().__init__()``, which starts
    the thread; they keep their running sequences in ``self.running``."""

    name = "hfskills-engine"
    #: The most sequences running at once (None: the engine's own scheduler decides).
    max_batch: int | None = None
    running: Any

    def __init__(self) -> None:
        self.waiting: queue.Queue[Sequence] = queue.Queue()
        self.steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    # -- the engine contract -----------------------------------------------------------------
    def submit(self, prompt: Any, params: GenerationParams, sink: Any = None) -> Sequence:
        """Queue one prompt; tokenizing happens in the engine thread. Events go to ``sink``
        when given (called from the engine thread), else to the sequence's queue."""
        if self._stop.is_set():
            raise InferenceError("the generation engine is stopped")
        sequence = Sequence(prompt, params, sink=sink)
        self.waiting.put(sequence)
        return sequence

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.waiting.put(Sequence(None, GenerationParams()))  # wake the loop
        self._thread.join(timeout=30)

    @property
    def load(self) -> int:
        return len(self.running) + self.waiting.qsize()

    # -- what a subclass provides ----------------------------------------------------------------
    def _start(self, sequence: Sequence) -> None:
        """Admit one sequence (tokenize, prefill or hand it to the runtime)."""
        raise NotImplementedError

    def _step(self) -> None:
        """Advance every running sequence by a token and report their events."""
        raise NotImplementedError

    def _fail_all(self, error: HFSkillsError) -> None:
        """End every running sequence with ``error``."""
        raise NotImplementedError

    def _busy(self) -> bool:
        return bool(self.running)

    def _context(self) -> AbstractContextManager[Any]:
        return nullcontext()

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        with self._context():
            while not self._stop.is_set():
                try:
                    self._admit(block=not self._busy())
                    if self._busy():
                        self._step()
                        self.steps += 1
                except Exception as exc:  # a failed step fails its sequences, not the engine
                    log.exception("%s: step failed", self.name)
                    self._fail_all(InferenceError(f"generation failed: {exc}"))
        self._fail_all(InferenceError("the generation engine stopped"))

    def _admit(self, block: bool) -> None:
        while self.max_batch is None or len(self.running) < self.max_batch:
            try:
                sequence = self.waiting.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                return
            block = False
            if self._stop.is_set() or sequence.prompt is None:
                return
            if sequence.cancelled.is_set():
                sequence.put(DONE)
                continue
            try:
                self._start(sequence)
            except HFSkillsError as exc:
                sequence.put(exc)
                sequence.put(DONE)
            except Exception as exc:  # the runtime refused it: that request fails, alone
                # (it is in no running set yet, so the loop's `_fail_all` would never end it)
                log.exception("%s: a request could not start", self.name)
                sequence.put(InferenceError(f"generation failed: {first_line(exc)}"))
                sequence.put(DONE)


def handler(engine: GenerationEngine) -> Callable[..., list[dict[str, Any]]]:
    """A skill's text-generation handler over an engine: a batch is submitted at once (the
    engine batches it), and ``handler.stream(prompt, **params)`` yields one prompt's events."""

    def run(inputs: list[Any], **params: Any) -> list[dict[str, Any]]:
        settings = GenerationParams.parse(params)
        sequences = [engine.submit(prompt, settings) for prompt in inputs]
        return [sequence.result() for sequence in sequences]

    def stream(prompt: Any, **params: Any) -> Iterator[dict[str, Any]]:
        events = engine.submit(prompt, GenerationParams.parse(params)).stream()
        try:
            for event in events:
                yield event.as_dict()  # the skill contract's JSON-ready events
        finally:
            events.close()  # cancels the sequence

    run.stream = stream  # type: ignore[attr-defined]
    return run

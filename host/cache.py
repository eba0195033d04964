"""The response cache: a deterministic call's results, kept in memory and served again.

The policy, stated once:

- **What is cached**: one core call (`InferenceService._run`: one model, one list of inputs)
  of a text task whose answer is a function of its inputs: embeddings, classification
  (text, token, zero-shot), fill-mask, question answering, and greedy generation (text, and
  text-to-text: ``do_sample`` off, or a temperature below greedy's). Never a sampled
  generation (seeded or not), never a stream, never the host's own calls (shadow copies,
  benchmarks), never inputs that are not plain JSON. Off unless ``response_cache_bytes`` > 0.
- **The key**: blake2b of the served model's name, its registered version and checkpoint, the
  task, the inputs and the parameters with every default filled in, as JSON with sorted keys
  (so ``{"a":1,"b":2}`` and ``{"b":2, "a":1}``, or a parameter sent at its default value and
  left out, are the same request). A new version (a switch) or another checkpoint never sees
  the old answers.
- **Bounded**: the stored results (JSON bytes) plus a fixed overhead per entry stay within
  ``response_cache_bytes``; the least recently used entries go first; one entry larger than
  a quarter of the bound is not stored.
- **Per request**: ``Cache-Control: no-cache`` skips the lookup (the fresh answer replaces the
  stored one); ``no-store`` skips both the lookup and the store.
- **A hit** answers the call with the stored results and usage, as the model answered them
  (so every API shape renders the same bytes), when the model is still resident (its
  tokenizer renders ``echo`` and TGI's ``details``); it is not a model call: no slot, no
  worker, no ``model_requests_total``, no ledger call (no cost, no budget, no event) and no
  per-model rate limit; ``response_cache_lookups_total{model,result}`` and
  ``response_cache_hit_ratio`` count it, and its log line is ``"event": "cache_hit"``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from hfskills.skillset.runtime.generation import GenerationParams

from .catalog import ServedModel
from .metrics import Metrics
from .workers import Params

#: Tasks whose answer depends on the inputs and parameters only (generation: when greedy).
DETERMINISTIC_TASKS = frozenset(
    {
        "text_embedding",
        "sentence_similarity",
        "text_classification",
        "token_classification",
        "zero_shot_classification",
        "fill_mask",
        "question_answering",
        "text_generation",
        "text2text_generation",
    }
)
#: Bytes an entry costs beyond its JSON (key, dict slot, bookkeeping): a bound, not a measure.
ENTRY_OVERHEAD = 256


@dataclass(frozen=True)
class Entry:
    """A call's answer as stored: its results as JSON, and its usage."""

    results: bytes
    prompt_tokens: int
    completion_tokens: int

    @property
    def size(self) -> int:
        return len(self.results) + ENTRY_OVERHEAD


def use(cache_control: str | None) -> str:
    """A request's ``Cache-Control`` as the cache's use of it: ``off`` (``no-store``),
    ``refresh`` (``no-cache``: no lookup, the fresh answer is stored) or ``use``."""
    directives = {part.split("=")[0].strip().lower() for part in (cache_control or "").split(",")}
    if "no-store" in directives:
        return "off"
    return "refresh" if "no-cache" in directives else "use"


def cacheable(task: str, params: Params) -> bool:
    """Whether a call of ``task`` with ``params`` always answers the same."""
    if task not in DETERMINISTIC_TASKS:
        return False
    if isinstance(params, GenerationParams):
        return not params.sampling
    return True


def key(
    model: str, version: str, location: str, task: str, inputs: list[Any], params: Params
) -> bytes | None:
    """The normalised request's digest, or None when its inputs are not plain JSON."""
    given = params.model_dump(mode="json") if isinstance(params, GenerationParams) else params
    try:
        raw = orjson.dumps(
            [model, version, location, task, inputs, given],
            option=orjson.OPT_SORT_KEYS,
        )
    except TypeError:
        return None
    return hashlib.blake2b(raw, digest_size=20).digest()


class ResponseCache:
    """An LRU of `Entry`s bounded in bytes, with its metrics (one event loop, no locks)."""

    def __init__(
        self, max_bytes: int, metrics: Metrics, versions: Mapping[str, str] | None = None
    ) -> None:
        """``versions``: served model -> its registered version (the registry's ``served``)."""
        self.max_bytes, self.metrics = max_bytes, metrics
        self.versions: Mapping[str, str] = versions if versions is not None else {}
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.bytes = self.hits = self.lookups = 0

    def key_of(
        self, model: ServedModel, task: str, inputs: list[Any], params: Params
    ) -> bytes | None:
        """`key` of a call to ``model`` at its registered version."""
        version = self.versions.get(model.name, "")
        return key(model.name, version, model.location, task, inputs, params)

    def get(self, digest: bytes, model: str) -> Entry | None:
        """The stored answer (now the most recently used), counted as a hit or a miss."""
        entry = self.entries.get(digest)
        if entry is not None:
            self.entries.move_to_end(digest)
        self.counted(model, hit=entry is not None)
        return entry

    def counted(self, model: str, hit: bool) -> None:
        self.lookups += 1
        self.hits += hit
        self.metrics.response_cache_lookups.labels(
            model=model, result="hit" if hit else "miss"
        ).inc()
        self.metrics.response_cache_hit_ratio.set(self.hits / self.lookups)

    def put(self, digest: bytes, results: list[Any], usage: tuple[int, int]) -> None:
        """Store a call's results (not JSON, or too large: nothing is stored)."""
        try:
            raw = orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            return
        entry = Entry(raw, *usage)
        if entry.size > self.max_bytes // 4:
            return
        old = self.entries.pop(digest, None)
        if old is not None:
            self.bytes -= old.size
        self.entries[digest] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= evicted.size
        self.metrics.response_cache_bytes.set(self.bytes)

    @staticmethod
    def results(entry: Entry) -> list[Any]:
        """A fresh copy of the stored results (callers may change what they get)."""
        return orjson.loads(entry.results)

"""Grammar-constrained decoding: a request's output held to a JSON schema, any JSON object, or a
regular expression.

A `Constraint` is part of `GenerationParams` (``constraint``). `grammar` turns it into an
llguidance grammar once per request and raises `InvalidInput` naming the request's field
(``response_format.json_schema.schema``, ``tools[0].function.parameters``) when it cannot be
compiled. Each engine enforces it its own way:

- torch (the `DecodeEngine` and transformers' ``generate``): a `Guide` per sequence, an
  llguidance matcher that masks every token the grammar does not allow before sampling;
- OpenVINO GenAI: its own ``StructuredOutputConfig`` (xgrammar inside GenAI), `genai_kwargs`;
- vLLM: its ``StructuredOutputsParams``, `vllm_kwargs`.

JSON is compact on torch (no free whitespace: a model cannot pad its way past ``max_tokens``).
A constrained sequence ends at EOS once the grammar accepts, or with ``length`` when the budget
runs out first (the output is then cut short, as OpenAI's is).
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidInput, first_line


class _Constraint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The request field the constraint came from: errors name it.
    field: str = "response_format"


class JSONSchema(_Constraint):
    """Output that parses as JSON and validates against ``json_schema``."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any]


class JSONObject(_Constraint):
    """Output that parses as a JSON object (OpenAI's ``json_object`` mode)."""

    type: Literal["json_object"]


class Regex(_Constraint):
    """Output that matches ``pattern`` whole."""

    type: Literal["regex"]
    pattern: str


Constraint = Annotated[JSONSchema | JSONObject | Regex, Field(discriminator="type")]

#: llguidance's JSON options: no free whitespace between tokens.
_JSON_DEFAULTS = {"whitespace_flexible": False}


def _schema(constraint: JSONSchema | JSONObject) -> dict[str, Any]:
    return constraint.json_schema if isinstance(constraint, JSONSchema) else {"type": "object"}


def grammar(constraint: JSONSchema | JSONObject | Regex) -> str:
    """The llguidance grammar of ``constraint``; `InvalidInput` naming its field when the
    schema or pattern cannot be compiled."""
    key = json.dumps(constraint.model_dump(exclude={"field"}), sort_keys=True)
    try:
        return _compiled(key)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{constraint.field}: cannot be compiled: {first_line(exc)}", param=constraint.field
        ) from None


@functools.lru_cache(maxsize=256)
def _compiled(key: str) -> str:
    import llguidance

    spec = json.loads(key)
    if spec["type"] == "regex":
        grammar = llguidance.LLMatcher.grammar_from_regex(spec["pattern"])
    else:
        schema = spec.get("json_schema", {"type": "object"})  # json_object: any object
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_DEFAULTS)
    error = llguidance.LLMatcher.validate_grammar(grammar, None)
    if error:
        raise ValueError(error)
    return grammar


def genai_kwargs(constraint: JSONSchema | JSONObject | Regex) -> dict[str, str]:
    """OpenVINO GenAI's ``StructuredOutputConfig`` arguments."""
    if isinstance(constraint, Regex):
        return {"regex": constraint.pattern}
    return {"json_schema": json.dumps(_schema(constraint))}


def vllm_kwargs(constraint: JSONSchema | JSONObject | Regex) -> dict[str, Any]:
    """vLLM's ``StructuredOutputsParams`` arguments."""
    if isinstance(constraint, Regex):
        return {"regex": constraint.pattern}
    if isinstance(constraint, JSONObject):
        return {"json_object": True}
    return {"json": constraint.json_schema}


# -- torch: an llguidance matcher per sequence ---------------------------------------------------

_tokenizers: weakref.WeakKeyDictionary[Any, dict[tuple[int, tuple[int, ...]], Any]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def ll_tokenizer(tokenizer: Any, vocab: int, eos_ids: set[int]) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (about a second to build: cached per
    tokenizer), for a model whose logits have ``vocab`` entries."""
    import llguidance.hf

    eos = tuple(sorted(eos_ids))
    with _lock:
        built = _tokenizers.setdefault(tokenizer, {})
        if (vocab, eos) not in built:
            built[(vocab, eos)] = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=vocab, eos_token=list(eos) if eos else None
            )
        return built[(vocab, eos)]


class Guide:
    """One sequence's grammar state: `mask` the next token's logits, `advance` by the token
    chosen. Once the grammar is complete only EOS is allowed."""

    def __init__(self, tokenizer: Any, compiled: str) -> None:
        import llguidance
        import llguidance.torch

        self.matcher = llguidance.LLMatcher(tokenizer, compiled)
        if self.matcher.is_error():
            raise InvalidInput(f"the grammar cannot be used: {self.matcher.get_error()}")
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, tokenizer.vocab_size)

    def mask(self, logits: Any) -> None:
        """Set the logits of every token the grammar forbids now to -inf, in place (one row,
        or a ``[1, vocab]`` view)."""
        import llguidance.torch

        if self.matcher.is_error():
            return
        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        row = logits.view(1, -1)
        llguidance.torch.apply_token_bitmask_inplace(row, self.bitmask.to(row.device))

    def advance(self, token: int) -> None:
        if not self.matcher.is_error() and not self.matcher.is_stopped():
            self.matcher.consume_token(token)


def guide(constraint: Any, tokenizer: Any, vocab: int, eos_ids: set[int]) -> Guide | None:
    """A `Guide` for ``constraint`` (None for no constraint)."""
    if constraint is None:
        return None
    return Guide(ll_tokenizer(tokenizer, vocab, eos_ids), grammar(constraint))


class GuidedLogits:
    """transformers' logits-processor protocol over one `Guide` per batch row (``generate``:
    the rows' previous tokens advance their guides, then each row's logits are masked)."""

    def __init__(self, guides: list[Guide], prompt_length: int) -> None:
        self.guides, self.prompt_length = guides, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] > self.prompt_length:
            for row, g in enumerate(self.guides):
                g.advance(int(input_ids[row, -1]))
        for row, g in enumerate(self.guides):
            g.mask(scores[row])
        return scores

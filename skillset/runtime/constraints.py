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

Compile cost is bounded before any engine sees a constraint (`bounds`): counted repetitions
(``{n,m}`` in a regex or a schema's ``pattern``, a string's ``maxLength``/``minLength``) may
unroll to at most `MAX_UNROLLED` positions in all, and a schema may nest at most `MAX_DEPTH`
levels. Measured (docs/performance.md, scripts/bench_structured.py --hostile-only, on a busy
2-core machine): GenAI's first compile of such a constraint took 3 to 12 s a request (it caches
a compiled grammar: the same constraint again took under 0.6 s); llguidance refuses too-large
lexers and deep nesting itself, within a second or so. The bound keeps a request from asking
for more than that; it is no tighter, since the counts' cost was not measurably linear.

JSON is compact on torch (no free whitespace: a model cannot pad its way past ``max_tokens``).
A constrained sequence ends at EOS once the grammar accepts, or with ``length`` when the budget
runs out first (the output is then cut short, as OpenAI's is).
"""

from __future__ import annotations

import functools
import json
import re
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

#: The most positions a constraint's counted repetitions may unroll to, in all (the module's
#: policy; what GenAI and llguidance took at and past it is in docs/performance.md).
MAX_UNROLLED = 10_000
#: The deepest a JSON schema may nest (objects and lists; llguidance's own recursion limit
#: refused 100 nested object schemas, about 300 levels).
MAX_DEPTH = 128
_COUNTED = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def unrolled(pattern: str) -> int:
    """The positions ``pattern``'s counted repetitions add when unrolled: each ``{n,m}``
    multiplies what it repeats (an atom, a class, a group: its own unrolled size) by its
    largest count, ``{n,}`` by n. Literal text adds nothing (a long alternation is cheap)."""
    stack: list[list[int]] = [[]]  # per open group: the sizes of its elements
    i = 0
    while i < len(pattern):
        c = pattern[i]
        size = 1
        if c == "\\":
            i += 2
            if pattern[i - 1 : i] in ("p", "P") and pattern[i : i + 1] == "{":
                i = pattern.find("}", i) + 1 or len(pattern)
        elif c == "[":
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            stack.append([])
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            size = max(sum(stack.pop()), 1)
            i += 1
        elif c == "{" and (m := _COUNTED.match(pattern, i)) and stack[-1]:
            count = max(int(m.group(1)), int(m.group(2) or 0))
            stack[-1][-1] *= count
            i = m.end()
            continue
        else:
            i += 1
        stack[-1].append(size)
    total = sum(sum(group) for group in stack)
    return max(total - len(pattern), 0)


def bounds(constraint: JSONSchema | JSONObject | Regex) -> None:
    """ValueError when ``constraint`` would cost too much to compile (the module's policy)."""
    if isinstance(constraint, Regex):
        cost = unrolled(constraint.pattern)
    elif isinstance(constraint, JSONSchema):
        cost = _schema_cost(constraint.json_schema)
    else:
        return
    if cost > MAX_UNROLLED:
        raise ValueError(
            f"its counted repetitions ({{n,m}}, maxLength, minLength) unroll to {cost} "
            f"positions; at most {MAX_UNROLLED} are served"
        )


def _schema_cost(schema: Any) -> int:
    """`unrolled` over a schema's patterns, plus its strings' lengths; iterative (a deep
    schema must not exhaust Python's stack), deeper than `MAX_DEPTH` refused."""
    cost, todo = 0, [(schema, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            todo.extend((item, depth + 1) for item in node)
        elif isinstance(node, dict):
            for key in ("maxLength", "minLength"):
                if isinstance(node.get(key), int) and not isinstance(node.get(key), bool):
                    cost += node[key]
            if isinstance(node.get("pattern"), str):
                cost += unrolled(node["pattern"])
            todo.extend((value, depth + 1) for value in node.values())
    return cost


def _schema(constraint: JSONSchema | JSONObject) -> dict[str, Any]:
    return constraint.json_schema if isinstance(constraint, JSONSchema) else {"type": "object"}


def grammar(constraint: JSONSchema | JSONObject | Regex) -> str:
    """The llguidance grammar of ``constraint``; `InvalidInput` naming its field when the
    schema or pattern cannot be compiled."""
    try:
        bounds(constraint)
        key = json.dumps(constraint.model_dump(exclude={"field"}), sort_keys=True)
        return _compiled(key)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput(
            f"{constraint.field}: cannot be compiled: {_reason(exc)}", param=constraint.field
        ) from None


def _reason(exc: BaseException) -> str:
    """The compiler's message in one line: llguidance's regex errors put the reason on a later
    line (``... regex parse error:`` / the pattern / ``error: unclosed character class``)."""
    line = first_line(exc)
    if line.endswith(":"):
        found = [x.strip() for x in str(exc).splitlines() if x.strip().startswith("error:")]
        if found:
            return f"{line} {found[0].removeprefix('error:').strip()}"
    return line


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


def genai_refusal(constraint: JSONSchema | JSONObject | Regex) -> str | None:
    """Why GenAI's regex compiler (xgrammar) would refuse what llguidance took, or None. GenAI
    compiles a grammar inside its step, where a refusal also broke the requests running beside
    it (measured: they failed with "already in scheduling phase"), so these are refused before
    the request reaches it. The forms, each measured on GenAI 2026.4: consecutive repetition
    modifiers (``a**``, ``a{2}*``; lazy ``*?`` is fine), group modifiers other than ``(?:``
    and ``(?<name>`` (``(?P<x>``, ``(?i)``), ``\\p{...}`` classes, empty alternatives (``a|``,
    ``(|a)``), a trailing lone backslash."""
    if isinstance(constraint, Regex):
        patterns = [constraint.pattern]
    elif isinstance(constraint, JSONSchema):
        patterns = _patterns(constraint.json_schema)
    else:
        return None
    for pattern in patterns:
        reason = _xgrammar_refusal(pattern)
        if reason is not None:
            return f"{reason} in {pattern[:80]!r} (not on this engine: OpenVINO GenAI)"
    return None


def _patterns(schema: Any) -> list[str]:
    found, todo = [], [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append(node["pattern"])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def _xgrammar_refusal(pattern: str) -> str | None:
    i, quantified = 0, False  # quantified: the previous token was a repetition modifier
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                return "a trailing lone backslash"
            if pattern[i + 1] in "pP":
                return "a Unicode class escape (\\p{...})"
            i, quantified = i + 2, False
            continue
        if c == "[":  # a class: skip to its end
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i, quantified = j + 1, False
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 : i + 3]
            named = rest == "<" and pattern[i + 3 : i + 4] not in ("=", "!")
            if rest != ":" and not named:
                return "a group modifier (only (?: and (?<name> are served)"
        if c == "|" and (i == 0 or pattern[i - 1] in "(|" or pattern[i + 1 : i + 2] in ("", ")")):
            return "an empty alternative"
        if c in "*+" or (c == "{" and _COUNTED.match(pattern, i)):
            if quantified:
                return "two consecutive repetition modifiers"
            i = _COUNTED.match(pattern, i).end() if c == "{" else i + 1  # type: ignore[union-attr]
            quantified = True
            continue
        if c == "?" and quantified:  # lazy: a modifier of the modifier, served
            quantified = False
            i += 1
            continue
        quantified = c == "?" and i > 0
        i += 1
    return None


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

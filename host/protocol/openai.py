"""OpenAI API request and response models (the subset hfskills serves), as OpenAI names them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hfskills.skillset.runtime import generation as gen
from hfskills.skillset.runtime.constraints import JSONObject, JSONSchema, Regex

from .hf import Grammar

NonEmptyStr = Annotated[str, Field(min_length=1)]
#: The most strings ``guided_choice`` / ``structured_outputs.choice`` may list.
MAX_CHOICES = 1024


class Request(BaseModel):
    # Unknown fields are ignored, as vLLM does: clients send vendor extensions freely.
    model_config = ConfigDict(extra="ignore")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# -- models ------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hfskills"
    #: A LoRA adapter's base model (as vLLM lists its LoRA modules); None for a model.
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- embeddings --------------------------------------------------------------------------------


class EmbeddingRequest(Request):
    model: NonEmptyStr
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EmbeddingRequest:
        if isinstance(self.input, list) and (not self.input or any(x == [] for x in self.input)):
            raise ValueError("input must not be empty")
        return self

    def inputs(self) -> list[str] | list[list[int]]:
        """One batch: a string is one input, a flat id list is one tokenized input."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, int) for x in self.input):
            return [list(self.input)]  # type: ignore[arg-type]
        return list(self.input)  # type: ignore[arg-type]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# -- completions and chat ----------------------------------------------------------------------


class StreamOptions(Request):
    include_usage: bool = False


#: What the sampling fields accept (OpenAI's documented ranges; ``top_k`` and
#: ``repetition_penalty`` are vLLM's extensions, bounded as the engines' `GenerationParams`).
#: NaN and infinities are refused: Python's JSON reads ``NaN`` and ``Infinity``.
MAX_TOKENS = gen.MAX_NEW_TOKENS


def _unsupported(value: float | None, info: ValidationInfo) -> float | None:
    if value:
        raise PydanticCustomError(
            "unsupported_value",
            "{field} is not supported; send 0 or leave it out",
            {"field": info.field_name},
        )
    return value


def _at_most(minimum: int | None, budget: int | None, field: str) -> int | None:
    if minimum is not None and budget is not None and minimum > budget:
        raise PydanticCustomError(
            "min_tokens_above_max",
            "min_tokens ({minimum}) must be at most {field} ({budget})",
            {"minimum": minimum, "field": field, "budget": budget},
        )
    return minimum


class StructuredOutputs(Request):
    """vLLM's ``structured_outputs`` (the subset that maps onto a constraint: one of
    ``json``, ``regex``, ``choice``, ``json_object``)."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = Field(None, min_length=1)
    choice: list[str] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    json_object: bool | None = None
    grammar: None = Field(None, description="not supported (EBNF grammars)")
    structural_tag: None = Field(None, description="not supported")

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    _json_schema = field_validator("json_")(lambda value: None if value is None else _schema(value))

    @model_validator(mode="after")
    def _one(self) -> StructuredOutputs:
        given = [self.json_, self.regex, self.choice, self.json_object or None]
        if sum(v is not None for v in given) != 1:
            raise ValueError("exactly one of json, regex, choice, json_object")
        return self

    def constraint(self) -> JSONObject | JSONSchema | Regex:
        if self.regex is not None:
            return Regex(type="regex", pattern=self.regex, field="structured_outputs.regex")
        if self.choice is not None:  # one of the strings, as a regex alternation
            pattern = "|".join(map(_literal, self.choice))
            return Regex(type="regex", pattern=pattern, field="structured_outputs.choice")
        if self.json_object:
            return JSONObject(type="json_object", field="structured_outputs.json_object")
        return JSONSchema(
            type="json_schema", json_schema=_schema(self.json_), field="structured_outputs.json"
        )


def _literal(text: str) -> str:
    """``text`` as a regex matching itself, escaping only the metacharacters both regex
    dialects (llguidance's Rust regex, GenAI's xgrammar) know: Python's `re.escape` also
    escapes spaces and ``#``, which not every dialect accepts."""
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}" else c for c in text)


def _schema(value: Any) -> dict[str, Any]:
    """A JSON schema given as an object or as JSON text (vLLM takes both)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("the JSON schema is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("the JSON schema must be an object")
    return value


def _one_constraint(found: dict[str, Any]) -> Any:
    if len(found) > 1:
        raise ValueError(
            f"one structured-output constraint at a time; this request has {', '.join(found)}"
        )
    return next(iter(found.values()), None)


class SamplingRequest(Request):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: NonEmptyStr
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_TOKENS,
        description="at most the model's context less the prompt's tokens (else a 400); "
        "unset: the route's default, cut to what the context has room for",
    )
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="0 (or below 1e-5): greedy; unset: 1"
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(
        None, ge=-1, le=gen.MAX_TOP_K, description="vLLM extension; -1 or 0: every token"
    )
    repetition_penalty: float | None = Field(
        None,
        ge=gen.MIN_REPETITION_PENALTY,
        le=gen.MAX_REPETITION_PENALTY,
        description="vLLM extension; 1: no penalty",
    )
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=gen.MAX_SEED)
    ignore_eos: bool = Field(False, description="vLLM extension: generate max_tokens, past EOS")
    min_tokens: int | None = Field(
        None, ge=0, le=MAX_TOKENS, description="vLLM extension: no EOS before this"
    )
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="only 0 is supported")
    frequency_penalty: float | None = Field(
        None, ge=-2.0, le=2.0, description="only 0 is supported"
    )
    user: str | None = None
    guided_regex: str | None = Field(
        None, min_length=1, description="vLLM extension: the output matches this regex"
    )
    guided_json: dict[str, Any] | str | None = Field(
        None, description="vLLM extension: the output validates against this JSON schema"
    )
    guided_choice: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CHOICES,
        description="vLLM extension: the output is one of these strings",
    )
    structured_outputs: StructuredOutputs | None = Field(
        None, description="vLLM extension: one of json, regex, choice, json_object"
    )

    _no_penalties = field_validator("presence_penalty", "frequency_penalty")(_unsupported)

    @field_validator("guided_json")
    @classmethod
    def _guided_schema(cls, value: Any) -> Any:
        return None if value is None else _schema(value)

    @model_validator(mode="after")
    def _one_constraint_at_most(self) -> SamplingRequest:
        self.constraint()  # more than one: a ValueError naming them
        return self

    def constraint(self) -> JSONObject | JSONSchema | Regex | None:
        """The request's structured-output constraint (None: none asked); more than one is a
        ValueError naming them."""
        return _one_constraint(self.constraints())

    def constraints(self) -> dict[str, JSONObject | JSONSchema | Regex]:
        """Each structured-output field given, by name: vLLM's extensions."""
        found: dict[str, Any] = {}
        if self.guided_regex is not None:
            found["guided_regex"] = Regex(
                type="regex", pattern=self.guided_regex, field="guided_regex"
            )
        if self.guided_json is not None:
            found["guided_json"] = JSONSchema(
                type="json_schema", json_schema=self.guided_json, field="guided_json"
            )
        if self.guided_choice is not None:
            pattern = "|".join(map(_literal, self.guided_choice))
            found["guided_choice"] = Regex(type="regex", pattern=pattern, field="guided_choice")
        if self.structured_outputs is not None:
            found["structured_outputs"] = self.structured_outputs.constraint()
        return found

    @field_validator("min_tokens")
    @classmethod
    def _min_within_max(cls, value: int | None, info: ValidationInfo) -> int | None:
        return _at_most(value, info.data.get("max_tokens"), "max_tokens")

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: up to 4 non-empty strings")
        return stops

    def requested_max_tokens(self) -> int | None:
        """The token budget the client sent (None: none)."""
        return self.max_tokens

    def max_tokens_field(self) -> str:
        """The name of the field that holds the client's token budget, for error messages
        (``ContextLengthError.message_for``)."""
        return "max_tokens"

    def to_generation_params(self, default_max_tokens: int) -> gen.GenerationParams:
        """The engines' typed params (as vLLM's ``to_sampling_params``). OpenAI samples at
        temperature 1 unless told 0; without ``max_tokens`` the route's default applies, cut
        to what the model's context has room for. Raises ValueError for bad ``stop``."""
        return self._generation_params(self.requested_max_tokens(), default_max_tokens)

    def generation_params(self, max_tokens: int | None, default: int) -> dict[str, Any]:
        """The skill's generation params as a dict (`to_generation_params`, defaults left out)."""
        return self._generation_params(max_tokens, default).model_dump(exclude_defaults=True)

    def _generation_params(self, max_tokens: int | None, default: int) -> gen.GenerationParams:
        temperature = 1.0 if self.temperature is None else self.temperature
        params: dict[str, Any] = {
            # no budget given: the default, or min_tokens when that asks for more
            "max_new_tokens": max_tokens or max(default, self.min_tokens or 0),
            "fit_context": max_tokens is None,
            "stop": self.stops(),
            "ignore_eos": self.ignore_eos,
        }
        if temperature > 0:
            params.update(do_sample=True, temperature=temperature)
            if self.top_p is not None:
                params["top_p"] = self.top_p
            if self.top_k is not None and self.top_k > 0:
                params["top_k"] = self.top_k
        if self.repetition_penalty is not None:
            params["repetition_penalty"] = self.repetition_penalty
        if self.seed is not None:
            params["seed"] = self.seed
        if self.min_tokens:
            params["min_new_tokens"] = self.min_tokens
        params.update(self.logprob_params())
        params["constraint"] = self.constraint()
        return gen.GenerationParams(**params)

    def logprob_params(self) -> dict[str, int]:
        """The engines' ``logprobs``/``prompt_logprobs`` for this request (none by default)."""
        return {}


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        ...,
        description="one prompt or a list of prompts; each a string or token ids (as OpenAI)",
    )
    echo: bool = Field(False, description="the prompt before the completion (with logprobs: its)")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=5,
        description="each token's logprob and this many most likely alternatives (OpenAI's "
        "legacy shape: tokens, token_logprobs, top_logprobs, text_offset)",
    )
    suffix: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.suffix is not None:
            raise ValueError("suffix is not supported")
        if isinstance(self.prompt, list) and (not self.prompt or [] in self.prompt):
            raise ValueError("prompt must not be empty")
        return self

    def logprob_params(self) -> dict[str, int]:
        """``logprobs`` alternatives per generated token; with ``echo``, per prompt token too
        (as vLLM: the prompt's logprobs are echoed with it)."""
        if self.logprobs is None:
            return {}
        if not self.echo:
            return {"logprobs": self.logprobs}
        return {"logprobs": self.logprobs, "prompt_logprobs": self.logprobs}

    def prompts(self) -> list[str] | list[list[int]]:
        """One batch: a string or a flat list of token ids is one prompt."""
        if isinstance(self.prompt, str) or all(isinstance(t, int) for t in self.prompt):
            return [self.prompt]  # type: ignore[list-item]
        return list(self.prompt)  # type: ignore[arg-type]


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(..., description="a data URL (data:image/png;base64,...) or base64")
    detail: str | None = None


class ContentPart(BaseModel):
    """One part of a message's content, as OpenAI sends it (``text``, ``image_url``,
    ``input_audio``...). Text, and images for vision-language models (``image_url``: a data
    URL or base64; an http(s) URL only from ``allowed_image_url_hosts``: host/serving/vision.py);
    other parts are refused by name (`ChatMessage._text_parts`)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(Request):
    name: NonEmptyStr
    arguments: str = Field(..., description="the call's arguments: a JSON object, as text")


class ToolCall(Request):
    """A call an assistant message made (OpenAI's ``tool_calls`` items)."""

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="an assistant's calls")
    tool_call_id: str | None = Field(None, description="the call a tool message answers")

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: str | list[ContentPart] | None) -> Any:
        for index, part in enumerate(content if isinstance(content, list) else []):
            if part.type == "image_url":
                if part.image_url is None:
                    raise ValueError(f"part {index} is an image_url part without 'image_url'")
                continue  # for a vision-language model (host/serving/vision.py)
            if part.type != "text":
                raise ValueError(
                    f"part {index} is {part.type!r}: the chat models served here take text "
                    "and images (image_url) only"
                )
            if part.text is None:
                raise ValueError(f"part {index} is a text part without 'text'")
        return content

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class JSONSchemaFormat(Request):
    """``response_format.json_schema``: the schema the answer must validate against."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(Request):
    """OpenAI's ``text``, ``json_object`` and ``json_schema``; and TGI's chat shape,
    ``{"type": "json" | "regex", "value": ...}`` (`Grammar`; ``json_object`` or
    ``json_schema`` with a ``value`` are TGI's too)."""

    type: Literal["text", "json_object", "json_schema", "json", "regex"]
    json_schema: JSONSchemaFormat | None = None
    value: Any = Field(None, description="TGI's shape: the JSON schema or the regex")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.value is not None and self.type != "text":
            Grammar.model_validate({"type": self.type, "value": self.value})
        elif self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema")
        elif self.type in ("json", "regex"):
            raise ValueError(f"response_format of type {self.type} needs value (TGI's shape)")
        return self

    def constraint(self) -> JSONObject | JSONSchema | Regex | None:
        if self.value is not None and self.type != "text":
            grammar = Grammar.model_validate({"type": self.type, "value": self.value})
            return grammar.constraint("response_format.value")
        if self.type == "json_object":
            return JSONObject(type="json_object", field="response_format")
        if self.type == "json_schema" and self.json_schema is not None:
            return JSONSchema(
                type="json_schema",
                json_schema=self.json_schema.schema_,
                field="response_format.json_schema.schema",
            )
        return None


class FunctionDefinition(Request):
    name: str = Field(..., pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Request):
    name: NonEmptyStr


class NamedToolChoice(Request):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="OpenAI's newer name for max_tokens (wins)"
    )
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="unset: auto with tools, none without"
    )
    parallel_tool_calls: bool | None = Field(None, description="unset: true")
    response_format: ResponseFormat | None = None
    logprobs: bool | None = Field(None, description="each generated token's logprob")
    top_logprobs: int | None = Field(
        None, ge=0, le=gen.MAX_LOGPROBS, description="with logprobs: this many alternatives"
    )

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not names:
            raise ValueError("tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        return self

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def logprob_params(self) -> dict[str, int]:
        return {"logprobs": self.top_logprobs or 0} if self.logprobs else {}

    @field_validator("max_completion_tokens")
    @classmethod
    def _above_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        _at_most(info.data.get("min_tokens"), value, "max_completion_tokens")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def max_tokens_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def chat(self) -> list[dict[str, Any]]:
        """The messages as chat templates take them: an assistant's ``tool_calls`` with their
        arguments as objects, a tool message with the name of the function it answers."""
        role = {"developer": "system"}
        names: dict[str, str] = {}
        messages: list[dict[str, Any]] = []
        for m in self.messages:
            message: dict[str, Any] = {"role": role.get(m.role, m.role), "content": m.text()}
            if m.tool_calls:
                message["tool_calls"] = [tool_call(call) for call in m.tool_calls]
                names.update((call.id, call.function.name) for call in m.tool_calls)
            if m.role == "tool":
                message["tool_call_id"] = m.tool_call_id or ""
                message["name"] = m.name or names.get(m.tool_call_id or "", "")
            messages.append(message)
        return messages

    def tool_mode(self) -> str | None:
        """How tools take part: None (no tools, or ``none``), ``auto`` (the model may call:
        its own output is parsed), ``required`` or a function's name (the output is held to
        the call's JSON schema)."""
        if not self.tools or self.tool_choice == "none":
            return None
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return self.tool_choice or "auto"

    def rendered_tools(self) -> list[dict[str, Any]] | None:
        """The tools the chat template renders (none with ``tool_choice`` none, as vLLM)."""
        if self.tool_mode() is None:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools or []]

    def _generation_params(self, max_tokens: int | None, default: int) -> gen.GenerationParams:
        """With ``response_format``'s constraint, and the tools the template renders (the
        serving layer holds ``required`` and named tool choices to their calls' schema)."""
        params = super()._generation_params(max_tokens, default)
        return params.model_copy(update={"tools": self.rendered_tools()})

    def constraints(self) -> dict[str, JSONObject | JSONSchema | Regex]:
        """``response_format``'s constraint and vLLM's extensions'."""
        found = super().constraints()
        given = self.response_format.constraint() if self.response_format else None
        return found if given is None else {"response_format": given, **found}


def tool_call(call: ToolCall) -> dict[str, Any]:
    """An assistant's call as chat templates take it: its arguments as an object (arguments
    that are not a JSON object stay text)."""
    try:
        arguments: Any = json.loads(call.function.arguments)
    except ValueError:
        arguments = call.function.arguments
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class TopLogprob(BaseModel):
    """A token's logprob as OpenAI reports it: its text, and its UTF-8 bytes (a token may hold
    part of a character; vLLM's ``ChatCompletionLogProb``)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    """A generated token's logprob and the most likely tokens at its position (vLLM's
    ``ChatCompletionLogProbsContent``)."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """A chat choice's (or a chunk's) logprobs: one entry per token of its content."""

    content: list[ChatTokenLogprob] | None = None
    refusal: None = None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape (vLLM's ``CompletionLogProbs``): per token its text, its
    logprob (None: a prompt's first token), ``{text: logprob}`` of the sampled token and the
    most likely ones, and its offset in the choice's text."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed call: the first has its id, type and name, the rest argument
    text (OpenAI's shape)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

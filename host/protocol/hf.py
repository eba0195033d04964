"""Hugging Face API models: the Inference API body, TGI's generate and stream, TEI's embed."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hfskills.skillset.runtime import constraints
from hfskills.skillset.runtime import generation as gen

#: TGI's default ``--max-top-n-tokens``: the most alternatives ``top_n_tokens`` may ask for.
MAX_TOP_N_TOKENS = 5

#: Where a TGI request's grammar is: its compile errors name it.
GRAMMAR_FIELD = "parameters.grammar"

#: Hugging Face pipeline names <-> hfskills task names.
HF_TASKS = {
    "feature-extraction": "text_embedding",
    "fill-mask": "fill_mask",
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
    "text-generation": "text_generation",
    "text2text-generation": "text2text_generation",
    "summarization": "text2text_generation",
    "translation": "text2text_generation",
    "image-classification": "image_classification",
    "object-detection": "object_detection",
    "zero-shot-image-classification": "zero_shot_image_classification",
    "image-feature-extraction": "image_embedding",
    "zero-shot-object-detection": "zero_shot_object_detection",
    "depth-estimation": "depth_estimation",
    "image-segmentation": "image_segmentation",
    "text-to-audio": "text_to_audio",
    "text-to-speech": "text_to_audio",
    "automatic-speech-recognition": "automatic_speech_recognition",
    "audio-classification": "audio_classification",
    "image-to-text": "image_to_text",
}


def _non_finite(value: Any, where: str) -> str | None:
    """Where a NaN or an infinity hides in a JSON value (Python's JSON reads ``NaN``,
    ``Infinity``), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        found = (_non_finite(v, f"{where}.{k}") for k, v in value.items())
    elif isinstance(value, list):
        found = (_non_finite(v, f"{where}[{i}]") for i, v in enumerate(value))
    else:
        return None
    return next((w for w in found if w is not None), None)


class InferenceRequest(BaseModel):
    """``POST /models/{name}``: ``{"inputs", "parameters", "stream"}``; feature extraction also
    takes its parameters at the top level (``normalize``, ``truncate``, ``dimensions``). No
    parameter may be NaN or infinite."""

    model_config = ConfigDict(extra="allow")

    inputs: Any
    parameters: dict[str, Any] | None = None
    stream: bool = False
    options: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _finite(self) -> InferenceRequest:
        where = _non_finite(self.parameters, "parameters") or _non_finite(
            dict(self.model_extra or {}), "body"
        )
        if where is not None:
            where = where.removeprefix("body.")
            raise PydanticCustomError(
                "finite_number", "{where} must be a finite number", {"where": where}
            )
        return self


def _refused(value: Any, info: ValidationInfo) -> None:
    """TGI parameters without an hfskills meaning: refused unless null, by name."""
    if value is not None:
        raise PydanticCustomError(
            "unsupported_parameter",
            "{field} is not supported; leave it out",
            {"field": info.field_name},
        )
    return None


class Grammar(BaseModel):
    """TGI's grammar (``parameters.grammar``; TGI's chat ``response_format`` too):
    ``{"type": "json", "value": <JSON schema>}`` (the schema as an object or as JSON text;
    ``json_object`` is TGI's alias), ``{"type": "regex", "value": "<regex>"}``, or
    ``{"type": "json_schema", "value": {"name": ..., "schema": <JSON schema>}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["json", "json_object", "regex", "json_schema"]
    value: Any = Field(
        ..., description="json: a JSON schema (object or JSON text); regex: the pattern"
    )

    @field_validator("value")
    @classmethod
    def _shape(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind == "regex":
            if not isinstance(value, str) or not value:
                raise ValueError("a regex grammar's value is the pattern, a non-empty string")
            return value
        if kind == "json_schema":
            if not isinstance(value, dict) or not isinstance(value.get("schema"), dict):
                raise ValueError("a json_schema grammar's value is {name, schema: {...}}")
            return value
        if isinstance(value, str):  # TGI takes the schema as JSON text too
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("a json grammar's value is a JSON schema: not JSON") from None
        if not isinstance(value, dict):
            raise ValueError("a json grammar's value is a JSON schema (an object)")
        return value

    def constraint(self, field: str) -> constraints.JSONSchema | constraints.Regex:
        """The engines' constraint; compile errors name ``field``."""
        if self.type == "regex":
            return constraints.Regex(type="regex", pattern=self.value, field=field)
        schema = self.value["schema"] if self.type == "json_schema" else self.value
        return constraints.JSONSchema(type="json_schema", json_schema=schema, field=field)


class GenerateParameters(BaseModel):
    """TGI's generation parameters (those without an hfskills meaning are refused if set).

    Ranges as TGI's, where hfskills has them: ``temperature`` 0 (greedy) to 100,
    ``top_p`` (0, 1], ``top_k`` 0 (every token) and up, ``repetition_penalty`` 0.01..100 (1: no
    penalty), ``seed`` a u64, ``max_new_tokens`` at most what the model's context has room for
    after the prompt (and 1,000,000 on any model). NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=gen.MAX_NEW_TOKENS,
        description="at most the model's context less the prompt's tokens (else a 400); "
        "unset: 100, cut to what the context has room for",
    )
    do_sample: bool | None = None
    temperature: float | None = Field(
        None, ge=0.0, le=gen.MAX_TEMPERATURE, description="0 (or below 1e-5): greedy"
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=gen.MAX_TOP_K, description="0: every token")
    repetition_penalty: float | None = Field(
        None,
        ge=gen.MIN_REPETITION_PENALTY,
        le=gen.MAX_REPETITION_PENALTY,
        description="1: no penalty",
    )
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(None, ge=0, le=gen.MAX_SEED)
    details: bool = Field(False, description="details: each token's id, text and logprob")
    return_full_text: bool | None = False
    decoder_input_details: bool = Field(
        False, description="with details: the prompt's tokens and logprobs (details.prefill)"
    )
    truncate: int | None = None
    watermark: bool = False
    best_of: int | None = Field(None, ge=1, le=1)
    typical_p: None = Field(None, description="not supported")
    frequency_penalty: None = Field(None, description="not supported")
    top_n_tokens: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_N_TOKENS,
        description="with details: the most likely tokens at each position (details.top_tokens)",
    )
    grammar: Grammar | None = Field(
        None,
        description="the output held to a JSON schema or a regex (grammar-constrained decoding)",
    )
    adapter_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="a LoRA adapter of the model (its served name: --lora-modules, adapters)",
    )

    _refused = field_validator("typical_p", "frequency_penalty", mode="before")(_refused)

    def to_generation_params(self, default_max_tokens: int) -> gen.GenerationParams:
        """The engines' typed params. Sampling when ``do_sample`` says so, else when any of
        ``temperature``, ``top_p``, ``top_k`` is given (as TGI); without ``max_new_tokens``
        the default applies, cut to what the model's context has room for."""
        sampling = (
            self.do_sample
            if self.do_sample is not None
            else any(v is not None for v in (self.temperature, self.top_p, self.top_k))
        )
        params: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens or default_max_tokens,
            "fit_context": self.max_new_tokens is None,
            "stop": self.stop,
            "do_sample": bool(sampling),
        }
        for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None and (sampling or name in ("repetition_penalty", "seed")):
                params[name] = value
        if self.details or self.top_n_tokens:  # logprobs cost: computed only for details
            params["logprobs"] = self.top_n_tokens or 0
        if self.details and self.decoder_input_details:
            params["prompt_logprobs"] = 0
        if self.grammar is not None:
            params["constraint"] = self.grammar.constraint(GRAMMAR_FIELD)
        if self.adapter_id is not None:  # checked against the model's adapters by the service
            params["adapter"] = self.adapter_id
        return gen.GenerationParams(**params)

    def generation_params(self, default_max_new_tokens: int) -> dict[str, Any]:
        """`to_generation_params` as the skill's params dict (defaults left out)."""
        return self.to_generation_params(default_max_new_tokens).model_dump(exclude_defaults=True)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False
    model: str | None = Field(
        None,
        min_length=1,
        description="hfskills: a model, route or auto instead of the default model of the task",
    )


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class PrefillToken(BaseModel):
    """A prompt token in ``details.prefill``: the first has no logprob (nothing predicts it)."""

    id: int
    text: str
    logprob: float | None = None


FinishReason = Literal["length", "eos_token", "stop_sequence"]


class Details(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] | None = None


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamDetails(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    input_length: int
    seed: int | None = None


class StreamResponse(BaseModel):
    index: int
    token: Token
    generated_text: str | None = None
    details: StreamDetails | None = None
    top_tokens: list[Token] | None = None


class Info(BaseModel):
    """TGI's ``GET /info`` (the fields clients read)."""

    model_id: str
    model_dtype: str
    model_device_type: str
    model_pipeline_tag: str = "text-generation"
    max_input_tokens: int
    max_total_tokens: int
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int = 16
    validation_workers: int = 1
    router: str = "hfskills"
    version: str
    docker_label: str | None = None


class EmbedRequest(BaseModel):
    """TEI's ``POST /embed``."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False
    dimensions: int | None = Field(None, ge=1)
    prompt_name: None = None
    truncation_direction: Literal["Right", "right"] | None = None
    model: str | None = Field(
        None,
        min_length=1,
        description="hfskills: a model, route or auto instead of the default model of the task",
    )

"""Hugging Face API models: the Inference API body, TGI's generate and stream, TEI's embed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    "automatic-speech-recognition": "automatic_speech_recognition",
    "audio-classification": "audio_classification",
    "image-to-text": "image_to_text",
}


class InferenceRequest(BaseModel):
    """``POST /models/{name}``: ``{"inputs", "parameters", "stream"}``; feature extraction also
    takes its parameters at the top level (``normalize``, ``truncate``, ``dimensions``)."""

    model_config = ConfigDict(extra="allow")

    inputs: Any
    parameters: dict[str, Any] | None = None
    stream: bool = False
    options: dict[str, Any] | None = None


class GenerateParameters(BaseModel):
    """TGI's generation parameters (those without an hfskills meaning are refused if set)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(None, ge=1)
    do_sample: bool | None = None
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = None
    details: bool = False
    return_full_text: bool | None = False
    decoder_input_details: bool = False
    truncate: int | None = None
    watermark: bool = False
    best_of: int | None = Field(None, ge=1, le=1)
    typical_p: None = None
    frequency_penalty: None = None
    top_n_tokens: None = None
    grammar: None = None
    adapter_id: None = None

    def generation_params(self, default_max_new_tokens: int) -> dict[str, Any]:
        sampling = (
            self.do_sample
            if self.do_sample is not None
            else any(v is not None for v in (self.temperature, self.top_p, self.top_k))
        )
        params: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens or default_max_new_tokens,
            "stop": self.stop,
            "do_sample": bool(sampling),
        }
        for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None and (sampling or name in ("repetition_penalty", "seed")):
                params[name] = value
        return params


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


FinishReason = Literal["length", "eos_token", "stop_sequence"]


class Details(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[Token] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)


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
    top_tokens: None = None


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

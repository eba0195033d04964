"""Hugging Face serving: the Inference API per task, TGI's generate and stream, TEI's embed.

Answers have the shapes `huggingface_hub.InferenceClient`, TGI and TEI clients parse: a single
input gets the pipeline's single-input shape, a list of inputs one result each; TGI's stream
sends one event per token, the last with ``generated_text`` and ``details``, and a failure as
``{"error", "error_type"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from hfskills.skillset.runtime import constraints
from hfskills.skillset.runtime.errors import InvalidInput
from hfskills.skillset.runtime.generation import GenerationParams, TokenEvent

from ..errors import APIError, validation_message
from ..inference import InferenceService, Stream
from ..protocol import hf
from ..scheduler import RequestContext
from ..workers import Params
from .common import FastJSONResponse, client_words, error_event, event_stream, sse
from .logprobs import tgi_details, tgi_token, tgi_top

TGI_DEFAULT_MAX_NEW_TOKENS = 100
#: The engines' logprob parameters in TGI's words (errors name what the client sent).
TGI_LOGPROBS = {"logprobs": "top_n_tokens", "prompt_logprobs": "decoder_input_details"}


@dataclass(frozen=True)
class Target:
    """One Inference API call's model, task and context: what every per-task function runs."""

    service: InferenceService
    name: str
    task: str
    ctx: RequestContext
    pipeline: str = ""  # the pipeline name in the path (summarization, translation...)

    async def run(self, inputs: Any, params: Params) -> list[Any]:
        if inputs is None or inputs == [] or inputs == "":
            raise APIError(400, "inputs must not be empty", param="inputs")
        batch = inputs if isinstance(inputs, list) else [inputs]
        return (await self.service.run(self.name, self.task, batch, params, self.ctx)).results


def parameters(payload: hf.InferenceRequest) -> dict[str, Any]:
    return {k: v for k, v in (payload.parameters or {}).items() if v is not None}


def _single_or_all(inputs: Any, results: list[Any]) -> Any:
    return results if isinstance(inputs, list) else results[0]


# -- the Inference API, per task ---------------------------------------------------------------


async def _feature_extraction(t: Target, p: hf.InferenceRequest) -> Response:
    params = {**parameters(p), **{k: v for k, v in (p.model_extra or {}).items() if v is not None}}
    params.pop("truncation_direction", None)
    return FastJSONResponse(await t.run(p.inputs, params))  # [[f32]] as TEI


async def _per_input(t: Target, p: hf.InferenceRequest) -> Response:
    """Tasks whose single-input answer is the first result (a list, or one object)."""
    params = parameters(p)
    if t.task == "question_answering" and params.get("top_k") in (None, 1):
        params.pop("top_k", None)
    return FastJSONResponse(_single_or_all(p.inputs, await t.run(p.inputs, params)))


async def _text_classification(t: Target, p: hf.InferenceRequest) -> Response:
    return FastJSONResponse(await t.run(p.inputs, parameters(p)))  # [[{label, score}]]


async def _generated(t: Target, p: hf.InferenceRequest) -> Response:
    """text2text and image-to-text: ``[{"generated_text"}]`` (summary/translation keys too)."""
    params = await tgi_params(generation_parameters(p.parameters))
    results = await t.run(p.inputs, params)
    key = {"summarization": "summary_text", "translation": "translation_text"}.get(
        t.pipeline, "generated_text"
    )
    return FastJSONResponse([{key: r["text"]} for r in results])


async def _text_generation(t: Target, p: hf.InferenceRequest) -> Response:
    if not isinstance(p.inputs, str) or not p.inputs:
        raise APIError(422, "inputs must be a non-empty string", param="inputs")
    body = hf.GenerateRequest(
        inputs=p.inputs, parameters=generation_parameters(p.parameters), stream=p.stream
    )
    if body.stream:
        return await tgi_stream(t.service, t.name, body, t.ctx, "/generate_stream")
    return FastJSONResponse([await tgi_generate(t.service, t.name, body, t.ctx)])


async def _text_to_audio(t: Target, p: hf.InferenceRequest) -> Response:
    """One text: the WAV file itself (``audio/wav``, what `InferenceClient.text_to_speech`
    returns as bytes); a list: ``[{audio: base64 WAV, sampling_rate}]``."""
    results = await t.run(p.inputs, parameters(p))
    if isinstance(p.inputs, list):
        return FastJSONResponse(results)
    return Response(base64.b64decode(results[0]["audio"]), media_type="audio/wav")


TASKS: dict[str, Callable[[Target, hf.InferenceRequest], Awaitable[Response]]] = {
    "text_embedding": _feature_extraction,
    "image_embedding": _feature_extraction,
    "text_classification": _text_classification,
    "token_classification": _per_input,
    "fill_mask": _per_input,
    "question_answering": _per_input,
    "image_classification": _per_input,
    "object_detection": _per_input,
    "zero_shot_image_classification": _per_input,
    "zero_shot_object_detection": _per_input,  # [{label, score, box}]
    "depth_estimation": _per_input,  # {predicted_depth, depth: base64 PNG}
    "image_segmentation": _per_input,  # [{label, score, mask: base64 PNG}]
    "audio_classification": _per_input,
    "automatic_speech_recognition": _per_input,
    "text_generation": _text_generation,
    "text2text_generation": _generated,
    "image_to_text": _generated,
    "text_to_audio": _text_to_audio,
}


async def inference(target: Target, payload: hf.InferenceRequest) -> Response:
    """``POST /models/{name}`` (or ``/pipeline/{pipeline}``) for a resolved model and task."""
    return await TASKS[target.task](target, payload)


# -- TGI ---------------------------------------------------------------------------------------


def generation_parameters(parameters: dict[str, Any] | None) -> hf.GenerateParameters:
    """The Inference API body's ``parameters`` as TGI's; errors name ``parameters.<field>``
    (as ``/generate``'s)."""
    clean = {k: v for k, v in (parameters or {}).items() if v is not None}
    try:
        return hf.GenerateParameters.model_validate(clean)
    except ValidationError as exc:
        field, message = validation_message(exc)
        where = f"parameters.{field}" if field else "parameters"
        raise APIError(422, f"{where}: {message.removeprefix(f'{field}: ')}", param=where) from None


async def tgi_params(parameters: hf.GenerateParameters) -> GenerationParams:
    """The engines' params; a grammar is compiled here, once (off the event loop: a large
    schema takes up to a second, docs/performance.md), and one that cannot be is a 422 naming
    ``parameters.grammar``, as TGI's validation errors."""
    params = parameters.to_generation_params(TGI_DEFAULT_MAX_NEW_TOKENS)
    if params.constraint is not None:
        try:
            await asyncio.to_thread(constraints.grammar, params.constraint)
        except InvalidInput as exc:
            raise APIError(422, exc.message, param=exc.param) from None
    return params


@contextlib.contextmanager
def _grammar_refusals() -> Iterator[None]:
    """An engine's own grammar compiler (GenAI's) refusing what llguidance took: TGI's 422."""
    try:
        yield
    except InvalidInput as exc:
        if exc.param != hf.GRAMMAR_FIELD:
            raise
        raise APIError(422, exc.message, param=exc.param) from None


def _finish(result: dict[str, Any]) -> str:
    if result["finish_reason"] == "length":
        return "length"
    return "stop_sequence" if result.get("stop_sequence") else "eos_token"


async def tgi_generate(
    service: InferenceService, name: str, body: hf.GenerateRequest, ctx: RequestContext
) -> dict[str, Any]:
    params = await tgi_params(body.parameters)
    with _grammar_refusals(), client_words(TGI_LOGPROBS):
        outcome = await service.run(name, "text_generation", [body.inputs], params, ctx)
    result = outcome.results[0]
    text = result["text"] + (result.get("stop_sequence") or "")  # TGI keeps the stop text
    if body.parameters.return_full_text:  # the prompt the model got (safety may redact it)
        text = (outcome.inputs[0] if outcome.inputs else body.inputs) + text
    response = hf.GenerateResponse(generated_text=text)
    if body.parameters.details:
        tokenizer = outcome.loaded.endpoint.processor
        tokens, prefill, top = tgi_details(result, tokenizer, body.parameters.top_n_tokens)
        response.details = hf.Details(
            finish_reason=_finish(result),
            generated_tokens=len(tokens),
            seed=params.seed,
            prefill=prefill,
            tokens=tokens,
            top_tokens=top,
        )
    answer = response.model_dump(mode="json", exclude_none=True)
    for token in (answer.get("details") or {}).get("prefill", []):
        token.setdefault("logprob", None)  # the first prompt token's: null, as TGI's
    return answer


async def tgi_stream(
    service: InferenceService,
    name: str,
    body: hf.GenerateRequest,
    ctx: RequestContext,
    path: str,
) -> Response:
    if body.parameters.decoder_input_details:  # as TGI: the prefill is no stream's
        raise APIError(
            422,
            "decoder_input_details: true is not supported when streaming tokens",
            param="decoder_input_details",
        )
    params = await tgi_params(body.parameters)
    with _grammar_refusals(), client_words(TGI_LOGPROBS):
        stream = await service.open_stream(name, "text_generation", body.inputs, params, ctx)
    return event_stream(_tgi_events(stream, params.seed, path))


async def _tgi_events(stream: Stream, seed: int | None, path: str) -> AsyncIterator[str]:
    """TGI's stream: one event per token (with its logprob and ``top_tokens`` when asked);
    the last also carries generated_text and details."""
    pending: dict[str, Any] | None = None
    index = 0
    tokenizer = stream.loaded.endpoint.processor
    try:
        async for event in stream.events:
            if isinstance(event, TokenEvent):
                if pending is not None:
                    yield sse(pending)
                index += 1
                logprob = event.logprob
                pending = hf.StreamResponse(
                    index=index,
                    token=tgi_token(
                        tokenizer,
                        event.token_id,
                        None if logprob is None else logprob.logprob,
                        event.text,
                    ),
                    top_tokens=tgi_top(tokenizer, logprob) if logprob and logprob.top else None,
                ).model_dump(mode="json")
                continue
            last = pending or hf.StreamResponse(
                index=index + 1, token=hf.Token(id=0, text="", special=True)
            ).model_dump(mode="json")
            last["token"]["text"] += event.text
            last["generated_text"] = event.generated_text + (event.stop_sequence or "")
            last["details"] = hf.StreamDetails(
                finish_reason=_finish(event.result()),
                generated_tokens=event.generated_tokens,
                input_length=event.prompt_tokens,
                seed=seed,
            ).model_dump(mode="json")
            yield sse(last)
            return
    except Exception as exc:
        yield error_event(path, exc)


# -- TEI ---------------------------------------------------------------------------------------


async def embed(
    service: InferenceService, name: str, body: hf.EmbedRequest, ctx: RequestContext
) -> Response:
    """TEI's ``/embed``: ``[[f32]]``."""
    params: dict[str, Any] = {"normalize": body.normalize, "truncate": body.truncate}
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    target = Target(service, name, "text_embedding", ctx)
    return FastJSONResponse(await target.run(body.inputs, params))

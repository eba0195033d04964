"""Hugging Face-compatible routes: the Inference API (``/models/{name}``), TGI and TEI.

``POST /models/{name}`` takes ``{"inputs", "parameters", "stream"}`` (or a raw image/audio
body) and dispatches on the model's task; ``/models/{name}/pipeline/{task}`` names the task.
Responses have the shapes `huggingface_hub.InferenceClient` parses: a single input gets the
pipeline's single-input shape, a list of inputs one result each. TGI's ``/generate``,
``/generate_stream`` and ``/info`` and TEI's ``/embed`` serve the default model of their task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import hfskills

from ..errors import TGI_TYPES, APIError, from_exception
from ..inference import Stream
from ..openapi import protocol
from ..protocol import hf
from .common import FastJSONResponse, context, event_stream, host, json_object, parse, sse
from .openai import chat_completions

TGI_DEFAULT_MAX_NEW_TOKENS = 100
TaskRoute = Callable[[Request, str, str, hf.InferenceRequest], Awaitable[Response]]


async def _payload(request: Request) -> hf.InferenceRequest:
    """A JSON body, or a raw image/audio body (the client sends bytes when there are no
    parameters, often without a content type)."""
    raw = await request.body()
    if not raw:
        raise APIError(400, "the request body is empty", code="invalid_input")
    content_type = request.headers.get("content-type", "")
    if "json" in content_type or raw.lstrip()[:1] == b"{":
        return hf.InferenceRequest.model_validate(json_object(raw))
    return hf.InferenceRequest(inputs=raw)


def _params(payload: hf.InferenceRequest) -> dict[str, Any]:
    return {k: v for k, v in (payload.parameters or {}).items() if v is not None}


async def _run(
    request: Request, name: str, task: str, inputs: Any, params: dict[str, Any]
) -> list[Any]:
    if inputs is None or inputs == [] or inputs == "":
        raise APIError(400, "inputs must not be empty", param="inputs")
    batch = inputs if isinstance(inputs, list) else [inputs]
    outcome = await host(request).service.run(name, task, batch, params, ctx=context(request))
    return outcome.results


def _single_or_all(inputs: Any, results: list[Any]) -> Any:
    return results if isinstance(inputs, list) else results[0]


# -- per task ----------------------------------------------------------------------------------


async def _feature_extraction(
    request: Request, name: str, task: str, p: hf.InferenceRequest
) -> Response:
    params = {**_params(p), **{k: v for k, v in (p.model_extra or {}).items() if v is not None}}
    params.pop("truncation_direction", None)
    return FastJSONResponse(await _run(request, name, task, p.inputs, params))  # [[f32]] as TEI


async def _per_input(request: Request, name: str, task: str, p: hf.InferenceRequest) -> Response:
    """Tasks whose single-input answer is the first result (a list, or one object)."""
    params = _params(p)
    if task == "question_answering" and params.get("top_k") in (None, 1):
        params.pop("top_k", None)
    results = await _run(request, name, task, p.inputs, params)
    return FastJSONResponse(_single_or_all(p.inputs, results))


async def _text_classification(
    request: Request, name: str, task: str, p: hf.InferenceRequest
) -> Response:
    return FastJSONResponse(
        await _run(request, name, task, p.inputs, _params(p))
    )  # [[{label, score}]]


async def _generated(request: Request, name: str, task: str, p: hf.InferenceRequest) -> Response:
    """text2text and image-to-text: ``[{"generated_text"}]`` (summary/translation keys too)."""
    parameters = _generation_parameters(p.parameters)
    results = await _run(
        request, name, task, p.inputs, parameters.generation_params(TGI_DEFAULT_MAX_NEW_TOKENS)
    )
    pipeline = request.path_params.get("task", "")
    key = {"summarization": "summary_text", "translation": "translation_text"}.get(
        pipeline, "generated_text"
    )
    return FastJSONResponse([{key: r["text"]} for r in results])


async def _text_generation(
    request: Request, name: str, task: str, p: hf.InferenceRequest
) -> Response:
    if not isinstance(p.inputs, str) or not p.inputs:
        raise APIError(422, "inputs must be a non-empty string", param="inputs")
    generate = hf.GenerateRequest(
        inputs=p.inputs, parameters=_generation_parameters(p.parameters), stream=p.stream
    )
    if generate.stream:
        return await _tgi_stream(request, name, generate)
    return FastJSONResponse([await _tgi_generate(request, name, generate)])


TASKS: dict[str, TaskRoute] = {
    "text_embedding": _feature_extraction,
    "image_embedding": _feature_extraction,
    "text_classification": _text_classification,
    "token_classification": _per_input,
    "fill_mask": _per_input,
    "question_answering": _per_input,
    "image_classification": _per_input,
    "object_detection": _per_input,
    "zero_shot_image_classification": _per_input,
    "audio_classification": _per_input,
    "automatic_speech_recognition": _per_input,
    "text_generation": _text_generation,
    "text2text_generation": _generated,
    "image_to_text": _generated,
}


async def _dispatch(request: Request, task: str | None) -> Response:
    model, task = host(request).loader.resolve(request.path_params["name"], task)
    payload = await _payload(request)
    return await TASKS[task](request, model.name, task, payload)


@protocol(hf.InferenceRequest)
async def inference(request: Request) -> Response:
    """Run a model on its (first) task, Inference API style."""
    return await _dispatch(request, None)


@protocol(hf.InferenceRequest)
async def pipeline(request: Request) -> Response:
    """Run a model on an explicitly named pipeline task."""
    name = request.path_params["task"]
    if name not in hf.HF_TASKS:
        raise APIError(404, f"unknown pipeline task {name!r}; known: {sorted(hf.HF_TASKS)}")
    return await _dispatch(request, hf.HF_TASKS[name])


async def model_chat(request: Request) -> Response:
    """OpenAI chat completions for the model in the path (what InferenceClient posts to)."""
    return await chat_completions(request, model_name=request.path_params["name"])


# -- TGI ---------------------------------------------------------------------------------------


def _generation_parameters(parameters: dict[str, Any] | None) -> hf.GenerateParameters:
    clean = {k: v for k, v in (parameters or {}).items() if v is not None}
    return hf.GenerateParameters.model_validate(clean)


def _tgi_finish(result: dict[str, Any]) -> str:
    if result["finish_reason"] == "length":
        return "length"
    return "stop_sequence" if result.get("stop_sequence") else "eos_token"


async def _tgi_generate(request: Request, name: str, body: hf.GenerateRequest) -> dict[str, Any]:
    params = body.parameters.generation_params(TGI_DEFAULT_MAX_NEW_TOKENS)
    outcome = await host(request).service.run(
        name, "text_generation", [body.inputs], params, ctx=context(request)
    )
    result = outcome.results[0]
    text = result["text"] + (result.get("stop_sequence") or "")  # TGI keeps the stop text
    text = (body.inputs + text) if body.parameters.return_full_text else text
    response = hf.GenerateResponse(generated_text=text)
    if body.parameters.details:
        tokenizer = outcome.loaded.endpoint.processor
        tokens = [hf.Token(id=t, text=tokenizer.decode([t])) for t in result["token_ids"]]
        response.details = hf.Details(
            finish_reason=_tgi_finish(result),
            generated_tokens=len(tokens),
            seed=params.get("seed"),
            tokens=tokens,
        )
    return response.model_dump(mode="json", exclude_none=True)


async def _tgi_stream(request: Request, name: str, body: hf.GenerateRequest) -> Response:
    params = body.parameters.generation_params(TGI_DEFAULT_MAX_NEW_TOKENS)
    stream = await host(request).service.open_stream(
        name, "text_generation", body.inputs, params, ctx=context(request)
    )
    return event_stream(_tgi_events(stream, params.get("seed")))


async def _tgi_events(stream: Stream, seed: int | None) -> AsyncIterator[str]:
    """TGI's stream: one event per token; the last also carries generated_text and details.
    A failure midway sends ``{"error", "error_type"}`` and ends the stream."""
    pending: dict[str, Any] | None = None
    index = 0
    try:
        async for event in stream.events:
            if event["finish_reason"] is None:
                if pending is not None:
                    yield sse(pending)
                index += 1
                pending = hf.StreamResponse(
                    index=index, token=hf.Token(id=event["token_id"], text=event["text"])
                ).model_dump(mode="json")
                continue
            last = pending or hf.StreamResponse(
                index=index + 1, token=hf.Token(id=0, text="", special=True)
            ).model_dump(mode="json")
            last["token"]["text"] += event["text"]
            last["generated_text"] = event["generated_text"] + (event.get("stop_sequence") or "")
            last["details"] = hf.StreamDetails(
                finish_reason=_tgi_finish(event),
                generated_tokens=len(event["token_ids"]),
                input_length=event["prompt_tokens"],
                seed=seed,
            ).model_dump(mode="json")
            yield sse(last)
            return
    except Exception as exc:
        status, message, _, _ = from_exception(exc)
        yield sse({"error": message, "error_type": TGI_TYPES.get(status, "generation")})


def _default(request: Request, task: str) -> str:
    name = host(request).defaults().get(task)
    if name is None:
        raise APIError(404, f"no model serves {task}; configure one (default_models)")
    return name


@protocol(hf.GenerateRequest, hf.GenerateResponse)
async def generate(request: Request) -> Response:
    """TGI: generate text with the default text-generation model."""
    body = await parse(request, hf.GenerateRequest)
    return FastJSONResponse(
        await _tgi_generate(request, _default(request, "text_generation"), body)
    )


@protocol(hf.GenerateRequest, hf.StreamResponse)
async def generate_stream(request: Request) -> Response:
    """TGI: stream tokens (SSE) from the default text-generation model."""
    body = await parse(request, hf.GenerateRequest)
    return await _tgi_stream(request, _default(request, "text_generation"), body)


async def _info_for(request: Request, name: str) -> Response:
    loaded = await host(request).loader.get(name, "text_generation")
    endpoint = loaded.endpoint
    from hfskills.skillset.runtime.text import max_length

    limit = max_length(endpoint.processor, endpoint.config)
    return FastJSONResponse(
        hf.Info(
            model_id=loaded.model.name,
            model_dtype=endpoint.dtype,
            model_device_type=endpoint.hardware,
            max_input_tokens=limit,
            max_total_tokens=limit,
            max_concurrent_requests=host(request).settings.workers,
            version=hfskills.__version__,
        ).model_dump(mode="json")
    )


@protocol(None, hf.Info)
async def info(request: Request) -> Response:
    """TGI: describe the default text-generation model."""
    return await _info_for(request, _default(request, "text_generation"))


async def model_info(request: Request) -> Response:
    """TGI's /info for the model in the path."""
    model, _ = host(request).loader.resolve(request.path_params["name"], "text_generation")
    return await _info_for(request, model.name)


# -- TEI ---------------------------------------------------------------------------------------


@protocol(hf.EmbedRequest)
async def embed(request: Request) -> Response:
    """TEI: embed texts with the default embedding model, as ``[[f32]]``."""
    body = await parse(request, hf.EmbedRequest)
    params: dict[str, Any] = {"normalize": body.normalize, "truncate": body.truncate}
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    name = _default(request, "text_embedding")
    return FastJSONResponse(await _run(request, name, "text_embedding", body.inputs, params))


routes = [
    Route("/models/{name:path}/v1/chat/completions", model_chat, methods=["POST"]),
    Route("/models/{name:path}/pipeline/{task}", pipeline, methods=["POST"]),
    Route("/models/{name:path}/info", model_info, methods=["GET"]),
    Route("/models/{name:path}", inference, methods=["POST"]),
    Route("/generate", generate, methods=["POST"]),
    Route("/generate_stream", generate_stream, methods=["POST"]),
    Route("/info", info, methods=["GET"]),
    Route("/embed", embed, methods=["POST"]),
]

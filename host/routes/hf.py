"""Hugging Face-compatible routes: the Inference API (``/models/{name}``), TGI and TEI.

``POST /models/{name}`` takes ``{"inputs", "parameters", "stream"}`` (or a raw image/audio
body) and runs the model's task; ``/models/{name}/pipeline/{task}`` names the task. TGI's
``/generate``, ``/generate_stream`` and ``/info`` and TEI's ``/embed`` serve the default model of
their task, or the body's ``model`` (an hfskills extension). The answers are written by the
serving layer (`host.serving.hf`, and `host.serving.openai` for the per-model chat route).

Wherever a model is named (the path, the body's ``model``, ``default_models``), a route or
``auto`` may be named instead (docs/control-plane.md): the name is kept and the
`InferenceService` chooses the target per request. A route's task on ``/models/{route}`` is its
first target's first task, as for a model; ``auto`` has no task of its own, so it is named with
a pipeline (``/models/auto/pipeline/{task}``) or on a route of one task (``/generate``,
``/embed``). ``/info`` describes a route's first target (``auto``: the strategy's choice now).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import hfskills

from .. import auth
from ..errors import APIError
from ..openapi import protocol
from ..protocol import hf
from ..protocol import openai as oa
from ..serving import hf as serving
from ..serving import openai as openai_serving
from ..serving import vision
from ..tracing import span
from .common import FastJSONResponse, context, host, model_json, parse
from .common import default_model as _default
from .common import inference_request as _inference_request
from .common import route_task as _route_task
from .common import routed as _routed


async def _payload(request: Request) -> hf.InferenceRequest:
    """A JSON body, or a raw image/audio body (the client sends bytes when there are no
    parameters, often without a content type)."""
    with span("parse"):
        return _inference_request(request, await request.body())


async def _dispatch(request: Request, task: str | None, pipeline: str = "") -> Response:
    name = request.path_params["name"]
    if _routed(request, name):
        task = _route_task(request, name, task)
    else:
        await host(request).loader.admit(name)
        model, task = host(request).loader.resolve(name, task)
        name = model.canonical(name)
    payload = await _payload(request)
    target = serving.Target(host(request).service, name, task, context(request), pipeline)
    return await serving.inference(target, payload)


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
    return await _dispatch(request, hf.HF_TASKS[name], name)


async def model_chat(request: Request) -> Response:
    """OpenAI chat completions for the model in the path (what InferenceClient posts to); a
    body's ``model`` is ignored."""
    name = request.path_params["name"]
    body = await parse(request, oa.ChatCompletionRequest, model=name)
    service, ctx = host(request).service, context(request)
    if vision.wanted(service, body, name):  # image_url parts, or a vision-language model
        settings = host(request).settings
        answer = await vision.chat(service, body, name, ctx, request.url.path, settings)
    else:
        answer = await openai_serving.chat(service, body, name, ctx, request.url.path)
    return model_json(answer)


# -- TGI ---------------------------------------------------------------------------------------


def _described(request: Request, name: str, task: str) -> str:
    """The model ``/info`` describes for ``name``: a route's first target, ``auto``'s choice
    now, else ``name``."""
    if not _routed(request, name):
        return name
    service = host(request).service
    plan = service.router.get(name) if service.router is not None else None
    if plan is None and service.auto is not None:
        plan = service.auto.plan(task, None)
    if plan is None:
        raise APIError(404, f"no model serves {task} for {name!r}", param="model")
    return plan.targets[0]


@protocol(hf.GenerateRequest, hf.GenerateResponse)
async def generate(request: Request) -> Response:
    """TGI: generate text with the default text-generation model."""
    body = await parse(request, hf.GenerateRequest)
    name = _default(request, "text_generation", body.model)
    return FastJSONResponse(
        await serving.tgi_generate(host(request).service, name, body, context(request))
    )


@protocol(hf.GenerateRequest, hf.StreamResponse)
async def generate_stream(request: Request) -> Response:
    """TGI: stream tokens (SSE) from the default text-generation model."""
    body = await parse(request, hf.GenerateRequest)
    name = _default(request, "text_generation", body.model)
    return await serving.tgi_stream(
        host(request).service, name, body, context(request), request.url.path
    )


async def _info_for(request: Request, name: str) -> Response:
    auth.check_model(name, host(request).catalog.get(name))  # it loads the model
    name = _described(request, name, "text_generation")
    loaded = await host(request).loader.get(name, "text_generation")
    endpoint = loaded.endpoint
    import asyncio

    from hfskills.skillset.runtime.text import max_length

    from ..dtypes import model_dtype

    limit = max_length(endpoint.processor, endpoint.config)
    # TGI's style ("torch.float32"), or a GGUF file's quantization ("Q4_1", read from its header)
    dtype = await asyncio.to_thread(model_dtype, endpoint, loaded.model.location)
    return FastJSONResponse(
        hf.Info(
            model_id=loaded.model.name,
            model_dtype=dtype,
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
    """TGI's /info for the model (or route) in the path."""
    name = request.path_params["name"]
    if _routed(request, name):
        return await _info_for(request, name)
    await host(request).loader.admit(name)
    model, _ = host(request).loader.resolve(name, "text_generation")
    return await _info_for(request, model.name)


# -- TEI ---------------------------------------------------------------------------------------


@protocol(hf.EmbedRequest)
async def embed(request: Request) -> Response:
    """TEI: embed texts with the default embedding model, as ``[[f32]]``."""
    body = await parse(request, hf.EmbedRequest)
    name = _default(request, "text_embedding", body.model)
    return await serving.embed(host(request).service, name, body, context(request))


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

"""OpenAI-compatible routes: models, embeddings, completions, chat completions (text, or
with images for a vision-language model: `host.serving.vision`).

Each route parses its pydantic request model (`host.protocol.openai`) and hands it to the
OpenAI serving layer (`host.serving.openai`), which answers JSON or SSE ending in
``data: [DONE]``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import may_use
from ..openapi import protocol
from ..protocol import openai as oa
from ..serving import openai as serving
from ..serving import vision
from .common import context, host, model_json, parse


@protocol(None, oa.ModelList)
async def list_models(request: Request) -> Response:
    """List the served models (names and aliases) and the routes: those the request's
    credential may use (a key limited to models sees only those)."""
    catalog, gate = host(request).catalog, host(request).control.gate
    created = host(request).started
    cards = [  # a LoRA adapter names its base model as its parent (as vLLM lists them)
        oa.ModelCard(id=name, created=created, parent=model if catalog.adapter(name) else None)
        for name, model in catalog.names.items()
        # a retired model is not served (host/control/gate.py)
        if not gate.retired(model) and may_use(name, catalog.get(name))
    ]
    routes = host(request).control.router.names()  # routes answer too (control/routing.py)
    cards += [oa.ModelCard(id=name, created=created) for name in routes if may_use(name)]
    return model_json(oa.ModelList(data=cards))


@protocol(oa.EmbeddingRequest, oa.EmbeddingResponse)
async def embeddings(request: Request) -> Response:
    """Create embeddings."""
    body = await parse(request, oa.EmbeddingRequest)
    return model_json(
        await serving.embeddings(host(request).service, body, context(request, body.user))
    )


@protocol(oa.CompletionRequest, oa.CompletionResponse)
async def completions(request: Request) -> Response:
    """Create a text completion (stream: SSE)."""
    body = await parse(request, oa.CompletionRequest)
    answer = await serving.completions(
        host(request).service, body, context(request, body.user), request.url.path
    )
    return model_json(answer)


@protocol(oa.ChatCompletionRequest, oa.ChatCompletionResponse)
async def chat_completions(request: Request) -> Response:
    """Create a chat completion (stream: SSE)."""
    body = await parse(request, oa.ChatCompletionRequest)
    service, ctx = host(request).service, context(request, body.user)
    if vision.wanted(service, body, body.model):  # image_url parts, or a vision-language model
        settings = host(request).settings
        answer = await vision.chat(service, body, body.model, ctx, request.url.path, settings)
    else:
        answer = await serving.chat(service, body, body.model, ctx, request.url.path)
    return model_json(answer)


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]

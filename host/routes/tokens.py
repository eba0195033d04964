"""Tokenizer routes: ``POST /tokenize`` and ``POST /detokenize`` as vLLM has them, TEI's
``POST /tokenize`` body on the same path (a body with ``inputs`` is TEI's, any other vLLM's)
and TEI's ``POST /decode``. Errors answer in OpenAI's shape on ``/tokenize`` and
``/detokenize`` (vLLM's), TGI's on ``/decode`` (host/errors.py).

The model: the body's ``model`` (a model, an alias, a route: its first target, or ``auto``:
its choice now), else the default ``text_generation`` model (vLLM's bodies) or the default
``text_embedding`` model (TEI's). Any model with a tokenizer answers, whatever its task.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import auth
from ..errors import APIError
from ..openapi import protocol
from ..protocol import tokens as tk
from ..serving import tokens as serving
from ..tracing import span
from .common import FastJSONResponse, default_model, host, json_object, model_json, routed


async def _model(request: Request, name: str | None, task: str) -> str:
    """The served model whose tokenizer answers (see the module's docstring)."""
    name = default_model(request, task, name)
    auth.check_model(name, host(request).catalog.get(name))  # a key limited to models: 403
    if routed(request, name):
        service = host(request).service
        plan = service.router.get(name) if service.router is not None else None
        if plan is None and service.auto is not None:
            plan = service.auto.plan(task, None)
        if plan is None:
            raise APIError(404, f"no model serves {task} for {name!r}", param="model")
        name = plan.targets[0]
    await host(request).loader.admit(name)
    model, _ = host(request).loader.resolve(name)  # 404 for an unknown name
    return model.name


@protocol(tk.TokenizeRequest, tk.TokenizeResponse)
async def tokenize(request: Request) -> Response:
    """Tokenize a prompt or chat messages (vLLM), or texts with their spans (TEI: ``inputs``)."""
    with span("parse"):
        data = json_object(await request.body())
    loader = host(request).loader
    if "inputs" in data:
        tei = tk.TEITokenizeRequest.model_validate(data)
        name = await _model(request, tei.model, "text_embedding")
        return FastJSONResponse(await serving.tei_tokenize(loader, name, tei))
    body: tk.TokenizeCompletionRequest | tk.TokenizeChatRequest
    if "messages" in data:
        body = tk.TokenizeChatRequest.model_validate(data)
    else:
        body = tk.TokenizeCompletionRequest.model_validate(data)
    name = await _model(request, body.model, "text_generation")
    return model_json(await serving.tokenize(loader, name, body))


@protocol(tk.DetokenizeRequest, tk.DetokenizeResponse)
async def detokenize(request: Request) -> Response:
    """Token ids back to text (vLLM)."""
    with span("parse"):
        body = tk.DetokenizeRequest.model_validate(json_object(await request.body()))
    name = await _model(request, body.model, "text_generation")
    return model_json(await serving.detokenize(host(request).loader, name, body))


@protocol(tk.DecodeRequest)
async def decode(request: Request) -> Response:
    """TEI: token ids back to text, one string per id list."""
    with span("parse"):
        body = tk.DecodeRequest.model_validate(json_object(await request.body()))
    name = await _model(request, body.model, "text_embedding")
    return FastJSONResponse(await serving.decode(host(request).loader, name, body))


routes = [
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    Route("/decode", decode, methods=["POST"]),
]

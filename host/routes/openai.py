"""OpenAI-compatible routes: models, embeddings, completions, chat completions.

Each route parses a pydantic request model (`host.protocol.openai`), runs the skill through
the inference service, and writes the response model; streams are SSE ending in
``data: [DONE]``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import APIError, from_exception
from ..inference import Stream
from ..openapi import protocol
from ..protocol import openai as oa
from .common import FastJSONResponse, context, event_stream, host, parse, sse


def _json(model: oa.BaseModel) -> JSONResponse:
    return FastJSONResponse(model.model_dump(mode="json"))


@protocol(None, oa.ModelList)
async def list_models(request: Request) -> Response:
    """List the served models (names and aliases)."""
    catalog = host(request).catalog
    created = host(request).started
    cards = [oa.ModelCard(id=name, created=created) for name in catalog.names]
    return _json(oa.ModelList(data=cards))


@protocol(oa.EmbeddingRequest, oa.EmbeddingResponse)
async def embeddings(request: Request) -> Response:
    """Create embeddings."""
    body = await parse(request, oa.EmbeddingRequest)
    params: dict[str, Any] = {}
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    outcome = await host(request).service.run(
        body.model, "text_embedding", body.inputs(), params, ctx=context(request), count_tokens=True
    )
    data = []
    for index, vector in enumerate(outcome.results):
        if body.encoding_format == "base64":
            packed = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            data.append(oa.Embedding(index=index, embedding=packed))
        else:
            data.append(oa.Embedding(index=index, embedding=vector))
    usage = oa.EmbeddingUsage(
        prompt_tokens=outcome.prompt_tokens, total_tokens=outcome.prompt_tokens
    )
    return _json(oa.EmbeddingResponse(data=data, model=body.model, usage=usage))


#: max_tokens when a request gives none: OpenAI's legacy completions default, and a chat
#: default long enough for an answer (OpenAI's chat has no fixed default).
COMPLETION_MAX_TOKENS, CHAT_MAX_TOKENS = 16, 512


def _params(body: oa.SamplingRequest, max_tokens: int | None, default: int) -> dict[str, Any]:
    try:
        return body.generation_params(max_tokens, default)
    except ValueError as exc:
        raise APIError(400, str(exc), param="stop") from None


def _usage(results: list[dict[str, Any]], n: int) -> oa.Usage:
    prompt = sum(r["prompt_tokens"] for r in results[::n])
    completion = sum(len(r["token_ids"]) for r in results)
    return oa.Usage.of(prompt, completion)


@protocol(oa.CompletionRequest, oa.CompletionResponse)
async def completions(request: Request) -> Response:
    """Create a text completion (stream: SSE)."""
    body = await parse(request, oa.CompletionRequest)
    params = _params(body, body.max_tokens, COMPLETION_MAX_TOKENS)
    prompts = body.prompts()
    service = host(request).service
    if body.stream:
        if len(prompts) != 1 or body.n != 1:
            raise APIError(400, "streaming takes one prompt and n=1", param="stream")
        stream = await service.open_stream(
            body.model, "text_generation", prompts[0], params, ctx=context(request)
        )
        return event_stream(_completion_events(stream, body, prompts[0]))
    inputs = [p for p in prompts for _ in range(body.n)]
    outcome = await service.run(body.model, "text_generation", inputs, params, ctx=context(request))
    choices = [
        oa.CompletionChoice(
            index=i,
            text=(inputs[i] if body.echo else "") + r["text"],
            finish_reason=r["finish_reason"],
        )
        for i, r in enumerate(outcome.results)
    ]
    return _json(
        oa.CompletionResponse(
            id=oa.new_id("cmpl"),
            created=oa.now(),
            model=body.model,
            choices=choices,
            usage=_usage(outcome.results, body.n),
        )
    )


@protocol(oa.ChatCompletionRequest, oa.ChatCompletionResponse)
async def chat_completions(request: Request, model_name: str | None = None) -> Response:
    """Create a chat completion (stream: SSE)."""
    # /models/{name}/v1/chat/completions: the path names the model; a body "model" is ignored
    defaults = {"model": model_name} if model_name else {}
    body = await parse(request, oa.ChatCompletionRequest, **defaults)
    model = model_name or body.model
    params = _params(body, body.max_completion_tokens or body.max_tokens, CHAT_MAX_TOKENS)
    service = host(request).service
    if body.stream:
        if body.n != 1:
            raise APIError(400, "streaming takes n=1", param="n")
        stream = await service.open_stream(
            model, "text_generation", body.chat(), params, ctx=context(request)
        )
        return event_stream(_chat_events(stream, body, model))
    outcome = await service.run(
        model, "text_generation", [body.chat()] * body.n, params, ctx=context(request)
    )
    choices = [
        oa.ChatChoice(
            index=i,
            message=oa.AssistantMessage(content=r["text"]),
            finish_reason=r["finish_reason"],
        )
        for i, r in enumerate(outcome.results)
    ]
    return _json(
        oa.ChatCompletionResponse(
            id=oa.new_id("chatcmpl"),
            created=oa.now(),
            model=model,
            choices=choices,
            usage=_usage(outcome.results, body.n),
        )
    )


def _error_event(exc: Exception) -> str:
    status, message, code, param = from_exception(exc)
    return sse(
        {
            "error": {
                "message": message,
                "type": "server_error"
                if status >= 500 or status == 424
                else "invalid_request_error",
                "param": param,
                "code": code,
            }
        }
    )


async def _chat_events(
    stream: Stream, body: oa.ChatCompletionRequest, model: str
) -> AsyncIterator[str]:
    chunk_id, created = oa.new_id("chatcmpl"), oa.now()

    def chunk(
        delta: oa.Delta,
        finish: str | None = None,
        usage: oa.Usage | None = None,
        choices: bool = True,
    ) -> str:
        items = [oa.ChunkChoice(index=0, delta=delta, finish_reason=finish)] if choices else []
        return sse(
            oa.ChatCompletionChunk(
                id=chunk_id, created=created, model=model, choices=items, usage=usage
            ).model_dump(mode="json", exclude_none=False)
        )

    yield chunk(oa.Delta(role="assistant", content=""))
    try:
        async for event in stream.events:
            if event["text"]:
                yield chunk(oa.Delta(content=event["text"]))
            if event["finish_reason"] is not None:
                yield chunk(oa.Delta(), finish=event["finish_reason"])
                if body.stream_options and body.stream_options.include_usage:
                    usage = oa.Usage.of(event["prompt_tokens"], len(event["token_ids"]))
                    yield chunk(oa.Delta(), usage=usage, choices=False)
    except Exception as exc:  # one error event, then the stream ends cleanly
        yield _error_event(exc)
    yield sse("[DONE]")


async def _completion_events(
    stream: Stream, body: oa.CompletionRequest, prompt: str
) -> AsyncIterator[str]:
    chunk_id, created = oa.new_id("cmpl"), oa.now()

    def chunk(
        text: str, finish: str | None = None, usage: oa.Usage | None = None, choices: bool = True
    ) -> str:
        items = [oa.CompletionChoice(index=0, text=text, finish_reason=finish)] if choices else []
        return sse(
            oa.CompletionResponse(
                id=chunk_id, created=created, model=body.model, choices=items, usage=usage
            ).model_dump(mode="json")
        )

    if body.echo:
        yield chunk(prompt)
    try:
        async for event in stream.events:
            if event["text"] or event["finish_reason"] is not None:
                yield chunk(event["text"], finish=event["finish_reason"])
            if (
                event["finish_reason"] is not None
                and body.stream_options
                and body.stream_options.include_usage
            ):
                usage = oa.Usage.of(event["prompt_tokens"], len(event["token_ids"]))
                yield chunk("", usage=usage, choices=False)
    except Exception as exc:
        yield _error_event(exc)
    yield sse("[DONE]")


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]

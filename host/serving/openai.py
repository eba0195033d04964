"""OpenAI serving: embeddings, completions and chat completions, JSON or SSE, in OpenAI's shapes.

Errors name the fields an OpenAI client sent (``max_tokens``, ``prompt``, ``messages``), and a
stream's failure is one ``{"error": ...}`` event before ``data: [DONE]``. What chat shares with
vision chat (params, usage, the chat stream) is in `host.serving.chat`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.responses import Response

from hfskills.skillset.runtime.generation import (
    MAX_SEED,
    FinalEvent,
    GenerationParams,
)

from ..errors import APIError
from ..inference import InferenceService, Stream
from ..protocol import openai as oa
from ..scheduler import RequestContext
from . import tools
from .chat import CHAT_MAX_TOKENS, chat_events, generation_params, usage, words
from .common import FastJSONResponse, client_words, error_event, event_stream, sse
from .logprobs import Pending, openai_chat, openai_completion

#: max_tokens when a completion request gives none: OpenAI's legacy completions default, cut to
#: the room the model's context has left (chat's: `chat.CHAT_MAX_TOKENS`).
COMPLETION_MAX_TOKENS = 16
EMBEDDING_WORDS = {"inputs": "input"}
#: The engines' logprob parameters in each request's words (errors name what the client sent).
CHAT_LOGPROBS = {"logprobs": "top_logprobs"}
COMPLETION_LOGPROBS = {"prompt_logprobs": "logprobs"}


async def embeddings(
    service: InferenceService, body: oa.EmbeddingRequest, ctx: RequestContext
) -> Response:
    """OpenAI's embeddings answer (`oa.EmbeddingResponse`'s shape), built as plain JSON: the
    vectors are the handler's own floats, so validating each of them again in the response
    model, then dumping it, only cost the event loop time (measured in docs/performance.md)."""
    params: dict[str, Any] = {}
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    with client_words(EMBEDDING_WORDS):
        outcome = await service.run(body.model, "text_embedding", body.inputs(), params, ctx)
    if body.encoding_format == "base64":
        vectors: list[Any] = [
            base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
            for v in outcome.results
        ]
    else:
        vectors = outcome.results
    tokens = outcome.prompt_tokens
    return FastJSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "model": outcome.model_name(body.model),  # a route's choice: the model that answered
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def _choices(
    service: InferenceService,
    model: str,
    prompts: list[Any],
    params: GenerationParams,
    n: int,
    ctx: RequestContext,
) -> tuple[list[dict[str, Any]], Any, str, list[Any]]:
    """``n`` results per prompt, prompt by prompt, the model's endpoint, the name the
    answer's ``model`` says (`Outcome.model_name`), and the prompts the model got (the safety
    pipeline may have redacted them: ``echo`` shows these). With a seed,
    choice ``i`` samples with ``seed + i`` (as vLLM's choices differ), so the whole answer
    repeats for the same seed."""
    if params.seed is None or n == 1 or not params.sampling:
        inputs = [p for p in prompts for _ in range(n)]
        outcome = await service.run(model, "text_generation", inputs, params, ctx)
        got = (outcome.inputs or inputs)[::n]
        return outcome.results, outcome.loaded.endpoint, outcome.model_name(model), got
    runs = await asyncio.gather(
        *(
            service.run(
                model,
                "text_generation",
                prompts,
                params.model_copy(update={"seed": (params.seed + i) % (MAX_SEED + 1)}),
                ctx,
            )
            for i in range(n)
        )
    )
    results = [runs[i].results[p] for p in range(len(prompts)) for i in range(n)]
    got = runs[0].inputs or prompts
    return results, runs[0].loaded.endpoint, runs[0].model_name(model), got


def _text(prompt: str | list[int], tokenizer: Any) -> str:
    """A prompt as text (for ``echo``): token ids are decoded."""
    return prompt if isinstance(prompt, str) else tokenizer.decode(prompt)


def _completion_logprobs(
    result: dict[str, Any], body: oa.CompletionRequest, tokenizer: Any
) -> oa.CompletionLogprobs | None:
    """A completion choice's logprobs: the echoed prompt's (first without a logprob), then the
    generated tokens' (vLLM's order)."""
    if body.logprobs is None:
        return None
    prompt = (result.get("prompt_logprobs") or []) if body.echo else []
    return openai_completion([*prompt, *(result.get("logprobs") or [])], tokenizer)


async def completions(
    service: InferenceService, body: oa.CompletionRequest, ctx: RequestContext, path: str
) -> oa.CompletionResponse | Response:
    params = await generation_params(body, COMPLETION_MAX_TOKENS)
    prompts = body.prompts()
    with client_words({**words("prompt", "max_tokens"), **COMPLETION_LOGPROBS}):
        if body.stream:
            if len(prompts) != 1 or body.n != 1:
                raise APIError(400, "streaming takes one prompt and n=1", param="stream")
            stream = await service.open_stream(
                body.model, "text_generation", prompts[0], params, ctx
            )
            return event_stream(_completion_events(stream, body, prompts[0], path))
        results, endpoint, answered, prompts = await _choices(
            service, body.model, prompts, params, body.n, ctx
        )
    tokenizer = endpoint.processor
    choices = [
        oa.CompletionChoice(
            index=i,
            text=(_text(prompts[i // body.n], tokenizer) if body.echo else "") + r["text"],
            logprobs=_completion_logprobs(r, body, tokenizer),
            finish_reason=r["finish_reason"],
        )
        for i, r in enumerate(results)
    ]
    return oa.CompletionResponse(
        id=oa.new_id("cmpl"),
        created=oa.now(),
        model=answered,
        choices=choices,
        usage=usage(results, body.n),
    )


async def chat(
    service: InferenceService,
    body: oa.ChatCompletionRequest,
    model: str,
    ctx: RequestContext,
    path: str,
) -> oa.ChatCompletionResponse | Response:
    params = await generation_params(body, CHAT_MAX_TOKENS)
    with client_words({**words("messages", body.max_tokens_field()), **CHAT_LOGPROBS}):
        if body.stream:
            if body.n != 1:
                raise APIError(400, "streaming takes n=1", param="n")
            stream = await service.open_stream(model, "text_generation", body.chat(), params, ctx)
            return event_stream(chat_events(stream, body, stream.model_name(model), path))
        results, endpoint, answered, _ = await _choices(
            service, model, [body.chat()], params, body.n, ctx
        )
    choices = []
    for i, r in enumerate(results):
        content, calls, finish = tools.answer(
            r["text"], r["finish_reason"], body.tool_mode(), tools.family(endpoint)
        )
        message = oa.AssistantMessage(
            content=content, tool_calls=[c.message() for c in calls] or None
        )
        choices.append(oa.ChatChoice(index=i, message=message, finish_reason=finish))
    if body.logprobs:
        for choice, result in zip(choices, results, strict=True):
            choice.logprobs = openai_chat(result.get("logprobs"), endpoint.processor)
    return oa.ChatCompletionResponse(
        id=oa.new_id("chatcmpl"),
        created=oa.now(),
        model=answered,
        choices=choices,
        usage=usage(results, body.n),
    )


async def _completion_events(
    stream: Stream, body: oa.CompletionRequest, prompt: str | list[int], path: str
) -> AsyncIterator[str]:
    chunk_id, created = oa.new_id("cmpl"), oa.now()
    tokenizer = stream.loaded.endpoint.processor
    pending = Pending(body.logprobs is not None, tokenizer)

    def chunk(
        text: str,
        finish: str | None = None,
        usage: oa.Usage | None = None,
        choices: bool = True,
        logprobs: oa.CompletionLogprobs | None = None,
    ) -> str:
        if choices and logprobs is None:
            logprobs = pending.completion(text)
        items = (
            [oa.CompletionChoice(index=0, text=text, logprobs=logprobs, finish_reason=finish)]
            if choices
            else []
        )
        return sse(
            oa.CompletionResponse(
                id=chunk_id,
                created=created,
                model=stream.model_name(body.model),
                choices=items,
                usage=usage,
            ).model_dump(mode="json")
        )

    events = pending.watch(stream.events)
    try:
        if body.echo:  # the prompt the model got (the safety pipeline may have redacted it)
            got = stream.prompt if stream.prompt is not None else prompt
            text = _text(got, tokenizer)
            events = await pending.first(events)  # its logprobs come with the first token
            yield chunk(text, logprobs=pending.echo(text))
        async for event in events:
            final = isinstance(event, FinalEvent)
            if event.text or final:
                yield chunk(event.text, finish=event.finish_reason)
            if final and body.stream_options and body.stream_options.include_usage:
                usage = oa.Usage.of(event.prompt_tokens, event.generated_tokens)
                yield chunk("", usage=usage, choices=False)
    except Exception as exc:
        yield error_event(path, exc)
    yield sse("[DONE]")

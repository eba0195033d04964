"""OpenAI chat's shared pieces: what text chat (`host.serving.openai`) and vision chat
(`host.serving.vision`) both answer with, so neither calls into the other.

A request's `GenerationParams` (``tool_choice`` required or named adds the calls' constraint;
a schema that cannot compile is a 400 naming its field), the answer's usage, and the chat
stream: OpenAI's chunks, with tool calls as deltas (`tools.ToolStream`), logprobs per chunk,
usage last when asked, and a failure as one error event before ``data: [DONE]``. Completions
(openai.py) take the same params and usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hfskills.skillset.runtime import constraints
from hfskills.skillset.runtime.errors import InvalidInput
from hfskills.skillset.runtime.generation import FinalEvent, GenerationParams, generated_tokens

from ..errors import APIError
from ..inference import Stream
from ..protocol import openai as oa
from . import tools
from .common import error_event, sse
from .logprobs import Pending

#: max_tokens when a chat request gives none: long enough for an answer (OpenAI's chat has no
#: fixed default); cut to the room the model's context has left.
CHAT_MAX_TOKENS = 512


def words(prompt_field: str, budget_field: str) -> dict[str, str]:
    """The core's field names -> this request's (errors name what the client sent)."""
    return {"inputs": prompt_field, "max_new_tokens": budget_field, "min_new_tokens": "min_tokens"}


async def generation_params(body: oa.SamplingRequest, default: int) -> GenerationParams:
    """A request's generation params, ``default`` its max_tokens when it gives none. A
    constraint is compiled here once, off the event loop (a 10k-value enum takes 0.4 s,
    docs/performance.md), so a bad schema is a 400 before the model is touched."""
    try:
        generation = body.to_generation_params(default)
    except ValueError as exc:
        raise APIError(400, str(exc), param="stop") from None
    try:
        if isinstance(body, oa.ChatCompletionRequest):
            mode = body.tool_mode()
            if mode not in (None, "auto"):  # required or named: the calls' schema
                if generation.constraint is not None:  # one answer, one grammar
                    raise APIError(
                        400,
                        f"tool_choice: {mode!r} holds the answer to the tools' calls, so it "
                        "cannot also follow response_format or a guided_*/structured_outputs "
                        "constraint; send one of them",
                        param="tool_choice",
                    )
                constraint = tools.call_constraint(
                    body.tools or [], mode, body.parallel_tool_calls is not False
                )
                generation = generation.model_copy(update={"constraint": constraint})
        if generation.constraint is not None:
            await asyncio.to_thread(constraints.grammar, generation.constraint)
    except InvalidInput as exc:
        raise APIError(400, exc.message, param=exc.param) from None
    return generation


def usage(results: list[dict[str, Any]], n: int) -> oa.Usage:
    """Usage of ``n`` results per prompt: each prompt counted once."""
    prompt = sum(r["prompt_tokens"] for r in results[::n])
    completion = sum(generated_tokens(r) for r in results)
    return oa.Usage.of(prompt, completion)


async def chat_events(
    stream: Stream, body: oa.ChatCompletionRequest, model: str, path: str
) -> AsyncIterator[str]:
    """A chat answer's SSE events, ``model`` the name its chunks carry."""
    chunk_id, created = oa.new_id("chatcmpl"), oa.now()
    pending = Pending(bool(body.logprobs), stream.loaded.endpoint.processor)
    stream.events = pending.watch(stream.events)  # each chunk takes its tokens' logprobs

    def chunk(
        delta: oa.Delta,
        finish: str | None = None,
        usage: oa.Usage | None = None,
        choices: bool = True,
    ) -> str:
        items = (
            [oa.ChunkChoice(index=0, delta=delta, logprobs=pending.chat(), finish_reason=finish)]
            if choices
            else []
        )
        data = oa.ChatCompletionChunk(
            id=chunk_id, created=created, model=model, choices=items, usage=usage
        ).model_dump(mode="json", exclude_none=False)
        if delta.tool_calls:  # a call's later pieces carry no id, type or name (as OpenAI's)
            data["choices"][0]["delta"]["tool_calls"] = [
                call.model_dump(mode="json", exclude_none=True) for call in delta.tool_calls
            ]
        return sse(data)

    mode = body.tool_mode()
    yield chunk(oa.Delta(role="assistant", content=None if mode else ""))
    calls = tools.ToolStream(mode, tools.family(stream.loaded.endpoint))
    try:
        async for event in stream.events:
            for delta in calls.add(event.text):
                yield chunk(delta)
            if isinstance(event, FinalEvent):
                finish = event.finish_reason
                if mode is not None:
                    deltas, finish = calls.end(event.generated_text, finish)
                    for delta in deltas:
                        yield chunk(delta)
                yield chunk(oa.Delta(), finish=finish)
                if body.stream_options and body.stream_options.include_usage:
                    counted = oa.Usage.of(event.prompt_tokens, event.generated_tokens)
                    yield chunk(oa.Delta(), usage=counted, choices=False)
    except Exception as exc:  # one error event, then the stream ends cleanly
        yield error_event(path, exc)
    yield sse("[DONE]")

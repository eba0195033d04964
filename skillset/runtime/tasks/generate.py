"""Generation tasks, once for every architecture: decoder text generation, encoder-decoder
text2text generation, and image captioning.

The decoding loop itself is `generation.TextGenerator` (torch) or an engine that batches
requests by itself (OpenVINO GenAI, vLLM: `engines.handler`); these handlers parse the typed
`GenerationParams` and hand over. Streaming handlers carry ``handler.stream(prompt, **params)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import engines, generation, media, torch_backend
from ..endpoint import Endpoint, Handler
from ..skill import Task


def _text_handler(endpoint: Endpoint, *, decoder_only: bool) -> Handler:
    generator = generation.TextGenerator(
        endpoint.model, endpoint.processor, endpoint.device, decoder_only=decoder_only
    )

    def handler(inputs: list[Any], **params: Any) -> list[dict[str, Any]]:
        settings = generation.GenerationParams.parse(params)
        return generator.generate(generator.encode_prompts(inputs, settings.tools), settings)

    def stream(prompt: Any, **params: Any) -> Iterator[dict[str, Any]]:
        settings = generation.GenerationParams.parse(params)
        return generator.stream(generator.encode_prompts([prompt], settings.tools), settings)

    handler.stream = stream  # type: ignore[attr-defined]
    return handler


def text_generation(endpoint: Endpoint, task: Task) -> Handler:
    """Continue prompts (strings, or chat messages `[{role, content}, ...]` rendered with the
    tokenizer's chat template): `{text, token_ids, finish_reason, prompt_tokens}` per input.
    Params: `max_new_tokens`, `do_sample`, `temperature`, `top_p`, `top_k`,
    `repetition_penalty`, `stop` (strings; the text is cut before them), `seed`,
    `ignore_eos`, `logprobs` and `prompt_logprobs` (alternatives per token; the results get
    `logprobs`/`prompt_logprobs`). `handler.stream(prompt, **params)` yields one event per token.
    """
    if endpoint.engine is not None:  # OpenVINO GenAI or vLLM: the engine batches requests
        return engines.handler(endpoint.engine)
    return _text_handler(endpoint, decoder_only=True)


def text2text_generation(endpoint: Endpoint, task: Task) -> Handler:
    """Transform texts with the encoder-decoder (translate, summarise...): per input
    `{text, token_ids, finish_reason, prompt_tokens}`. Params as for text generation;
    `handler.stream(prompt, **params)` yields one event per token.
    """
    return _text_handler(endpoint, decoder_only=False)


def image_to_text(endpoint: Endpoint, task: Task) -> Handler:
    """Caption images (PIL images, bytes, base64 or paths): per input
    `{text, token_ids, finish_reason, prompt_tokens}`. Params as for text generation
    (`max_new_tokens`, `do_sample`, `temperature`, `stop`, ...).
    """
    model, processor = endpoint.model, endpoint.processor
    generator = generation.TextGenerator(
        model, processor.tokenizer, endpoint.device, decoder_only=False
    )

    def handler(inputs: list[Any], **params: Any) -> list[dict[str, Any]]:
        settings = generation.GenerationParams.parse(params)
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        batch = torch_backend.place(processor(images=images, return_tensors="pt"), endpoint)
        return generator.generate(batch, settings)

    return handler

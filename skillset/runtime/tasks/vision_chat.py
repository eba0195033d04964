"""Vision-language chat on image-text-to-text models (transformers' AutoModelForImageTextToText
mapping: LLaVA, Idefics, Qwen-VL, PaliGemma...), through the model's processor and its chat
template.

The ``image_to_text`` task takes either images (captioning: `generate.image_to_text`) or chat
conversations, OpenAI-style messages whose content may hold image parts:

    [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "What is in the picture?"}]}]

An image part is ``{"type": "image_url", "image_url": {"url": ...}}`` (or ``{"type": "image",
"image": ...}``) whose value is a data URL, raw base64 or bytes (never a path or a remote URL:
the host fetches allowed URLs itself). Each conversation is rendered by
``processor.apply_chat_template`` (image parts become the template's ``{"type": "image"}``),
then ``processor(images=..., text=...)`` and ``generate``, one conversation at a time (each has
its own number of images).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .. import generation, media, torch_backend
from ..endpoint import Endpoint, Handler
from ..errors import InvalidInput
from ..skill import Task
from . import generate


def is_chat(value: Any) -> bool:
    """Whether an input is a conversation (a list of ``{role, ...}`` messages)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m for m in value)
    )


def image_to_text(endpoint: Endpoint, task: Task) -> Handler:
    """Caption images, or answer conversations with images: per input
    `{text, token_ids, finish_reason, prompt_tokens}`. Params as for text generation
    (`max_new_tokens`, `do_sample`, `temperature`, `stop`, ...); a batch is all images or all
    conversations. `handler.stream(conversation, **params)` yields one event per token.
    """
    caption = generate.image_to_text(endpoint, task)
    chat = VisionChat(endpoint)

    def handler(inputs: list[Any], **params: Any) -> list[dict[str, Any]]:
        chats = [is_chat(x) for x in inputs] if isinstance(inputs, list) else []
        if not chats or not any(chats):
            return caption(inputs, **params)
        if not all(chats):
            raise InvalidInput("inputs must be all images or all conversations", param="inputs")
        settings = generation.GenerationParams.parse(params)
        return [chat.generator.generate(chat.encode(x), settings)[0] for x in inputs]

    def stream(prompt: Any, **params: Any) -> Iterator[dict[str, Any]]:
        if not is_chat(prompt):
            raise InvalidInput("a stream takes one conversation", param="inputs")
        settings = generation.GenerationParams.parse(params)
        return chat.generator.stream(chat.encode(prompt), settings)

    handler.stream = stream  # type: ignore[attr-defined]
    return handler


class VisionChat:
    """One loaded image-text-to-text model's conversations: render, encode, generate."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint, self.processor = endpoint, endpoint.processor
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        config = endpoint.model.config
        self.generator = generation.TextGenerator(
            endpoint.model,
            tokenizer,
            endpoint.device,
            decoder_only=not getattr(config, "is_encoder_decoder", False),
        )

    def encode(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The model inputs of one conversation (`InvalidInput` naming a bad message part)."""
        if not getattr(self.processor, "chat_template", None):
            raise InvalidInput(
                "this model's processor has no chat template, so it cannot chat; caption images "
                "by sending them alone",
                param="inputs",
            )
        rendered, images = template_messages(messages)
        text = self.processor.apply_chat_template(
            rendered, add_generation_prompt=True, tokenize=False
        )
        try:
            batch = self.processor(images=images or None, text=[text], return_tensors="pt")
        except ValueError as exc:  # e.g. more or fewer image tokens than images
            raise InvalidInput(f"inputs: the processor refused the conversation: {exc}") from None
        return torch_backend.place(batch, self.endpoint)


def template_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages as chat templates take them (content: a list of ``text`` and ``image`` parts)
    and the decoded images, in order."""
    rendered: list[dict[str, Any]] = []
    images: list[Any] = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if content is None or isinstance(content, str):
            parts = [{"type": "text", "text": content or ""}]
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind in ("image_url", "image"):
                    images.append(_image(part, kind, where))
                    parts.append({"type": "image"})
                else:
                    raise InvalidInput(f"{where}: not a text or image part", param=where)
        else:
            raise InvalidInput(f"messages[{i}].content: not text or a list of parts")
        rendered.append({**message, "content": parts})
    return rendered, images


def _image(part: dict[str, Any], kind: str, where: str) -> Any:
    value = part.get(kind)
    if kind == "image_url":
        value = value.get("url") if isinstance(value, dict) else value
        where += ".image_url.url"
    if not isinstance(value, str | bytes | bytearray):
        raise InvalidInput(f"{where}: an image must be a data URL or base64", param=where)
    if isinstance(value, str) and value.lstrip().lower().startswith(("http:", "https:")):
        raise InvalidInput(f"{where}: remote images are fetched by the host only", param=where)
    try:
        return media.image(value, allow_paths=False)
    except InvalidInput as exc:  # PIL names its in-memory file object: left out
        message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", exc.message)
        raise InvalidInput(f"{where}: {message}", param=where) from None

"""Vision-language chat: ``/v1/chat/completions`` with ``image_url`` content parts, answered by
an image-text-to-text model (a model that serves ``image_to_text``: its processor and chat
template render the conversation; hfskills.skillset.runtime.tasks.vision_chat).

Images come as data URLs (``data:image/png;base64,...``) or raw base64, always. An ``http(s)``
URL is refused (400 naming the part) unless its host is in ``allowed_image_url_hosts``; then the
host fetches it, within ``image_fetch_timeout_s`` and ``max_image_bytes``, without following
redirects elsewhere. A model that takes text only, given an image, is a 400 naming the part.
The answer has OpenAI's chat shapes (JSON or SSE), as text chat's.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.responses import Response

from ..config import Settings
from ..errors import APIError
from ..inference import InferenceService
from ..protocol import openai as oa
from ..scheduler import RequestContext
from .chat import CHAT_MAX_TOKENS, chat_events, generation_params, usage, words
from .common import client_words, event_stream

TASK = "image_to_text"


def image_parts(body: oa.ChatCompletionRequest) -> list[tuple[str, str]]:
    """``(where, url)`` of every image part, in order (``messages[i].content[j]``)."""
    found = []
    for i, message in enumerate(body.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type == "image_url":
                    found.append((f"messages[{i}].content[{j}]", _url(part)))
    return found


def _url(part: oa.ContentPart) -> str:
    return part.image_url.url if part.image_url is not None else ""


def serves_images(service: InferenceService, model: str) -> bool:
    """Whether ``model`` names a served model that is image-text-to-text (routes and ``auto``
    choose among text models)."""
    served = service.loader.catalog.get(model)
    return served is not None and TASK in served.tasks


def wanted(service: InferenceService, body: oa.ChatCompletionRequest, model: str) -> bool:
    """Whether this chat goes to the vision path: the model is image-text-to-text, or the
    messages hold images (then a text-only model is refused by name)."""
    if serves_images(service, model):
        return True
    parts = image_parts(body)
    if parts:
        where = parts[0][0]
        served = service.loader.catalog.get(model)
        tasks = list(served.tasks) if served is not None else []
        raise APIError(
            400,
            f"{where}: model {model!r} takes text only (it serves {tasks or 'no model here'}); "
            "an image_url part needs a vision-language model (one that serves image_to_text)",
            param=where,
        )
    return False


async def messages(body: oa.ChatCompletionRequest, settings: Settings) -> list[dict[str, Any]]:
    """The conversation as the skill takes it: roles as chat templates name them, content as
    text and image parts, each remote image fetched (when allowed) into a data URL."""
    role = {"developer": "system"}
    out: list[dict[str, Any]] = []
    async with _Fetcher(settings) as fetcher:
        for i, message in enumerate(body.messages):
            content: Any = message.content
            if isinstance(content, list):
                parts: list[dict[str, Any]] = []
                for j, part in enumerate(content):
                    if part.type == "text":
                        parts.append({"type": "text", "text": part.text or ""})
                        continue
                    where = f"messages[{i}].content[{j}]"
                    url = await fetcher.data_url(_url(part), where)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                content = parts
            out.append({"role": role.get(message.role, message.role), "content": content or ""})
    return out


class _Fetcher:
    """Remote images, from the allowed hosts only, bounded in time and size."""

    def __init__(self, settings: Settings) -> None:
        self.hosts = {h.lower() for h in settings.allowed_image_url_hosts}
        self.limit, self.timeout = settings.max_image_bytes, settings.image_fetch_timeout_s
        self.client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> _Fetcher:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def data_url(self, url: str, where: str) -> str:
        where += ".image_url.url"
        text = url.strip()
        if not text:
            raise APIError(400, f"{where}: the image URL is empty", param=where)
        scheme = text.split(":", 1)[0].lower() if ":" in text[:16] else ""
        if scheme == "data" or not scheme:  # a data URL or raw base64: the skill decodes it
            if len(text) > self.limit * 4 // 3 + 256:
                raise APIError(413, f"{where}: the image is over {self.limit} bytes", param=where)
            return text
        if scheme not in ("http", "https"):
            raise APIError(400, f"{where}: {scheme}: URLs are not taken", param=where)
        host = (urlsplit(text).hostname or "").lower()
        if host not in self.hosts:
            raise APIError(
                400,
                f"{where}: remote images are not fetched from {host or 'this URL'!r}; send the "
                "image as a data URL or base64 (or allow the host: allowed_image_url_hosts)",
                param=where,
            )
        return await self._fetch(text, where)

    async def _fetch(self, url: str, where: str) -> str:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            async with self.client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise APIError(
                        400,
                        f"{where}: fetching the image answered {response.status_code}",
                        param=where,
                    )
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.limit:
                        raise APIError(
                            413, f"{where}: the image is over {self.limit} bytes", param=where
                        )
                kind = response.headers.get("content-type", "image/png").split(";")[0].strip()
        except httpx.HTTPError as exc:
            raise APIError(
                400, f"{where}: could not fetch the image: {type(exc).__name__}", param=where
            ) from None
        return f"data:{kind or 'image/png'};base64,{base64.b64encode(bytes(data)).decode()}"


async def chat(
    service: InferenceService,
    body: oa.ChatCompletionRequest,
    model: str,
    ctx: RequestContext,
    path: str,
    settings: Settings,
) -> oa.ChatCompletionResponse | Response:
    """Text chat's answer (`host.serving.openai.chat`, through the same `host.serving.chat`
    pieces), with a conversation of images."""
    params = await generation_params(body, CHAT_MAX_TOKENS)
    for name in ("constraint", "tools"):
        if getattr(params, name, None):
            raise APIError(
                400,
                "tools and response_format are not supported with vision-language models",
                param="tools" if name == "tools" else "response_format",
            )
    conversation = await messages(body, settings)
    with client_words(words("messages", body.max_tokens_field())):
        if body.stream:
            if body.n != 1:
                raise APIError(400, "streaming takes n=1", param="n")
            stream = await service.open_stream(model, TASK, conversation, params, ctx)
            events = chat_events(stream, body, stream.model_name(model), path)
            return event_stream(events)
        outcome = await service.run(model, TASK, [conversation] * body.n, params, ctx)
    results = outcome.results
    choices = [
        oa.ChatChoice(
            index=i,
            message=oa.AssistantMessage(content=r["text"]),
            finish_reason=r["finish_reason"],
        )
        for i, r in enumerate(results)
    ]
    return oa.ChatCompletionResponse(
        id=oa.new_id("chatcmpl"),
        created=oa.now(),
        model=outcome.model_name(model),
        choices=choices,
        usage=usage(results, body.n),
    )

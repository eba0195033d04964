"""Response headers the core notes for the request it serves: the rate limits' ``x-ratelimit-*``
(limits.py) and the response cache's ``X-HFSkills-Cache: hit | miss`` (cache.py).

`NotedHeaders` (ASGI middleware) gives each request an empty set of headers; the core adds
to it with `note` (a request's parallel calls share it); the headers go out with the
response's start, on a success and an error alike. Outside a request, `note` does nothing.
"""

from __future__ import annotations

import contextvars

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NOTED: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "noted_headers", default=None
)


def noted() -> dict[str, str] | None:
    """This request's noted headers (lowercase names), None outside a request."""
    return _NOTED.get()


def note(name: str, value: str) -> None:
    headers = _NOTED.get()
    if headers is not None:
        headers[name.lower()] = value


class NotedHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[str, str] = {}
        token = _NOTED.set(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _NOTED.reset(token)

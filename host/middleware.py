"""ASGI middleware of the host's own: the request body limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors


class BodyLimit:
    """Answer 413 for bodies over the limit, by Content-Length or while streaming in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(path, scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except TooLarge:
            await self._reject(path, scope, receive, send)

    async def _reject(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than the limit of {self.limit} bytes"
        await errors.error_response(path, 413, message, code="payload_too_large")(
            scope, receive, send
        )


class TooLarge(Exception):
    pass

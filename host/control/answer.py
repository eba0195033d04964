"""Which model answered: ``X-HFSkills-Model: name@version`` on every response a model answered,
and ``X-HFSkills-Route: route`` when a route chose it.

The core notes the served model (and the route) for the request (`note`); the `AnswerHeaders`
middleware writes the headers when the response starts. The version is the one this host's
catalog serves (the registry's ``served``); a model the registry does not know (one served on
demand) is named without a version.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: This request's answer: ``model`` -> served name, ``route`` -> route name.
_ANSWER: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "answer", default=None
)


def forget() -> None:
    """In a background task copied from a request's context: note nothing for that request."""
    _ANSWER.set(None)


def note(model: str, route: str | None = None) -> None:
    """Record that ``model`` answered this request (through ``route``)."""
    answer = _ANSWER.get()
    if answer is not None:
        answer["model"] = model
        if route is not None:
            answer["route"] = route


class AnswerHeaders:
    """ASGI middleware: adds ``X-HFSkills-Model`` (and ``X-HFSkills-Route``) to a response
    that a model answered."""

    def __init__(self, app: ASGIApp, versions: Mapping[str, str]) -> None:
        self.app, self.versions = app, versions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        answer: dict[str, str] = {}
        token = _ANSWER.set(answer)

        async def send_with_answer(message: Message) -> None:
            if message["type"] == "http.response.start" and "model" in answer:
                model = answer["model"]
                version = self.versions.get(model)
                named = f"{model}@{version}" if version is not None else model
                headers = [*message.get("headers", []), (b"x-hfskills-model", _latin(named))]
                if "route" in answer:
                    headers.append((b"x-hfskills-route", _latin(answer["route"])))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_answer)
        finally:
            _ANSWER.reset(token)


def _latin(text: str) -> bytes:
    return text.encode("latin-1", "replace")

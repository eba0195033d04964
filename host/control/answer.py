"""Which model answered: ``X-HFSkills-Model: model_id@version`` (its registration) on every
response a model answered, and ``X-HFSkills-Route: route`` when a route chose it; and which
request it was:
``X-Request-Id`` on every response (the client's own id when it sent a well-formed one, else a
new one), the key that cost events and feedback (``POST /api/feedback``) are filed under; and
``X-HFSkills-Cost-USD`` (6 decimals) when the answering model has a price (host/control/costs.py;
not on a stream, whose headers leave before its cost is known).

The core notes the served model (and the route) for the request (`note`); the `AnswerHeaders`
middleware writes the headers when the response starts. The version is the one this host's
catalog serves (the registry's ``served``); a model the registry does not know (one served on
demand) is named without a version.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: This request's answer: ``model`` -> served name, ``route`` -> route name.
_ANSWER: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "answer", default=None
)


#: A client's ``X-Request-Id`` that is kept (anything else is replaced by a new id).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id() -> str | None:
    """This request's id (None outside a request, e.g. in a background task)."""
    answer = _ANSWER.get()
    return answer.get("request_id") if answer is not None else None


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


def note_cost(usd: float) -> None:
    """Add a call's cost to this request's ``X-HFSkills-Cost-USD`` (a request that runs
    several calls, e.g. ``n`` seeded choices, pays for all of them)."""
    answer = _ANSWER.get()
    if answer is not None:
        answer["cost"] = repr(round(float(answer.get("cost", 0.0)) + usd, 6))


class AnswerHeaders:
    """ASGI middleware: adds ``X-Request-Id`` to every response, and ``X-HFSkills-Model``
    (and ``X-HFSkills-Route``) to a response that a model answered."""

    def __init__(
        self, app: ASGIApp, versions: Mapping[str, str], ids: Mapping[str, str] | None = None
    ) -> None:
        """``versions``: served model -> its registered version; ``ids``: -> its model_id
        when that is not its served name (several catalog entries as versions of one model)."""
        self.app, self.versions, self.ids = app, versions, ids or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        asked = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = asked if _CLIENT_ID.match(asked) else uuid.uuid4().hex
        answer: dict[str, str] = {"request_id": rid}
        token = _ANSWER.set(answer)

        async def send_with_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", _latin(rid))]
                if "model" in answer:
                    model = answer["model"]
                    version = self.versions.get(model)
                    named = f"{self.ids.get(model, model)}@{version}" if version else model
                    headers.append((b"x-hfskills-model", _latin(named)))
                    if "route" in answer:
                        headers.append((b"x-hfskills-route", _latin(answer["route"])))
                if "cost" in answer:
                    headers.append((b"x-hfskills-cost-usd", _latin(f"{float(answer['cost']):.6f}")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_answer)
        finally:
            _ANSWER.reset(token)


def _latin(text: str) -> bytes:
    return text.encode("latin-1", "replace")

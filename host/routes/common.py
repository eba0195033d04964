"""What every route module shares: the app's state, body parsing, and SSE framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..errors import APIError

if TYPE_CHECKING:
    from ..app import Host

M = TypeVar("M", bound=BaseModel)


def host(request: Request) -> Host:
    return request.app.state.host


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def parse(request: Request, schema: type[M], **defaults: Any) -> M:
    """Validate the JSON body as ``model``; ``defaults`` fill fields the body leaves out."""
    data = await json_body(request)
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return schema.model_validate({**defaults, **data})


def sse(data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

"""What every route module shares: the app's state, body parsing, and SSE framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from ..errors import APIError
from ..scheduler import PRIORITIES, RequestContext

if TYPE_CHECKING:
    from ..app import Host

M = TypeVar("M", bound=BaseModel)


def host(request: Request) -> Host:
    return request.app.state.host


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return data


async def parse(request: Request, schema: type[M], **defaults: Any) -> M:
    """Validate the JSON body as ``schema``; ``defaults`` fill fields the body leaves out."""
    return schema.model_validate({**defaults, **json_object(await request.body())})


def context(request: Request) -> RequestContext:
    """Priority and deadline from ``X-Priority`` and ``X-Request-Timeout`` (or the defaults)."""
    priority = request.headers.get("x-priority", "normal").strip().lower()
    if priority not in PRIORITIES:
        raise APIError(400, f"X-Priority must be one of {list(PRIORITIES)}", param="X-Priority")
    raw = request.headers.get("x-request-timeout")
    timeout = host(request).settings.request_timeout_s
    if raw is not None:
        try:
            timeout = float(raw)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            raise APIError(
                400, "X-Request-Timeout must be seconds in (0, 3600]", param="X-Request-Timeout"
            )
    return RequestContext(priority, timeout)


class FastJSONResponse(JSONResponse):
    """JSON through orjson: embeddings are hundreds of floats, and the stdlib encoder is the
    slowest step of answering them."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def sse(data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

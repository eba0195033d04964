"""What every serving module shares: SSE framing, error events, and client field names."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.responses import JSONResponse, StreamingResponse

from hfskills.skillset.runtime.errors import HFSkillsError

from .. import errors


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


def error_event(path: str, exc: BaseException) -> str:
    """A stream's error event: the same body the route would answer as JSON."""
    return sse(errors.body(path, exc))


@contextlib.contextmanager
def client_words(names: dict[str, str]) -> Iterator[None]:
    """Errors from the core name fields as this API's client sent them: ``names`` maps the
    core's parameter names (``inputs``, ``max_new_tokens``) to the client's (``prompt``,
    ``max_tokens``), in the error's ``param`` and at the head of its message."""
    try:
        yield
    except HFSkillsError as exc:
        rename = getattr(exc, "message_for", None)
        param = names.get(exc.param or "", exc.param)
        if rename is not None and exc.param in names:
            exc.message = rename(param)
        else:
            for core, client in names.items():
                if exc.message.startswith(f"{core}:") or exc.message.startswith(f"{core} "):
                    exc.message = client + exc.message[len(core) :]
        exc.param = param
        raise

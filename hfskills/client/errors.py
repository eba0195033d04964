"""The client's exceptions: one per answer a caller may want to handle, each carrying what the
server said.

Policy: every failure the client raises is a `ClientError`. No answer at all (the connection
failed or broke, or the client's timeout passed) is an `APIConnectionError`; an answer with an
error status is an `APIStatusError` subclass chosen by the status, carrying ``status``,
``message``, ``type``, ``code`` and ``param`` parsed from either of the server's error shapes
(docs/api.md#errors):

- OpenAI's, under ``/v1/``, ``/api/`` and ``/model/switch/``:
  ``{"error": {"message", "type", "param", "code"}}``;
- Hugging Face's (TGI, TEI, ``/models/``, ``/admin/``): ``{"error": "...", "error_type": "..."}``,
  which has no code and no param: ``type`` and ``code`` are both its ``error_type``.

A body in neither shape (a proxy's HTML page) keeps its first 500 characters as ``message``.
``retry_after`` is the ``Retry-After`` header in seconds (429, 503), ``attempts`` how many
requests the call made, retries included.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

#: The most characters of a body in no known shape kept as the message.
MAX_MESSAGE = 500


class ClientError(Exception):
    """Anything the hfskills client raises."""


class APIConnectionError(ClientError):
    """No answer: the server could not be reached, or the connection broke."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class APITimeoutError(APIConnectionError):
    """The client's own timeout passed before the answer came."""


class APIStatusError(ClientError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        body: Any = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{status} {code or type or 'error'}: {message}")
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type,
            code,
            param,
        )
        self.retry_after, self.request_id, self.body, self.attempts = (
            retry_after,
            request_id,
            body,
            attempts,
        )


class BadRequestError(APIStatusError):
    """400: a malformed body, an input or parameter the model refuses, a task it does not
    serve."""


class AuthenticationError(APIStatusError):
    """401: no credentials, or they do not verify."""


class PermissionDeniedError(APIStatusError):
    """403: the key's role is below the route's, or it may not use the model."""


class NotFoundError(APIStatusError):
    """404: an unknown model, route, registration or path; a retired model."""


class ConflictError(APIStatusError):
    """409: a write that conflicts (the catalog, a switch already running...)."""


class PayloadTooLargeError(APIStatusError):
    """413: the body, its inputs or their characters are over the server's limits."""


class UnprocessableEntityError(APIStatusError):
    """422: the body does not match the request schema (``param`` names the field)."""


class InferenceFailedError(APIStatusError):
    """424: the model failed while running (or a switch's load failed)."""


class RateLimitError(APIStatusError):
    """429: a rate or concurrency limit, or the model's queue is full; ``retry_after`` says
    when to come back."""


class InternalServerError(APIStatusError):
    """A 5xx without a class of its own."""


class ServiceUnavailableError(InternalServerError):
    """503: the model failed to load, its circuit breaker is open, a route has no target
    left, the registry's database failed..."""


class DeadlineExceededError(InternalServerError):
    """504: the request was still running at its deadline and was cancelled."""


BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    424: InferenceFailedError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    504: DeadlineExceededError,
}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, or None (absent, an HTTP date, negative or not finite)."""
    raw = response.headers.get("retry-after")
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def status_error(response: httpx.Response, attempts: int = 1) -> APIStatusError:
    """The exception for an error answer, from its body in whichever shape it came."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    fields: dict[str, str | None] = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI's shape
        message = _text(error.get("message")) or ""
        fields = {k: _text(error.get(k)) for k in ("type", "code", "param")}
    elif isinstance(error, str):  # Hugging Face's: the error_type is the only code it has
        message = error
        kind = _text(body.get("error_type"))
        fields = {"type": kind, "code": kind}
    else:
        message = response.text[:MAX_MESSAGE] or response.reason_phrase
    status = response.status_code
    cls = BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(
        status,
        message,
        **fields,
        retry_after=retry_after(response),
        request_id=response.headers.get("x-request-id"),
        body=body,
        attempts=attempts,
    )

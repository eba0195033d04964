"""Errors as each API family writes them, with the right status; never a traceback.

Routes under ``/v1/`` and ``/api/`` (the control plane), and vLLM's ``/tokenize``,
``/detokenize``, ``/score`` and ``/v2/rerank``, answer OpenAI's ``{"error": {"message",
"type", "param", "code"}}``; every other route answers as TGI and TEI do, ``{"error",
"error_type"}``. `body` writes both, for a JSON response and for a stream's error event alike;
every error has a code. 429 and 503 carry ``Retry-After`` (`RETRY_AFTER_SECONDS`, the one
place it is set).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from hfskills.skillset.runtime.errors import HFSkillsError, rebuild

log = logging.getLogger("hfskills.host")

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    424: "server_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout",
}
TGI_TYPES = {
    400: "validation",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}
#: The code of an error that names none, by status.
CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_value",
    424: "inference_failed",
    429: "overloaded",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
RETRY_AFTER_SECONDS = "5"


def retry_after(status: int) -> dict[str, str] | None:
    """The ``Retry-After`` header of a status that asks the client to come back, else None."""
    return {"Retry-After": RETRY_AFTER_SECONDS} if status in (429, 503) else None


class DeadlineExceeded(HFSkillsError):
    """The request did not finish by its deadline (``request_timeout_s`` or
    ``X-Request-Timeout``); its work was cancelled."""

    code = "timeout"
    status = 504

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "the request did not finish within its deadline and was cancelled "
            "(request_timeout_s, or the X-Request-Timeout header)"
        )


class ClientGone(HFSkillsError):
    """The client closed the connection before the answer; the work was cancelled."""

    code = "client_closed_request"
    status = 499


class APIError(Exception):
    """An error a route raises on purpose: status, message, and where it came from."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole, as `HFSkillsError` is (it crosses Ray's processes)."""
        return (rebuild, (type(self), self.args, self.__dict__))


#: vLLM's routes outside ``/v1/``: they answer in OpenAI's shape, as vLLM does.
VLLM_PATHS = frozenset({"/tokenize", "/detokenize", "/score", "/v2/rerank"})


def is_openai(path: str) -> bool:
    return (
        path.startswith(("/v1/", "/api/", "/model/switch/"))
        or "/v1/chat/completions" in path
        or path in VLLM_PATHS
    )


def error_body(
    path: str, status: int, message: str, code: str | None = None, param: str | None = None
) -> dict:
    """The error body of ``path``'s API family (a JSON response or a stream's error event)."""
    if is_openai(path):
        return {
            "error": {
                "message": message,
                "type": OPENAI_TYPES.get(status, "server_error"),
                "param": param,
                "code": code or CODES.get(status, "error"),
            }
        }
    return {"error": message, "error_type": TGI_TYPES.get(status, "internal")}


def body(path: str, exc: BaseException) -> dict:
    """`error_body` for any exception a request can raise."""
    return error_body(path, *from_exception(exc))


def error_response(
    path: str,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: int | None = None,
) -> JSONResponse:
    """``retry_after_s``: the error's own ``Retry-After`` (e.g. a budget's reset), else the
    status's."""
    return JSONResponse(
        error_body(path, status, message, code, param),
        status_code=status,
        headers={"Retry-After": str(retry_after_s)}
        if retry_after_s is not None
        else retry_after(status),
    )


def from_exception(exc: BaseException) -> tuple[int, str, str | None, str | None]:
    """(status, message, code, param) for any exception a request can raise."""
    if isinstance(exc, APIError):
        return exc.status, exc.message, exc.code, exc.param
    if isinstance(exc, HFSkillsError):
        status = 400 if exc.status == 422 else exc.status
        return status, exc.message, exc.code, exc.param
    if isinstance(exc, ValidationError):
        where, message = validation_message(exc)
        return 422, message, "invalid_value", where
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return 400, f"request body is not valid JSON: {exc}", "invalid_json", None
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), None, None
    log.exception("unexpected error", exc_info=exc)
    return 424, "inference failed unexpectedly; see the server log", "inference_failed", None


#: Parts of a pydantic error location that name a union branch or a validator, not a field.
_BRANCHES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _branch(part: str) -> bool:
    """A union branch's tag in a location: ``constrained-str`` (a str with constraints) or a
    model's class name (``DocumentText``); the API's field names are lower case."""
    return part.startswith("constrained-") or part[:1].isupper()


def where(loc: tuple[Any, ...]) -> str | None:
    """A pydantic location in the client's words: ``messages[0].content``, not
    ``messages.0.content.str``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _BRANCHES or "[" in part or "(" in part or _branch(part):
            continue
        else:
            text += f".{part}" if text else part
    return text or None


def validation_message(exc: ValidationError) -> tuple[str | None, str]:
    """(field, message) for a refused body: the first field that failed, with what each
    accepted form wanted (a union fails once per form), without pydantic's prefixes."""
    errors = exc.errors(include_url=False)
    field = where(errors[0]["loc"])
    wanted: list[str] = []
    for err in errors:
        if where(err["loc"]) == field:
            text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            if text not in wanted:
                wanted.append(text)
    reason = "; or ".join(wanted)
    return field, f"{field}: {reason}" if field else reason


async def handle(request: Request, exc: Exception) -> JSONResponse:
    status, message, code, param = from_exception(exc)
    return error_response(
        request.url.path, status, message, code, param, getattr(exc, "retry_after_s", None)
    )

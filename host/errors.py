"""Errors as each API family writes them, with the right status; never a traceback.

Routes under ``/v1/`` answer OpenAI's ``{"error": {"message", "type", "param", "code"}}``;
every other route answers as TGI and TEI do, ``{"error", "error_type"}``. 429 and 503 carry
``Retry-After``.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from hfskills.skillset.runtime.errors import HFSkillsError

log = logging.getLogger("hfskills.host")

OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    424: "server_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
TGI_TYPES = {
    400: "validation",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "internal",
    503: "unavailable",
}
RETRY_AFTER_SECONDS = "5"


class APIError(Exception):
    """An error a route raises on purpose: status, message, and where it came from."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def is_openai(path: str) -> bool:
    return path.startswith("/v1/") or "/v1/chat/completions" in path


def error_body(
    path: str, status: int, message: str, code: str | None = None, param: str | None = None
) -> dict:
    if is_openai(path):
        return {
            "error": {
                "message": message,
                "type": OPENAI_TYPES.get(status, "server_error"),
                "param": param,
                "code": code,
            }
        }
    return {"error": message, "error_type": TGI_TYPES.get(status, "internal")}


def error_response(
    path: str, status: int, message: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status in (429, 503) else None
    return JSONResponse(
        error_body(path, status, message, code, param), status_code=status, headers=headers
    )


def from_exception(exc: BaseException) -> tuple[int, str, str | None, str | None]:
    """(status, message, code, param) for any exception a request can raise."""
    if isinstance(exc, APIError):
        return exc.status, exc.message, exc.code, exc.param
    if isinstance(exc, HFSkillsError):
        status = 400 if exc.status == 422 else exc.status
        return status, exc.message, exc.code, exc.param
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return (
            422,
            f"{where}: {err['msg']}" if where else err["msg"],
            "invalid_value",
            where or None,
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return 400, f"request body is not valid JSON: {exc}", "invalid_json", None
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), None, None
    log.exception("unexpected error", exc_info=exc)
    return 424, "inference failed unexpectedly; see the server log", "inference_failed", None


async def handle(request: Request, exc: Exception) -> JSONResponse:
    status, message, code, param = from_exception(exc)
    return error_response(request.url.path, status, message, code, param)

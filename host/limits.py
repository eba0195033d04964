"""Limits per caller and per model: requests and tokens per minute, concurrent requests, the
tokens and the input one request may ask for. Every limit is a setting, off (None) by default.

The policy, stated once:

- **The caller** (`caller_id`) is who per-key limits count: the authenticated principal
  (host/auth.py's ``key:<id>`` or ``jwt:<sub>``) when there is one, else the ``X-User-Id``
  header, else a hash of the API key header the request carries, else the client's address.
  A body's ``user`` field is not a caller: any client could send a new one per request.
- **Rate limits** (the `limits` library, fixed windows of one minute, in this process's
  memory): ``rate_limit_requests_per_minute`` and ``rate_limit_tokens_per_minute`` per caller,
  ``model_rate_limit_requests_per_minute`` and ``model_rate_limit_tokens_per_minute`` per served
  model. A caller's request is every POST (every inference route), counted once when it
  arrives (`KeyLimits`, before the body is read); a model's is every call of the model (a
  response cache hit is none; a route's failover counts each target it tries; ``n`` seeded
  choices are ``n`` calls). Tokens (prompt and generated) count when a call ends; a request is
  admitted while its windows have a token left, so one request may end past the limit and the
  next waits for the reset. Over a limit: 429 ``rate_limit_exceeded`` with ``Retry-After``
  (seconds until the window resets). Every response of a limited request carries OpenAI's
  headers for the tightest limit that applies: ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` (``20ms``, ``1s``,
  ``6m0s``) and the same three for ``-tokens``.
- **A key's own limits** (``requests_per_minute``, ``tokens_per_minute``,
  ``max_concurrent_requests`` on its record: host/control/keys.py, ``PATCH /api/keys/{id}``)
  replace the three per-caller settings for that key, higher or lower; the others still apply.
- **Concurrency**: ``max_concurrent_requests_per_key`` POST requests of one caller at once,
  each until its response has ended (a stream's last byte); one more: 429 at once, without
  queueing.
- **Per request**: ``max_tokens_per_request`` caps the tokens a generation asks for: a
  client's ``max_tokens`` above it is a 400 naming the field, a server default is cut to it;
  ``max_input_chars`` bounds the characters of a request's inputs (prompts, messages, texts;
  a token id counts one): more is a 413 (both checked per model call, before it queues). The
  deadline is ``request_timeout_s`` (scheduler.py).
- The host's own calls (shadow copies, benchmarks) are never limited.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hfskills.skillset.runtime.errors import HFSkillsError, InvalidInput
from hfskills.skillset.runtime.generation import GenerationParams

from . import errors, headers
from .metrics import Metrics
from .workers import Params

#: The limits an API key may set for itself (host/control/keys.py), each in place of the
#: server's per-key setting: rate_limit_requests_per_minute, rate_limit_tokens_per_minute,
#: max_concurrent_requests_per_key.
LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")
#: The API key headers a caller may send (as routes/common.py's `user` reads them).
KEY_HEADERS = ("x-api-key", "authorization", "api-key")


def caller_id(request: Request) -> str:
    """Who a request's per-key limits count: THE SEAM for authentication. The authenticated
    principal's subject (``key:<id>``, ``jwt:<sub>``: host/auth.py keeps the principal in the
    request's scope) when there is one; without authentication, the ``X-User-Id`` header,
    else a hash of the API key header, else the client's address."""
    principal = request.scope.get("state", {}).get("principal")
    subject = getattr(principal, "subject", None)
    if subject:
        return str(subject)
    user = request.headers.get("x-user-id", "").strip()
    if user:
        return f"user:{user}"
    for header in KEY_HEADERS:
        key = request.headers.get(header, "").strip()
        if key:
            return "keyhash:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    client = request.client
    return f"ip:{client.host}" if client is not None else "anonymous"


class RateLimited(HFSkillsError):
    """Over a rate or concurrency limit: come back after ``retry_after_s``."""

    code = "rate_limit_exceeded"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InputTooLarge(HFSkillsError):
    code = "payload_too_large"
    status = 413


class KeyLimits:
    """ASGI middleware: each POST request (every inference route) is one of its caller's
    (`caller_id`), within the caller's concurrency and rates, from its start to the end of
    its response (a stream's included); over a limit, 429 in the route's error shape."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        principal = scope.get("state", {}).get("principal")
        own = getattr(principal, "limits", None)
        if not (self.limits.per_caller or own):
            return await self.app(scope, receive, send)
        caller = caller_id(Request(scope))
        try:
            self.limits.admit_caller(caller, own)
        except RateLimited as refused:
            response = errors.error_response(
                scope["path"],
                429,
                refused.message,
                refused.code,
                retry_after_s=refused.retry_after_s,
            )
            return await response(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.release(caller)


def reset_text(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    seconds = round(seconds, 3)
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{round(rest, 3):g}s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


@functools.lru_cache(maxsize=1024)
def _per_minute(amount: int | None) -> RateLimitItem | None:
    return RateLimitItemPerMinute(amount) if amount else None


class Limits:
    """Every limit of `Settings`, kept in this process (one event loop: no locks needed; the
    `limits` memory storage has its own)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        model_requests_per_minute: int | None = None,
        model_tokens_per_minute: int | None = None,
        max_concurrent_per_key: int | None = None,
        max_tokens_per_request: int | None = None,
        max_input_chars: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics, self.clock = metrics, clock
        self.caller_requests = _per_minute(requests_per_minute)
        self.caller_tokens = _per_minute(tokens_per_minute)
        self.model_requests = _per_minute(model_requests_per_minute)
        self.model_tokens = _per_minute(model_tokens_per_minute)
        self.max_concurrent, self.running = max_concurrent_per_key, dict[str, int]()
        #: Callers whose key has limits of its own -> those (at most one entry per such key).
        self.own: dict[str, Mapping[str, int]] = {}
        self.max_tokens, self.max_input_chars = max_tokens_per_request, max_input_chars

    @functools.cached_property
    def limiter(self) -> FixedWindowRateLimiter:
        """The windows (made on first use: the memory storage runs a timer thread)."""
        return FixedWindowRateLimiter(MemoryStorage())

    # -- per request -----------------------------------------------------------------------
    def checked(self, inputs: list[Any], params: Params) -> Params:
        """A client's call within the per-request limits: its input's size (413) and the
        tokens it asks for (400); returns the params to run with (a server default
        ``max_new_tokens`` cut to the cap)."""
        if self.max_input_chars is not None:
            size = _chars(inputs)
            if size > self.max_input_chars:
                raise InputTooLarge(
                    f"inputs: {size} characters, over the limit of {self.max_input_chars} "
                    "per request (max_input_chars)",
                    param="inputs",
                )
        return self._capped(params)

    def admit_caller(self, caller: str, own: Mapping[str, int] | None = None) -> None:
        """One of the caller's requests: within its concurrency (429 at once) and its rates
        (429); counted, and running until `release`. ``own``: the caller's key's own limits
        (`LIMIT_NAMES`), each in place of the server's setting."""
        if own:
            self.own[caller] = own  # for `used`: its tokens count when the call ends
        else:
            self.own.pop(caller, None)
        most, requests, tokens = self._caller(caller)
        if most is not None and self.running.get(caller, 0) >= most:
            self.metrics.rate_limited.labels(scope="key", limit="concurrency").inc()
            setting = (
                "this key's max_concurrent_requests"
                if own and "max_concurrent_requests" in own
                else "max_concurrent_requests_per_key"
            )
            raise RateLimited(
                f"{most} requests of this caller are running already; at most {most} at once "
                f"({setting})",
                retry_after_s=1,
            )
        self._hit("key", [(requests, caller)], [(tokens, caller)])
        self.running[caller] = self.running.get(caller, 0) + 1

    def _caller(
        self, caller: str | None
    ) -> tuple[int | None, RateLimitItem | None, RateLimitItem | None]:
        """The caller's concurrency and its request and token windows: its key's own where
        it has them, else the server's."""
        own = self.own.get(caller) if caller is not None else None
        if not own:
            return self.max_concurrent, self.caller_requests, self.caller_tokens
        return (
            own.get("max_concurrent_requests", self.max_concurrent),
            _per_minute(own["requests_per_minute"])
            if "requests_per_minute" in own
            else self.caller_requests,
            _per_minute(own["tokens_per_minute"])
            if "tokens_per_minute" in own
            else self.caller_tokens,
        )

    def release(self, caller: str) -> None:
        left = self.running.get(caller, 0) - 1
        if left > 0:
            self.running[caller] = left
        else:
            self.running.pop(caller, None)

    @property
    def configured(self) -> bool:
        """Whether any limit is on."""
        return self.per_caller or any(
            x is not None
            for x in (self.model_requests, self.model_tokens, self.max_tokens, self.max_input_chars)
        )

    @property
    def per_caller(self) -> bool:
        """Whether any limit counts per caller (else `KeyLimits` has nothing to do)."""
        return any(
            x is not None for x in (self.caller_requests, self.caller_tokens, self.max_concurrent)
        )

    def admit_model(self, model: str) -> None:
        """One model call (not a cache hit) within the model's rates."""
        self._hit("model", [(self.model_requests, model)], [(self.model_tokens, model)])

    def used(self, caller: str | None, model: str, tokens: int) -> None:
        """A call's tokens (prompt and generated), counted once it ended."""
        if tokens <= 0:
            return
        caller_tokens = self._caller(caller)[2] if caller is not None else None
        if caller_tokens is not None:
            self.limiter.hit(caller_tokens, caller, cost=tokens)
        if self.model_tokens is not None:
            self.limiter.hit(self.model_tokens, model, cost=tokens)

    # -- helpers ---------------------------------------------------------------------------
    def _capped(self, params: Params) -> Params:
        if self.max_tokens is None or not isinstance(params, GenerationParams):
            return params
        if params.max_new_tokens <= self.max_tokens:
            return params
        if params.fit_context:  # the server's default, not the client's number
            return params.model_copy(update={"max_new_tokens": self.max_tokens})
        raise InvalidInput(
            f"max_new_tokens: {params.max_new_tokens} is over this server's limit of "
            f"{self.max_tokens} tokens per request (max_tokens_per_request)",
            param="max_new_tokens",
        )

    def _hit(
        self,
        scope: str,
        requests: list[tuple[RateLimitItem | None, str]],
        tokens: list[tuple[RateLimitItem | None, str]],
    ) -> None:
        """Test every window first (a refused request consumes nothing), then count the
        request in its request windows; the headers describe the tightest limits, on an
        answer and on a refusal alike."""
        refused: tuple[str, RateLimitItem, str] | None = None
        for kind, pairs in (("requests", requests), ("tokens", tokens)):
            for item, name in pairs:
                if item is not None and refused is None and not self.limiter.test(item, name):
                    refused = (kind, item, name)
        if refused is None:
            for item, name in requests:
                if item is not None:
                    self.limiter.hit(item, name)
        now = self.clock()
        for kind, pairs in (("requests", requests), ("tokens", tokens)):
            for item, name in pairs:
                if item is not None:
                    self._headers(kind, item, name, now)
        if refused is not None:
            kind, item, name = refused
            self.metrics.rate_limited.labels(scope=scope, limit=kind).inc()
            reset = self.limiter.get_window_stats(item, name).reset_time
            wait = max(1, math.ceil(reset - now))
            raise RateLimited(
                f"rate limit of {item.amount} {kind} per minute reached for this "
                f"{'caller' if scope == 'key' else 'model'}; try again in {wait} s",
                retry_after_s=wait,
            )

    def _headers(self, kind: str, item: RateLimitItem, name: str, now: float) -> None:
        """Note ``item``'s window for this request's headers, unless a tighter one is noted."""
        noted = headers.noted()
        if noted is None:
            return
        stats = self.limiter.get_window_stats(item, name)
        remaining = f"x-ratelimit-remaining-{kind}"
        if remaining in noted and int(noted[remaining]) < stats.remaining:
            return
        noted[f"x-ratelimit-limit-{kind}"] = str(item.amount)
        noted[remaining] = str(stats.remaining)
        noted[f"x-ratelimit-reset-{kind}"] = reset_text(max(0.0, stats.reset_time - now))


def _chars(value: Any) -> int:
    """Characters of text anywhere in ``value`` (a token id, or any other number, is one)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_chars(v) for v in value)
    return 1

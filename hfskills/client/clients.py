"""`Client` and `AsyncClient`: send the calls of `calls`, with authentication and retries.

Policy:

- **Auth**: the API key (the constructor's, else ``HFSKILLS_API_KEY``) goes as
  ``Authorization: Bearer``; no key, no header.
- **Retries** (`Retries`), at most ``max_retries`` more requests per call (default 2):
  a 429 or 503 is retried after its ``Retry-After`` seconds (the server refused before doing
  any work, so every call may repeat it), or after a backoff of 0.5, 1, 2... s when it has
  none; a ``Retry-After`` over ``max_retry_wait`` (default 30 s) is not waited for: the error
  is raised at once with its ``retry_after`` (a per-minute limit asks for up to 60 s). A
  connection that failed is retried after the same backoff: always when the request never left
  (connect errors), and only for idempotent calls (GET, PUT, DELETE, a load) when it broke
  later, since the server may have run it. The client's own timeout is never retried (a long
  inference would only run again). Every other status raises at once.
- Errors are `errors` classes; results are `types` models.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

import hfskills

from . import calls
from .calls import Call
from .errors import APIConnectionError, APITimeoutError, retry_after, status_error
from .types import (
    BenchmarkSummary,
    CostReport,
    LoadResult,
    Model,
    RegisteredModel,
    ResidentModel,
    Route,
    Selection,
    SwitchReport,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
#: Inference on a CPU may take minutes (a first request loads the model: SmolLM2 ~20 s).
DEFAULT_TIMEOUT_S = 300.0
#: Failures that never reached the server: safe to repeat for any call.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class Retries:
    """When to try a call again, and after how long (None: raise now)."""

    max_retries: int = 2
    max_wait: float = 30.0
    backoff: float = 0.5

    def after_status(self, response: httpx.Response, attempt: int) -> float | None:
        if attempt >= self.max_retries or response.status_code not in (429, 503):
            return None
        wait = retry_after(response)
        if wait is None:
            wait = self.backoff * 2**attempt
        return wait if wait <= self.max_wait else None

    def after_error(
        self, error: httpx.TransportError, call: Call[Any], attempt: int
    ) -> float | None:
        if attempt >= self.max_retries:
            return None
        if isinstance(error, NEVER_SENT) or (
            call.repeatable and not isinstance(error, httpx.TimeoutException)
        ):
            return min(self.backoff * 2**attempt, self.max_wait)
        return None


def connection_error(error: httpx.TransportError, base: str, attempts: int) -> APIConnectionError:
    cls = (
        APITimeoutError
        if isinstance(error, httpx.TimeoutException) and not isinstance(error, NEVER_SENT)
        else APIConnectionError
    )
    return cls(f"{base}: {type(error).__name__}: {error}", attempts)


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("HFSKILLS_BASE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("HFSKILLS_API_KEY")
        self.headers = {"User-Agent": f"hfskills-client/{hfskills.__version__}"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.headers.update(headers or {})
        self.timeout = timeout
        self.retries = Retries(max_retries, max_retry_wait)


class Client(_Base):
    """A synchronous client of one hfskills server (``base_url``: its root, default
    ``HFSKILLS_BASE_URL`` or http://127.0.0.1:8000). Use it as a context manager, or `close`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, max_retry_wait, headers)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    call.method, call.path, json=call.json, params=call.params or None
                )
            except httpx.TransportError as error:
                wait = self.retries.after_error(error, call, attempt)
                if wait is None:
                    raise connection_error(error, self.base_url, attempt + 1) from error
            else:
                if response.is_success:
                    return call.parse(response)
                wait = self.retries.after_status(response, attempt)
                if wait is None:
                    raise status_error(response, attempt + 1)
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- inference -----------------------------------------------------------------------------

    def infer(self, model: str, inputs: Any, *, task: str | None = None, **params: Any) -> Any:
        """Run ``model`` (a name, an alias or a route) on ``inputs`` with the Inference API's
        ``parameters``: on its first task (``POST /v1/infer/{model}``), or on ``task`` (a task,
        ``text_classification``, or a pipeline, ``summarization``). The answer is the Inference
        API's for the task (JSON; a WAV's bytes for text to audio). Bytes inputs (images,
        audio) are sent as base64."""
        return self._run(calls.infer(model, inputs, task, params))

    # -- models and the model cache --------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Every name a request may give as ``model``: models, aliases, adapters, routes."""
        return self._run(calls.model_ids())

    def models(self) -> list[Model]:
        """The catalog: each model with its tasks and, when loaded, its hardware."""
        return self._run(calls.models())

    def resident(self) -> list[ResidentModel]:
        """The loaded (model, task) pairs, most recently used first."""
        return self._run(calls.resident())

    def load(self, model: str, task: str | None = None) -> LoadResult:
        """Load ``model`` for ``task`` (default: its first) now, and wait for the load."""
        return self._run(calls.load(model, task))

    def unload(self, model: str) -> int:
        """Evict every loaded task of ``model``; how many were evicted (404 when none)."""
        return self._run(calls.unload(model))

    def switch(self, version: str, route: str, model_id: str | None = None) -> SwitchReport:
        """Switch ``route`` to ``version`` of its model (load, warm, swap, drain, unload)."""
        return self._run(calls.switch(version, route, model_id))

    # -- the registry --------------------------------------------------------------------------

    def registered_models(
        self, *, status: str | None = None, task: str | None = None, provider: str | None = None
    ) -> list[RegisteredModel]:
        return self._run(calls.registered_models(status, task, provider))

    def registered_model(self, model_id: str, version: str | None = None) -> RegisteredModel:
        return self._run(calls.registered_model("GET", model_id, version))

    def register(self, model_id: str, **fields: Any) -> RegisteredModel:
        """Register a version (``version``, ``provider``, ``base_url``, ``task_types``, ``tags``,
        ``cost``, ``quality``...), or update the fields given."""
        return self._run(calls.register(model_id, fields))

    def update_model(
        self, model_id: str, version: str | None = None, **patch: Any
    ) -> RegisteredModel:
        """Change ``status``, ``tags``, ``cost`` or ``quality`` (a JSON merge patch)."""
        return self._run(calls.registered_model("PATCH", model_id, version, patch))

    def delete_model(self, model_id: str, version: str | None = None) -> RegisteredModel:
        return self._run(calls.registered_model("DELETE", model_id, version))

    # -- routes and strategies -------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return self._run(calls.routes())

    def route(self, name: str) -> Route:
        return self._run(calls.route("GET", name))

    def put_route(
        self,
        name: str,
        targets: Mapping[str, float],
        fallbacks: list[str] | None = None,
        challenger: Mapping[str, Any] | None = None,
    ) -> Route:
        """Create or replace a route: ``targets`` maps a model (``name`` or ``name@version``)
        to its weight; ``challenger``: ``{"model", "sample"}``."""
        body = calls.route_body(targets, fallbacks, challenger)
        return self._run(calls.route("PUT", name, body))

    def delete_route(self, name: str) -> Route:
        return self._run(calls.route("DELETE", name))

    def select(self, task_type: str, **fields: Any) -> Selection:
        """The best active registered model for ``task_type`` (``strategy``, weights...)."""
        return self._run(calls.select(task_type, fields))

    # -- costs and benchmarks --------------------------------------------------------------------

    def costs(self, hours: float = 24) -> CostReport:
        return self._run(calls.costs(hours))

    def benchmarks(
        self, *, model: str | None = None, hardware: str | None = None, source: str | None = None
    ) -> list[BenchmarkSummary]:
        return self._run(calls.benchmarks(model, hardware, source))

    # -- anything else ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Any other route (budgets, events, feedback...): its JSON answer, with the same
        authentication, retries and errors."""
        return self._run(calls.raw(method, path, json, params))


class AsyncClient(_Base):
    """`Client`'s methods, awaitable, over ``httpx.AsyncClient``. Use ``async with``, or
    `aclose`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, max_retry_wait, headers)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout)

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    call.method, call.path, json=call.json, params=call.params or None
                )
            except httpx.TransportError as error:
                wait = self.retries.after_error(error, call, attempt)
                if wait is None:
                    raise connection_error(error, self.base_url, attempt + 1) from error
            else:
                if response.is_success:
                    return call.parse(response)
                wait = self.retries.after_status(response, attempt)
                if wait is None:
                    raise status_error(response, attempt + 1)
            await asyncio.sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def infer(
        self, model: str, inputs: Any, *, task: str | None = None, **params: Any
    ) -> Any:
        return await self._run(calls.infer(model, inputs, task, params))

    async def model_ids(self) -> list[str]:
        return await self._run(calls.model_ids())

    async def models(self) -> list[Model]:
        return await self._run(calls.models())

    async def resident(self) -> list[ResidentModel]:
        return await self._run(calls.resident())

    async def load(self, model: str, task: str | None = None) -> LoadResult:
        return await self._run(calls.load(model, task))

    async def unload(self, model: str) -> int:
        return await self._run(calls.unload(model))

    async def switch(self, version: str, route: str, model_id: str | None = None) -> SwitchReport:
        return await self._run(calls.switch(version, route, model_id))

    async def registered_models(
        self, *, status: str | None = None, task: str | None = None, provider: str | None = None
    ) -> list[RegisteredModel]:
        return await self._run(calls.registered_models(status, task, provider))

    async def registered_model(self, model_id: str, version: str | None = None) -> RegisteredModel:
        return await self._run(calls.registered_model("GET", model_id, version))

    async def register(self, model_id: str, **fields: Any) -> RegisteredModel:
        return await self._run(calls.register(model_id, fields))

    async def update_model(
        self, model_id: str, version: str | None = None, **patch: Any
    ) -> RegisteredModel:
        return await self._run(calls.registered_model("PATCH", model_id, version, patch))

    async def delete_model(self, model_id: str, version: str | None = None) -> RegisteredModel:
        return await self._run(calls.registered_model("DELETE", model_id, version))

    async def routes(self) -> list[Route]:
        return await self._run(calls.routes())

    async def route(self, name: str) -> Route:
        return await self._run(calls.route("GET", name))

    async def put_route(
        self,
        name: str,
        targets: Mapping[str, float],
        fallbacks: list[str] | None = None,
        challenger: Mapping[str, Any] | None = None,
    ) -> Route:
        body = calls.route_body(targets, fallbacks, challenger)
        return await self._run(calls.route("PUT", name, body))

    async def delete_route(self, name: str) -> Route:
        return await self._run(calls.route("DELETE", name))

    async def select(self, task_type: str, **fields: Any) -> Selection:
        return await self._run(calls.select(task_type, fields))

    async def costs(self, hours: float = 24) -> CostReport:
        return await self._run(calls.costs(hours))

    async def benchmarks(
        self, *, model: str | None = None, hardware: str | None = None, source: str | None = None
    ) -> list[BenchmarkSummary]:
        return await self._run(calls.benchmarks(model, hardware, source))

    async def request(
        self, method: str, path: str, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        return await self._run(calls.raw(method, path, json, params))

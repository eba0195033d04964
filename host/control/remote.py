"""Remote models: registrations with provider ``openai``, served through another
OpenAI-compatible server (OpenAI, vLLM, another hfskills host), named and routed like local ones.

The policy, stated once:

- Which registrations are served (`RemoteModels.update`, called by the registry's refresh after
  every write and at start): per ``model_id`` one version, the newest ``active`` one, else the
  newest ``testing``, ``deprecated``, ``retired`` one (the gate refuses a retired one and notes
  a deprecated one, as for local models; routes skip both). It is served under its
  ``model_id``, for the declared ``task_types`` this client speaks (`TASKS`), unless the
  catalog serves that name locally (logged). Served remote models are `ServedModel`s with
  ``remote`` set: no checkpoint, no memory, never evicted; a changed registration replaces its
  model (the loader drops the old client at its next request) and the routes are recompiled.
- "Loading" one is `connect`: the key from the environment variable that ``api_key_env``
  names (unset: the load fails naming the variable, never a value), sent as a Bearer token by
  a pooled httpx client to ``base_url``. The remote is asked for the model by its ``model_id``.
- `RemoteWorker` speaks OpenAI's API: message lists to ``/chat/completions``, prompt strings
  or token ids to ``/completions`` (one call per input, concurrently), texts to
  ``/embeddings`` (one call per request); streams over SSE with ``include_usage``. The
  request's deadline bounds every call (504 when it passes); a connection gets `CONNECT_S`.
- Errors: the remote refusing the request itself (400, 413, 422) or its model failing on it
  (424) answers the client with that status and the remote's message. The remote failing is a
  failure of the target, which routes fail over on and count towards cooldowns: 5xx, a refused
  or broken connection, or a 401/403/404/405 (the registration's key, URL or model name is
  wrong) answer 502 ``remote_failed``; 408/429 (the remote is busy) answer 503
  ``remote_busy``. The client's message names the model, the server log also the URL.
- Tracing (host/tracing.py): each HTTP call to the remote is a ``remote`` client span (child
  of the request's ``engine`` span; a stream's ends with the stream) and carries its W3C
  ``traceparent``, so the remote's own spans (another hfskills host's, any traced server's)
  join the request's trace.
- Usage: the remote's ``usage`` (prompt and completion tokens); results carry
  ``completion_tokens`` (no token ids come back: ``generation.generated_tokens``). A streamed
  token's id is unknown (`UNKNOWN_ID`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from hfskills.skillset.runtime import Endpoint
from hfskills.skillset.runtime.errors import HFSkillsError, InvalidInput, UnsupportedTask
from hfskills.skillset.runtime.generation import (
    Event,
    FinalEvent,
    GenerationParams,
    TokenEvent,
)

from .. import tracing
from ..catalog import Catalog, CatalogError, ServedModel
from ..discovery import SkillInfo
from ..errors import DeadlineExceeded
from ..protocol.registry import RegisteredModelOut
from ..workers import Params, Row

log = logging.getLogger("hfskills.host")

T = TypeVar("T")

#: The tasks a remote model serves here, and the OpenAI paths they use.
TASKS = ("text_generation", "text_embedding")
CHAT, COMPLETIONS, EMBEDDINGS = "chat/completions", "completions", "embeddings"
#: What a remote model's endpoint reports as its hardware.
HARDWARE = "remote"
#: Seconds a connection to the remote may take (within the request's deadline).
CONNECT_S = 10.0
#: A streamed token's id: the remote does not send it.
UNKNOWN_ID = -1
#: Remote statuses that are the request's own error, answered as they are.
PASSED = frozenset({400, 413, 422, 424})
#: Remote statuses that mean it is busy (503 here); every other failure is a 502.
BUSY = frozenset({408, 429})
#: Which registration of a model_id is served: the best status, then the newest.
RANK = {"active": 3, "testing": 2, "deprecated": 1, "retired": 0}


@dataclass(frozen=True)
class RemoteSpec:
    """Where a served remote model answers, as its registration says."""

    base_url: str
    api_key_env: str | None
    version: str


class OpenAIProvider:
    """Stands where a local model's skill class is read (listings, the log): a remote model
    has no skill, only its provider."""

    model_type = "openai"
    family = "remote"
    tasks = TASKS
    model_classes: ClassVar[dict[str, str]] = {}


PROVIDER = SkillInfo(name="openai", cls=OpenAIProvider, path=Path(__file__))


# -- the registry's remote registrations, served ---------------------------------------------


class RemoteModels:
    """Keeps the catalog's remote models equal to the registry's ``openai`` registrations."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        #: served remote name -> the version it serves (``X-HFSkills-Model``, route targets).
        self.versions: dict[str, str] = {}
        #: Called after the served set changed (the routes recompile their targets).
        self.on_change: Callable[[], None] | None = None
        self._lock = threading.Lock()  # refreshes run in worker threads
        self._refused: dict[str, str] = {}  # name -> why it is not served (logged once)

    def update(self, records: Iterable[RegisteredModelOut]) -> dict[str, RegisteredModelOut]:
        """Serve the registrations among ``records`` (any provider; others are ignored);
        returns served name -> the registration it serves."""
        chosen: dict[str, RegisteredModelOut] = {}
        for record in records:
            if record.provider != "openai":
                continue
            best = chosen.get(record.model_id)
            if best is None or _rank(record) > _rank(best):
                chosen[record.model_id] = record
        with self._lock:
            wanted: dict[str, ServedModel] = {}
            refused: dict[str, str] = {}
            for name, record in chosen.items():
                local = self.catalog.get(name)
                tasks = tuple(t for t in record.task_types if t in TASKS)
                if local is not None and local.remote is None:
                    refused[name] = f"this host's catalog serves {name!r} as a local model"
                elif not tasks:
                    refused[name] = (
                        f"its task_types {record.task_types} hold none that a remote model "
                        f"serves here ({list(TASKS)})"
                    )
                else:
                    wanted[name] = served_model(record, tasks)
            for name, why in refused.items():
                if self._refused.get(name) != why:
                    log.warning(
                        "remote model %s version %s is not served: %s",
                        name,
                        chosen[name].version,
                        why,
                    )
            self._refused = refused
            current = {n: m for n, m in self.catalog.models.items() if m.remote is not None}
            gone = [name for name, model in current.items() if wanted.get(name) != model]
            new = [model for name, model in wanted.items() if current.get(name) != model]
            if gone or new:
                try:
                    self.catalog.replace(gone, new)
                except CatalogError as error:  # a name taken meanwhile (an on-demand model)
                    log.error("remote models not updated: %s", error.message)
                    wanted = {n: m for n, m in current.items() if n in chosen}  # as they were
                    gone, new = [], []
            for name in gone:
                if name not in wanted:
                    log.info("remote model %s is no longer served", name)
            for model in new:
                assert model.remote is not None
                log.info(
                    "serving remote model %s version %s (%s: %s) at %s",
                    model.name,
                    model.remote.version,
                    PROVIDER.name,
                    ", ".join(model.tasks),
                    model.location,
                )
            for name in [n for n in self.versions if n not in wanted]:
                del self.versions[name]
            self.versions.update({name: chosen[name].version for name in wanted})
        if (gone or new) and self.on_change is not None:
            self.on_change()
        return {name: chosen[name] for name in wanted}


def _rank(record: RegisteredModelOut) -> tuple[int, Any]:
    return RANK.get(record.status, -1), record.created_at


def served_model(record: RegisteredModelOut, tasks: tuple[str, ...]) -> ServedModel:
    assert record.base_url is not None  # the registry refuses openai without one
    return ServedModel(
        name=record.model_id,
        location=record.base_url,
        skill=PROVIDER,
        tasks=tasks,
        hardware=(),
        pinned=False,
        aliases=(),
        remote=RemoteSpec(record.base_url, record.api_key_env, record.version),
    )


# -- "loading" one: a client -------------------------------------------------------------------


class MissingKey(HFSkillsError):
    code = "remote_key_missing"
    status = 503


def connect(model: ServedModel, task: str) -> tuple[Endpoint, None, RemoteWorker]:
    """A remote model's endpoint (no weights: nothing to load) and worker (its client). Call on
    the event loop."""
    spec = model.remote
    assert spec is not None
    key = None
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise MissingKey(
                f"the environment variable {spec.api_key_env} (api_key_env of remote model "
                f"{model.name!r} version {spec.version}) is not set in this server's environment"
            )
    worker = RemoteWorker(model.name, spec, task, key)
    endpoint = Endpoint(
        model=None,
        processor=NoTokenizer(model.name),
        task=task,
        hardware=HARDWARE,
        device=spec.base_url,
        dtype="remote",
        model_id=model.name,
        skill=PROVIDER.name,
    )
    return endpoint, None, worker


class NoTokenizer:
    """A remote model's tokenizer is on its server: decoding token ids here says so."""

    def __init__(self, name: str) -> None:
        self.name = name

    def decode(self, *args: Any, **kwargs: Any) -> str:
        raise UnsupportedTask(
            f"model {self.name!r} is remote: its tokenizer is on its server, so token ids "
            "cannot be decoded here (echo of a token-id prompt)",
            param="echo",
        )


# -- errors --------------------------------------------------------------------------------------


class RemoteRefused(HFSkillsError):
    """The remote refused the request itself (or its model failed on it): its status."""

    code = "invalid_request"

    def __init__(self, status: int, message: str, code: str | None, param: str | None) -> None:
        super().__init__(message, param=param)
        self.status = status
        if code:
            self.code = code


class RemoteFailed(HFSkillsError):
    """The remote failed, is unreachable, or refuses this host's registration."""

    code = "remote_failed"
    status = 502


class RemoteBusy(HFSkillsError):
    """The remote is rate limiting or timing out requests."""

    code = "remote_busy"
    status = 503


# -- the worker ------------------------------------------------------------------------------


class RemoteWorker:
    """The Worker contract (host/workers.py) over a remote OpenAI-compatible server."""

    def __init__(self, name: str, spec: RemoteSpec, task: str, key: str | None) -> None:
        self.name, self.spec, self.task = name, spec, task
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(base_url=spec.base_url, headers=headers)
        self.loop = asyncio.get_running_loop()
        self._closing: set[asyncio.Task[None]] = set()

    async def run(self, inputs: list[Any], params: Params, deadline: float) -> list[Row]:
        if self.task == "text_embedding":
            return await self._embed(inputs, params, deadline)
        body = generation_body(params)
        tasks = [asyncio.ensure_future(self._generate(item, body, deadline)) for item in inputs]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # one failed (or the caller left): the others stop too
                task.cancel()

    async def stream(self, prompt: Any, params: Params, deadline: float) -> AsyncIterator[Event]:
        if self.task != "text_generation":
            raise UnsupportedTask(f"{self.task} on model {self.name!r} does not stream")
        path, body = self._request(prompt, generation_body(params))
        body.update(stream=True, stream_options={"include_usage": True})
        events = self._events(path, body, deadline)
        try:
            first = await anext(events)  # the remote accepted: refusals are a normal 4xx
        except BaseException:
            await events.aclose()
            raise
        return _chain(first, events)

    def close(self) -> None:
        """Called in a worker thread: the client closes on its own event loop."""

        def closing() -> None:
            task = self.loop.create_task(self.client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        with contextlib.suppress(RuntimeError):  # the loop has closed: so has the client's pool
            self.loop.call_soon_threadsafe(closing)

    # -- generation and embeddings --------------------------------------------------------------

    def _request(self, prompt: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path and body for one prompt: a message list chats, text or ids complete."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            return CHAT, {"model": self.name, "messages": prompt, **params}
        return COMPLETIONS, {"model": self.name, "prompt": prompt, **params}

    async def _generate(self, prompt: Any, params: dict[str, Any], deadline: float) -> Row:
        path, body = self._request(prompt, params)
        data = await self._post(path, body, deadline)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if path == CHAT else choice["text"]
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            result = {
                "text": text or "",
                "token_ids": [],
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "finish_reason": choice.get("finish_reason") or "stop",
                "prompt_tokens": prompt_tokens,
                "stop_sequence": None,
            }
        except (KeyError, IndexError, TypeError, ValueError):
            raise self._malformed(path) from None
        return Row(result, prompt_tokens)

    async def _embed(self, inputs: list[Any], params: Params, deadline: float) -> list[Row]:
        body = {"model": self.name, "input": list(inputs), "encoding_format": "float"}
        body.update(embedding_params(params))
        data = await self._post(EMBEDDINGS, body, deadline)
        try:
            items = sorted(data["data"], key=lambda item: int(item["index"]))
            vectors = [list(item["embedding"]) for item in items]
            usage = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, TypeError, ValueError):
            raise self._malformed(EMBEDDINGS) from None
        if len(vectors) != len(inputs):
            raise RemoteFailed(
                f"remote model {self.name!r} answered {len(vectors)} embeddings for "
                f"{len(inputs)} inputs"
            )
        # the remote reports the request's prompt tokens, not each input's: the first row
        # carries them (usage is summed per request)
        return [Row(vector, usage if i == 0 else 0) for i, vector in enumerate(vectors)]

    # -- HTTP ------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.spec.base_url.rstrip('/')}/{path}"

    async def _post(self, path: str, body: dict[str, Any], deadline: float) -> Any:
        with tracing.outgoing("POST", self._url(path), model=self.name) as call:
            response = await self._call(
                self.client.post(
                    path, json=body, timeout=self._timeout(deadline), headers=tracing.headers(call)
                ),
                deadline,
            )
            call.set_attribute("http.response.status_code", response.status_code)
            if response.status_code != 200:
                raise self._refusal(path, response)
        try:
            return response.json()
        except ValueError:
            raise self._malformed(path) from None

    async def _events(
        self, path: str, body: dict[str, Any], deadline: float
    ) -> AsyncIterator[Event]:
        """The remote's SSE stream as token events, then one final event with its usage."""
        with tracing.outgoing("POST", self._url(path), model=self.name, stream=True) as call:
            request = self.client.build_request(
                "POST",
                path,
                json=body,
                timeout=self._timeout(deadline),
                headers=tracing.headers(call),
            )
            response = await self._call(self.client.send(request, stream=True), deadline)
            call.set_attribute("http.response.status_code", response.status_code)
            try:
                if response.status_code != 200:
                    await self._call(response.aread(), deadline)
                    raise self._refusal(path, response)
                lines = response.aiter_lines()
                pieces: list[str] = []
                finish: str | None = None
                usage: dict[str, Any] = {}
                while True:
                    try:
                        line = await self._call(anext(lines), deadline)
                    except StopAsyncIteration:
                        break
                    if not line.startswith("data:"):
                        continue  # blank lines, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise self._malformed(path) from None
                    if chunk.get("error"):
                        message, _, _ = _error_fields(chunk)
                        raise RemoteFailed(f"remote model {self.name!r} failed: {message}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        text = delta.get("content") if path == CHAT else choice.get("text")
                        if text:
                            pieces.append(text)
                            yield TokenEvent(UNKNOWN_ID, text)
                        finish = choice.get("finish_reason") or finish
                completion = usage.get("completion_tokens")
                yield FinalEvent(
                    text="",
                    generated_text="".join(pieces),
                    token_ids=[],
                    finish_reason=finish or "stop",
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(completion) if completion is not None else len(pieces),
                )
            finally:
                await response.aclose()

    @staticmethod
    def _timeout(deadline: float) -> httpx.Timeout:
        """httpx's limits: the deadline (with a second's slack, so that the deadline itself
        answers 504), and `CONNECT_S` to connect."""
        if deadline == float("inf"):
            return httpx.Timeout(None, connect=CONNECT_S)
        left = max(0.0, deadline - asyncio.get_running_loop().time()) + 1.0
        return httpx.Timeout(left, connect=min(CONNECT_S, left))

    async def _call(self, work: Awaitable[T], deadline: float) -> T:
        """Await one step of a call to the remote within the request's deadline."""
        try:
            async with asyncio.timeout_at(None if deadline == float("inf") else deadline):
                return await work
        except TimeoutError:
            raise DeadlineExceeded() from None
        except httpx.HTTPError as error:  # refused, reset, a connect timeout, a broken stream
            log.warning(
                "remote model %s at %s is unreachable: %s: %s",
                self.name,
                self.spec.base_url,
                type(error).__name__,
                error,
            )
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RemoteFailed(
                f"remote model {self.name!r} is unreachable ({type(error).__name__}"
                + (f": {reason})" if reason else ")")
            ) from None

    def _refusal(self, path: str, response: httpx.Response) -> HFSkillsError:
        status = response.status_code
        try:
            message, code, param = _error_fields(response.json())
        except ValueError:
            message, code, param = response.text.strip()[:500] or response.reason_phrase, None, None
        if status in PASSED:
            return RemoteRefused(status, message, code, param)
        log.warning(
            "remote model %s at %s answered %d on /%s: %s",
            self.name,
            self.spec.base_url,
            status,
            path,
            message,
        )
        failure = f"remote model {self.name!r} answered {status}: {message}"
        return RemoteBusy(failure) if status in BUSY else RemoteFailed(failure)

    def _malformed(self, path: str) -> RemoteFailed:
        log.warning(
            "remote model %s at %s: /%s answered outside OpenAI's shape",
            self.name,
            self.spec.base_url,
            path,
        )
        return RemoteFailed(f"remote model {self.name!r} answered outside OpenAI's shape")


async def _chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]  # the remote's response closes


def _error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """(message, code, param) of an error body: OpenAI's, TGI's, or anything else."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error), error.get("code"), error.get("param")
    if isinstance(error, str):
        return error, None, None
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"]), None, None
    return str(body)[:500], None, None


def generation_body(params: Params) -> dict[str, Any]:
    """Generation parameters as OpenAI's body fields (``top_k``, ``min_tokens``,
    ``repetition_penalty`` and ``ignore_eos`` as vLLM takes them, sent only when asked for).
    A server default budget (``fit_context``) is left to the remote's own default."""
    p = params if isinstance(params, GenerationParams) else GenerationParams.parse(params)
    for name in ("logprobs", "prompt_logprobs"):
        if getattr(p, name) is not None:  # the remote's answer is relayed as text only
            raise InvalidInput(f"{name}: a remote model's logprobs are not relayed", param=name)
    body: dict[str, Any] = {}
    if not p.fit_context:
        body["max_tokens"] = p.max_new_tokens
    if p.sampling:
        body["temperature"] = p.temperature if p.temperature is not None else 1.0
        if p.top_p is not None:
            body["top_p"] = p.top_p
        if p.top_k:
            body["top_k"] = p.top_k
    else:
        body["temperature"] = 0.0
    if p.repetition_penalty is not None:
        body["repetition_penalty"] = p.repetition_penalty
    if p.min_new_tokens:
        body["min_tokens"] = p.min_new_tokens
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if p.ignore_eos:
        body["ignore_eos"] = True
    return body


#: Embedding parameters whose value here is what a remote answers anyway (TEI's defaults).
NO_OPS = {"normalize": True, "truncate": False}


def embedding_params(params: Params) -> dict[str, Any]:
    """An embedding request's parameters as OpenAI's body fields: ``dimensions``; TEI's
    defaults are no-ops; anything else is refused by name."""
    if isinstance(params, GenerationParams):
        raise InvalidInput("embeddings take no generation parameters")
    body: dict[str, Any] = {}
    for key, value in params.items():
        if key == "dimensions":
            body["dimensions"] = value
        elif value is not None and NO_OPS.get(key, object()) != value:
            raise InvalidInput(
                f"{key}={value!r} is not available for a remote model (its server decides); "
                "a remote embedding takes dimensions only",
                param=key,
            )
    return body

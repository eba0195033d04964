"""What every route module shares: the app's state, body parsing, the request context, and
JSON responses."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from .. import cache, limits
from ..auth import principal_of
from ..control.strategies import AUTO, STRATEGIES
from ..errors import APIError
from ..protocol.hf import InferenceRequest
from ..scheduler import PRIORITIES, RequestContext
from ..serving.common import FastJSONResponse
from ..tracing import span

if TYPE_CHECKING:
    from ..state import Host

M = TypeVar("M", bound=BaseModel)


def host(request: Request) -> Host:
    return request.app.state.host


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # arrays or objects nested deeper than the parser's stack
        raise APIError(
            400, "request body is not valid JSON: nested too deeply", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and _lone_surrogate(data):
        # valid JSON syntax, but not text: tokenizers fail on it (424, counted by the model's
        # circuit breaker), so a client could open a breaker with it
        raise APIError(
            400,
            "request body is not valid JSON: a string holds an unpaired UTF-16 surrogate "
            "escape (\\ud800-\\udfff), which is not a Unicode character",
            code="invalid_json",
        )
    return data


#: a \uD800-\uDFFF escape: json.loads joins a pair into one character and keeps a lone one
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(data: Any) -> bool:
    """Whether a string in ``data`` (keys included) holds an unpaired surrogate (iterative:
    ``data`` may be nested as deep as the parser allows)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


async def parse(request: Request, schema: type[M], **defaults: Any) -> M:
    """Validate the JSON body as ``schema``; ``defaults`` fill fields the body leaves out."""
    with span("parse"):  # reading the body included
        return schema.model_validate({**defaults, **json_object(await request.body())})


def user(request: Request, named: str | None = None) -> str | None:
    """Who a route's assignment sticks to: the body's ``user`` (``named``), else the
    ``X-User-Id`` header, else the authenticated subject (host/auth.py), else the API key the
    request carries; None: anonymous."""
    if named:
        return f"user:{named}"
    header = request.headers.get("x-user-id", "").strip()
    if header:
        return f"user:{header}"
    principal = principal_of(request)
    if principal is not None:
        return principal.subject
    key = request.headers.get("authorization") or request.headers.get("api-key")
    return f"key:{key.strip()}" if key and key.strip() else None


def context(request: Request, named_user: str | None = None) -> RequestContext:
    """Priority and deadline from ``X-Priority`` and ``X-Request-Timeout`` (or the defaults),
    the user (`user`; ``named_user``: the body's ``user``), ``model: "auto"``'s strategy
    (``X-HFSkills-Strategy``), and a watch on the client's connection (call it after the body
    has been read)."""
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
    strategy = request.headers.get("x-hfskills-strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise APIError(
            400,
            f"X-HFSkills-Strategy must be one of {list(STRATEGIES)}",
            param="X-HFSkills-Strategy",
        )
    raw_weights = request.headers.get("x-hfskills-weights")
    ctx = RequestContext.start(
        priority,
        timeout,
        lambda: _disconnect(request),
        user(request, named_user),
        strategy,
        weights=weights(raw_weights) if raw_weights is not None else None,
    )
    # per-key limits' caller (host/limits.py) and the response cache's Cache-Control
    cache_use = cache.use(request.headers.get("cache-control"))
    return dataclasses.replace(ctx, caller=limits.caller_id(request), cache=cache_use)


#: The terms ``X-HFSkills-Weights`` may weigh (strategies.py's composite score).
WEIGHT_TERMS = ("quality", "cost", "latency")


def weights(raw: str) -> tuple[float, float, float]:
    """``quality=0.6, cost=0.3, latency=0.1`` (a term left out weighs 0) as a weight triple,
    or a 400 naming the header."""
    given: dict[str, float] = {}
    for part in raw.split(","):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name not in WEIGHT_TERMS or name in given or not 0 <= number <= 1e6:
            given = {}
            break
        given[name] = number
    if not given or not any(given.values()):
        raise APIError(
            400,
            "X-HFSkills-Weights must be terms like 'quality=0.6, cost=0.3, latency=0.1': each of "
            f"{list(WEIGHT_TERMS)} at most once, numbers in [0, 1e6], not all 0",
            param="X-HFSkills-Weights",
        )
    q, c, latency = (given.get(term, 0.0) for term in WEIGHT_TERMS)
    return q, c, latency


async def _disconnect(request: Request) -> None:
    """Returns when the client closes its connection (the server's ``http.disconnect``)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def model_json(answer: BaseModel | Response) -> Response:
    """A response model as JSON (a response, e.g. an SSE stream, passes through)."""
    if isinstance(answer, Response):
        return answer
    return FastJSONResponse(answer.model_dump(mode="json"))


def routed(request: Request, name: str) -> bool:
    """Whether ``name`` is a route or ``auto`` (the service chooses the model per request), as
    `InferenceService` decides it: ``auto`` unless a model is called so, then the routes."""
    h = host(request)
    if name == AUTO and h.service.auto is not None and h.catalog.get(name) is None:
        return True
    return h.service.router is not None and h.service.router.get(name) is not None


def default_model(request: Request, task: str, model: str | None = None) -> str:
    """The body's ``model`` (a model, route or ``auto``), else ``default_models``' route, else
    the default model of ``task`` (the root TGI/TEI routes)."""
    if model is not None:
        return model
    configured = host(request).settings.default_models.get(task)
    if configured is not None and routed(request, configured):
        return configured
    name = host(request).defaults().get(task)
    if name is None:
        raise APIError(404, f"no model serves {task}; configure one (default_models)")
    return name


def inference_request(request: Request, raw: bytes) -> InferenceRequest:
    """An Inference API body: JSON, or a raw image/audio body (the client sends bytes when
    there are no parameters, often without a content type)."""
    if not raw:
        raise APIError(400, "the request body is empty", code="invalid_input")
    content_type = request.headers.get("content-type", "")
    if "json" in content_type or raw.lstrip()[:1] == b"{":
        return InferenceRequest.model_validate(json_object(raw))
    return InferenceRequest(inputs=raw)


def route_task(request: Request, name: str, task: str | None) -> str:
    """The task a route runs on ``/models/{name}``: the pipeline's, else its first target's
    first task (what the model named alone would run)."""
    if task is not None:
        return task
    router = host(request).service.router
    plan = router.get(name) if router is not None else None
    first = host(request).catalog.get(plan.targets[0]) if plan is not None else None
    if first is None:  # auto: no task of its own
        raise APIError(
            400,
            f"model {name!r} chooses among the models of one task: name it, "
            f"POST /models/{name}/pipeline/{{task}} (e.g. feature-extraction)",
            param="model",
        )
    return first.tasks[0]

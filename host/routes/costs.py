"""The accounts' routes: ``GET /api/models/costs``, ``/api/budgets``, ``/api/events`` and
``/api/feedback`` (docs/control-plane.md#costs-budgets-events-and-feedback).

Reads first write what is buffered (`Writer.flush`, in a thread), so a call that just ended is
in the answer. Errors answer in the OpenAI shape like the rest of ``/api/``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import ControlPlane
from ..control.budgets import GLOBAL, MODEL_PREFIX
from ..control.events import KINDS, MAX_EVENTS
from ..errors import APIError
from ..openapi import protocol, query
from ..protocol.costs import BudgetBody, FeedbackBody
from .common import host, parse
from .registry import actor, call

#: The longest window ``GET /api/models/costs`` reports (a year).
MAX_HOURS = 24 * 366


def control(request: Request) -> ControlPlane:
    return host(request).control


def _number(request: Request, name: str, default: str, low: float, high: float) -> float:
    raw = request.query_params.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise APIError(400, f"{name} must be a number in [{low:g}, {high:g}]", param=name)
    return value


async def _flushed(request: Request) -> ControlPlane:
    plane = control(request)
    await call(plane.writer.flush)
    return plane


@protocol(
    None,
    query={"hours": query("number", "the window, in hours", minimum=1 / 60, maximum=MAX_HOURS)},
)
async def costs(request: Request) -> Response:
    """Costs over the last ``?hours=`` (default 24): total, by model, top models, efficiency
    (with each model version's feedback)."""
    hours = _number(request, "hours", "24", 1 / 60, MAX_HOURS)
    plane = await _flushed(request)
    report = await call(plane.costs.report, hours)
    feedback = plane.feedback.summary()
    for name, metrics in report["efficiency_metrics"].items():
        metrics["feedback"] = feedback.get(name)
    return JSONResponse(report)


def _scope(request: Request) -> str:
    scope = request.path_params["scope"]
    if scope != GLOBAL and not (scope.startswith(MODEL_PREFIX) and len(scope) > len(MODEL_PREFIX)):
        raise APIError(
            400,
            f"scope must be {GLOBAL!r} or '{MODEL_PREFIX}<model_id>', not {scope!r}",
            param="scope",
        )
    return scope


@protocol(None)
async def list_budgets(request: Request) -> Response:
    """Every budget with today's spend, reservations and thresholds crossed."""
    return JSONResponse({"object": "list", "data": control(request).budgets.status()})


@protocol(BudgetBody)
async def put_budget(request: Request) -> Response:
    """Create or change a daily budget (201 created, 200 changed)."""
    scope = _scope(request)
    body = await parse(request, BudgetBody)
    plane = control(request)
    if scope != GLOBAL:  # a budget for a model that is not registered would never apply
        await call(plane.registry.get, scope.removeprefix(MODEL_PREFIX))
    status, created = await call(plane.budgets.put, scope, body.daily_usd)
    return JSONResponse(status, status_code=201 if created else 200)


@protocol(None)
async def delete_budget(request: Request) -> Response:
    """Remove a budget."""
    scope = _scope(request)
    await call(control(request).budgets.delete, scope)
    return JSONResponse({"scope": scope, "deleted": True})


@protocol(
    None,
    query={
        "kind": query(enum=KINDS),
        "model_id": query(),
        "request_id": query(),
        "after": query("integer", "the last id read", minimum=0, maximum=2**62),
        "limit": query("integer", minimum=1, maximum=MAX_EVENTS),
    },
)
async def events(request: Request) -> Response:
    """Stored events, oldest first: ``?kind=``, ``?model_id=``, ``?request_id=``, ``?after=``
    (the last id read), ``?limit=``."""
    kind = request.query_params.get("kind")
    if kind is not None and kind not in KINDS:
        raise APIError(400, f"kind must be one of {list(KINDS)}", param="kind")
    after = int(_number(request, "after", "0", 0, 2**62))
    limit = int(_number(request, "limit", "100", 1, MAX_EVENTS))
    params = request.query_params
    plane = await _flushed(request)
    rows: list[dict[str, Any]] = await call(
        plane.events.list, kind, params.get("model_id"), params.get("request_id"), after, limit
    )
    return JSONResponse({"object": "list", "data": rows})


@protocol(FeedbackBody)
async def feedback(request: Request) -> Response:
    """A score or a label for an answered request (its ``X-Request-Id``), filed under the model
    version that answered (201)."""
    body = await parse(request, FeedbackBody)
    plane = await _flushed(request)
    stored = await call(
        plane.feedback.submit, body.request_id, body.score, body.label, body.comment, actor(request)
    )
    return JSONResponse(stored, status_code=201)


@protocol(None, query={"model_id": query()})
async def feedback_summary(request: Request) -> Response:
    """Per model version: feedback count, mean score, label counts (``?model_id=``)."""
    summary = control(request).feedback.summary(request.query_params.get("model_id"))
    return JSONResponse({"object": "feedback.summary", "data": summary})


#: Before the registry's ``/api/models/{model_id}`` (``costs`` is a reserved model_id).
routes = [
    Route("/api/models/costs", costs, methods=["GET"]),
    Route("/api/budgets", list_budgets, methods=["GET"]),
    Route("/api/budgets/{scope:path}", put_budget, methods=["PUT"]),
    Route("/api/budgets/{scope:path}", delete_budget, methods=["DELETE"]),
    Route("/api/events", events, methods=["GET"]),
    Route("/api/feedback", feedback, methods=["POST"]),
    Route("/api/feedback", feedback_summary, methods=["GET"]),
]

"""Scoring routes: ``POST /v1/rerank`` and ``/v2/rerank`` (vLLM, Cohere, Jina), vLLM's
``POST /score`` and ``/v1/score``, TEI's ``POST /rerank`` and ``POST /predict``. The answers
are written by `host.serving.scoring`; a named embedding model scores by cosine similarity.

Without a ``model``, a rerank or score runs on ``default_models.rerank``, else the first
served cross-encoder (a ``text_classification`` model whose checkpoint has one label);
``/predict`` on the default ``text_classification`` model.
"""

from __future__ import annotations

import functools
import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hfskills.skillset.runtime import checkpoint as checkpoints

from ..errors import APIError
from ..openapi import protocol
from ..protocol import scoring as sc
from ..serving import scoring as serving
from .common import context, default_model, host, model_json, parse, routed

RERANK = "rerank"  # the default_models key of the default cross-encoder


@functools.lru_cache(maxsize=256)
def _labels(location: str) -> int | None:
    """How many labels a checkpoint's config names (None: unreadable)."""
    try:
        path = checkpoints.resolve(location).file("config.json")
        config = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except Exception:
        return None
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) else config.get("num_labels")


def reranker(request: Request, model: str | None) -> str:
    """The body's model, else ``default_models.rerank``, else the first served cross-encoder."""
    if model is not None:
        return model
    configured = host(request).settings.default_models.get(RERANK)
    if configured is not None and routed(request, configured):
        return configured
    chosen = host(request).defaults().get(RERANK)
    if chosen is not None:
        return chosen
    status = host(request).control.gate.status
    for served in host(request).catalog.models.values():
        if served.on_demand or served.remote is not None or status(served.name) is not None:
            continue
        if serving.TASK in served.tasks and _labels(served.location) == 1:
            return served.name
    raise APIError(
        404,
        "no cross-encoder is served (a text_classification model with one label); name one "
        "in model, or configure default_models.rerank",
        param="model",
    )


@protocol(sc.RerankRequest, sc.RerankResponse)
async def rerank(request: Request) -> Response:
    """Rerank documents by relevance to a query (vLLM, Cohere and Jina's rerank)."""
    body = await parse(request, sc.RerankRequest)
    name = reranker(request, body.model)
    answer = await serving.rerank(host(request).service, name, body, context(request, body.user))
    return model_json(answer)


@protocol(sc.ScoreRequest, sc.ScoreResponse)
async def score(request: Request) -> Response:
    """Score text pairs, in pair order (vLLM's score)."""
    body = await parse(request, sc.ScoreRequest)
    name = reranker(request, body.model)
    answer = await serving.score(host(request).service, name, body, context(request, body.user))
    return model_json(answer)


@protocol(sc.TEIRerankRequest)
async def tei_rerank(request: Request) -> Response:
    """TEI: rerank texts by relevance to a query, as ``[{index, score, text?}]``."""
    body = await parse(request, sc.TEIRerankRequest)
    name = reranker(request, body.model)
    return await serving.tei_rerank(host(request).service, name, body, context(request))


@protocol(sc.PredictRequest)
async def predict(request: Request) -> Response:
    """TEI: classify texts or text pairs, as ``[{label, score}]`` (a list per sequence)."""
    body = await parse(request, sc.PredictRequest)
    name = default_model(request, serving.TASK, body.model)
    return await serving.predict(host(request).service, name, body, context(request))


routes = [
    Route("/v1/rerank", rerank, methods=["POST"]),
    Route("/v2/rerank", rerank, methods=["POST"]),  # vLLM's Cohere v2 path: the same answer
    Route("/score", score, methods=["POST"]),
    Route("/v1/score", score, methods=["POST"]),
    Route("/rerank", tei_rerank, methods=["POST"]),
    Route("/predict", predict, methods=["POST"]),
]

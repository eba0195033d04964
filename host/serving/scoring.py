"""Scoring serving: rerank (vLLM/Cohere/Jina's ``/v1/rerank``, TEI's ``/rerank``) and TEI's
``/predict``, over the ``text_classification`` task.

A rerank is one call to the model's batcher: every (query, document) pair of the request is
one input ``{"text": query, "text_pair": document}`` (the tokenizer's pair encoding, as a
cross-encoder was trained), scored by the one-label head: the logit's sigmoid, or the logit
itself with ``raw``. A model whose head has more labels is refused (400): it classifies, it
does not rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from hfskills.skillset.runtime.errors import UnsupportedTask

from ..errors import APIError
from ..inference import InferenceService, Outcome
from ..protocol import openai as oa
from ..protocol import scoring as sc
from ..scheduler import RequestContext
from .common import FastJSONResponse, client_words

TASK = "text_classification"
#: A rerank names what its client sent: the documents (vLLM) or the texts (TEI).
RERANK_WORDS = {"inputs": "documents"}
TEI_RERANK_WORDS = {"inputs": "texts"}


@dataclass(frozen=True)
class Scored:
    """Each document's score, in document order, and the call's outcome (usage, model)."""

    scores: list[float]
    outcome: Outcome


async def score_pairs(
    service: InferenceService,
    name: str,
    query: str,
    documents: list[str],
    ctx: RequestContext,
    *,
    raw: bool = False,
    truncate: bool = True,
    words: dict[str, str] | None = None,
) -> Scored:
    """Every (query, document) pair through the cross-encoder ``name`` in one call."""
    field = (words or RERANK_WORDS)["inputs"]
    if len(documents) > service.max_inputs:
        raise APIError(
            413,
            f"at most {service.max_inputs} {field} per request (max_batch_inputs)",
            param=field,
        )
    inputs = [{"text": query, "text_pair": document} for document in documents]
    params: dict[str, Any] = {"function_to_apply": "none" if raw else "sigmoid"}
    params["truncate"] = truncate
    try:
        with client_words(words or RERANK_WORDS):
            outcome = await service.run(name, TASK, inputs, params, ctx)
    except UnsupportedTask as exc:
        exc.message += "; rerank needs a cross-encoder: a text_classification model with one label"
        raise
    labels = len(outcome.results[0]) if outcome.results else 1
    if labels != 1:
        raise APIError(
            400,
            f"model {name!r} is not a cross-encoder (reranker): its classification head has "
            f"{labels} labels, a reranker's has one; use /predict or /v1/classify to classify",
            code="not_a_reranker",
            param="model",
        )
    return Scored([float(result[0]["score"]) for result in outcome.results], outcome)


def ranked(scores: list[float], top_n: int | None = None) -> list[int]:
    """Document indices, best first (ties keep document order); ``top_n`` (0: all) kept."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[:top_n] if top_n else order


async def rerank(
    service: InferenceService, name: str, body: sc.RerankRequest, ctx: RequestContext
) -> sc.RerankResponse:
    """``/v1/rerank``: results sorted by relevance, with usage (the pairs' real tokens)."""
    documents = body.texts()
    raw = body.use_activation is False
    scored = await score_pairs(service, name, body.query, documents, ctx, raw=raw)
    results = [
        sc.RerankResult(
            index=i,
            relevance_score=scored.scores[i],
            document=sc.RerankDocument(text=documents[i]) if body.return_documents else None,
        )
        for i in ranked(scored.scores, body.top_n)
    ]
    tokens = scored.outcome.prompt_tokens
    return sc.RerankResponse(
        id=oa.new_id("rerank"),
        model=scored.outcome.model_name(name),
        usage=sc.RerankUsage(prompt_tokens=tokens, total_tokens=tokens),
        results=results,
    )


async def tei_rerank(
    service: InferenceService, name: str, body: sc.TEIRerankRequest, ctx: RequestContext
) -> Response:
    """TEI's ``/rerank``: ``[{index, score, text?}]``, best first."""
    scored = await score_pairs(
        service,
        name,
        body.query,
        body.texts,
        ctx,
        raw=body.raw_scores,
        truncate=body.truncate,
        words=TEI_RERANK_WORDS,
    )
    ranks = [
        sc.Rank(
            index=i, score=scored.scores[i], text=body.texts[i] if body.return_text else None
        ).model_dump(exclude_none=True)
        for i in ranked(scored.scores)
    ]
    return FastJSONResponse(ranks)


async def predict(
    service: InferenceService, name: str, body: sc.PredictRequest, ctx: RequestContext
) -> Response:
    """TEI's ``/predict``: ``[{label, score}]`` sorted, or one such list per sequence."""
    inputs, single = body.sequences()
    params: dict[str, Any] = {"truncate": body.truncate}
    if body.raw_scores:
        params["function_to_apply"] = "none"
    outcome = await service.run(name, TASK, inputs, params, ctx)
    return FastJSONResponse(outcome.results[0] if single else outcome.results)

"""Scoring serving: rerank (vLLM/Cohere/Jina's ``/v1/rerank`` and ``/v2/rerank``, TEI's
``/rerank``), vLLM's ``/score``, and TEI's ``/predict``.

A model scores pairs one of two ways, chosen by what it serves:

- a cross-encoder (``text_classification``): one call to the model's batcher, every pair one
  input ``{"text": first, "text_pair": second}`` (the tokenizer's pair encoding, as a
  cross-encoder was trained), scored by the one-label head: the logit's sigmoid, or the logit
  itself with ``raw``. A model whose head has more labels is refused (400): it classifies, it
  does not rank.
- an embedding model (``text_embedding`` and no ``text_classification``; a route whose targets
  all are): one call that embeds the request's distinct texts through the same serving path as
  ``/v1/embeddings`` (one batcher call, the same vectors), each pair scored by the cosine
  similarity of its two vectors, as vLLM and Infinity score bi-encoders. One call, not one per
  chunk, so that one model (a route's one choice) embeds every text of a request: the
  distinct texts must fit ``max_batch_inputs``.

A model serving neither is the same 400 as before (``unsupported_task``, ``param: model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.responses import Response

from hfskills.skillset.runtime.errors import UnsupportedTask

from ..errors import APIError
from ..inference import InferenceService, Outcome
from ..protocol import openai as oa
from ..protocol import scoring as sc
from ..scheduler import RequestContext
from .common import FastJSONResponse, client_words

TASK = "text_classification"
EMBEDDING = "text_embedding"
#: A rerank names what its client sent: the documents (vLLM) or the texts (TEI); a score, the
#: texts scored against text_1.
RERANK_WORDS = {"inputs": "documents"}
TEI_RERANK_WORDS = {"inputs": "texts"}
SCORE_WORDS = {"inputs": "text_2"}


@dataclass(frozen=True)
class Scored:
    """Each pair's score, in pair order, and the call's outcome (usage, model)."""

    scores: list[float]
    outcome: Outcome


async def score_pairs(
    service: InferenceService,
    name: str,
    firsts: list[str],
    seconds: list[str],
    ctx: RequestContext,
    *,
    raw: bool = False,
    truncate: bool = True,
    words: dict[str, str] | None = None,
) -> Scored:
    """Every pair (``firsts[i]``, ``seconds[i]``) through ``name`` in one call: a cross-encoder
    rates each pair, an embedding model the cosine similarity of its two texts."""
    words = words or RERANK_WORDS
    field = words["inputs"]
    if len(seconds) > service.max_inputs:
        raise APIError(
            413,
            f"at most {service.max_inputs} {field} per request (max_batch_inputs)",
            param=field,
        )
    with client_words(words):
        if embeds(service, name):
            return await _cosines(service, name, firsts, seconds, ctx, truncate, field)
        try:
            return await _cross_encoded(service, name, firsts, seconds, ctx, raw, truncate)
        except UnsupportedTask as exc:
            if embeds(service, name):  # an on-demand checkpoint: known once it was admitted
                return await _cosines(service, name, firsts, seconds, ctx, truncate, field)
            exc.message += (
                "; scoring needs a cross-encoder (a text_classification model with one label) "
                "or an embedding model (text_embedding)"
            )
            raise


def embeds(service: InferenceService, name: str) -> bool:
    """Whether ``name`` scores by embeddings: a model serving ``text_embedding`` and no
    cross-encoder task, or a route whose targets and fallbacks all are."""
    catalog = service.loader.catalog
    model = catalog.get(name)
    plan = service.router.get(name) if model is None and service.router is not None else None
    names = [*plan.targets, *plan.fallbacks] if plan is not None else [name]
    models = [catalog.get(n) for n in names]
    return bool(models) and all(
        m is not None and TASK not in m.tasks and EMBEDDING in m.tasks for m in models
    )


async def _cross_encoded(
    service: InferenceService,
    name: str,
    firsts: list[str],
    seconds: list[str],
    ctx: RequestContext,
    raw: bool,
    truncate: bool,
) -> Scored:
    inputs = [{"text": a, "text_pair": b} for a, b in zip(firsts, seconds, strict=True)]
    params: dict[str, Any] = {"function_to_apply": "none" if raw else "sigmoid"}
    params["truncate"] = truncate
    outcome = await service.run(name, TASK, inputs, params, ctx)
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


async def _cosines(
    service: InferenceService,
    name: str,
    firsts: list[str],
    seconds: list[str],
    ctx: RequestContext,
    truncate: bool,
    field: str,
) -> Scored:
    texts = list(dict.fromkeys([*firsts, *seconds]))  # each distinct text embedded once
    if len(texts) > service.max_inputs:
        raise APIError(
            413,
            f"at most {service.max_inputs} distinct texts (queries and {field}) per request "
            "on an embedding model (max_batch_inputs)",
            param=field,
        )
    # /v1/embeddings' own parameters (none: the handler truncates by default), so the vectors,
    # the response cache's keys and a remote model's body are the embeddings route's; TEI's
    # truncate=false the one difference
    params: dict[str, Any] = {} if truncate else {"truncate": False}
    outcome = await service.run(name, EMBEDDING, texts, params, ctx)
    vectors = np.asarray(outcome.results, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0.0, 1.0, norms)  # a zero vector scores 0, not NaN
    row = {text: i for i, text in enumerate(texts)}
    scores = [float(unit[row[a]] @ unit[row[b]]) for a, b in zip(firsts, seconds, strict=True)]
    return Scored(scores, outcome)


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
    queries = [body.query] * len(documents)
    scored = await score_pairs(service, name, queries, documents, ctx, raw=raw)
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
        [body.query] * len(body.texts),
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


async def score(
    service: InferenceService, name: str, body: sc.ScoreRequest, ctx: RequestContext
) -> sc.ScoreResponse:
    """vLLM's ``/score``: one score per pair, in pair order, with usage."""
    try:
        firsts, seconds = body.pairs()
    except ValueError as exc:
        raise APIError(400, str(exc), param="text_2") from None
    raw = body.use_activation is False
    scored = await score_pairs(service, name, firsts, seconds, ctx, raw=raw, words=SCORE_WORDS)
    return sc.ScoreResponse(
        id=oa.new_id("score"),
        created=oa.now(),
        model=scored.outcome.model_name(name),
        data=[sc.ScoreData(index=i, score=value) for i, value in enumerate(scored.scores)],
        usage=oa.Usage.of(scored.outcome.prompt_tokens, 0),
    )


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

